"""Estimate an upper bound eps on the digit oracle's error rate from held-out real digits.

    python scripts/oracle_error.py [--alpha 0.001] [--cache-dir outputs/cache]

Prints the per-class false-negative bounds (eps, their maximum, also bounds every rate at which outputs of
other classes are read as class c, under any class mix: smoothgen_exp/oracles/error.py) with the
false-positive counts, and the override to pass on, e.g.
`python -m smoothgen_exp certifier.oracle_error=0.05 certifier.oracle_error_alpha=0.001`; writes outputs/oracle_error.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import torch

from smoothgen_exp.cli import script_parser
from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.oracles.digits import DigitClassifier
from smoothgen_exp.oracles.error import oracle_error_bound


def main(argv: list[str] | None = None) -> dict:
    p = script_parser(__doc__)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--cache-dir", default="outputs/cache")
    p.add_argument("--out", default="outputs/oracle_error.json")
    args = p.parse_args(argv)
    import smoothgen_exp.training  # noqa: F401  (trains the oracle on first use)

    oracle = DigitClassifier(cache_dir=args.cache_dir)
    x, y = digit_images("heldout")
    with torch.inference_mode():
        pred = oracle.classify(torch.from_numpy(x)).numpy()
    result = oracle_error_bound(pred, y, oracle.num_classes, args.alpha)
    table = pd.DataFrame(result["per_class"])          # counts as integers, rates to four places
    print(table.to_markdown(index=False, floatfmt=[".0f" if pd.api.types.is_integer_dtype(t) else ".4f"
                                                   for t in table.dtypes]))
    print(f"held-out accuracy {result['accuracy']:.4f} on {result['n']} real digits; simultaneous "
          f"{1 - args.alpha:.3%} upper bound on every false-negative rate, so on every rate at which other "
          f"classes are read as one class, in any mix: eps = {result['eps']:.4f}")
    # eps bounds the false-positive rate into c_A under any class mix, the premise of the sound `bounded`
    # model only (not the symmetric one's: both rates equal to eps); printed
    # rounded *up*, since a rounded-down eps would understate the bound
    eps_up = math.ceil(result["eps"] * 1e4) / 1e4
    print(f"use: python -m smoothgen_exp certifier.oracle_error={eps_up:.4f} "
          f"certifier.oracle_error_alpha={args.alpha:g} certifier.oracle_error_model=bounded")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
