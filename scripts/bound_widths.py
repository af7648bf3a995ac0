"""Average width (sample mean - lower bound) of the [0, 1]-mean lower bounds the feature and decoding
certifiers offer: betting (Waudby-Smith & Ramdas 2023, the default), Hoeffding, and empirical Bernstein
(Maurer & Pontil 2009), with the exact Clopper-Pearson bound as a Bernoulli-only reference.

    python scripts/bound_widths.py [--alpha 0.001] [--reps 2000] [--n 30 100 1000] [--p 0.6 0.95]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smoothgen_exp.cli import script_parser
from smoothgen_exp.stats import betting_lower, cp_lower, empirical_bernstein_lower, hoeffding_lower


def widths(ns=(30, 100, 1000), ps=(0.6, 0.95), alpha: float = 0.001, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean of (sample mean - lower bound) over `reps` Bernoulli(p) samples of each size n."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in ps:
        for n in ns:
            x = (rng.random((n, reps)) < p).astype(float)
            mean, var = x.mean(0), x.var(0, ddof=1)
            hoeffding = np.array([hoeffding_lower(m, n, alpha) for m in mean])
            bernstein = np.array([empirical_bernstein_lower(m, v, n, alpha) for m, v in zip(mean, var, strict=True)])
            rows.append({"p": p, "n": n, "betting": float(np.mean(mean - betting_lower(x, alpha))),
                         "hoeffding": float(np.mean(mean - hoeffding)),
                         "empirical_bernstein": float(np.mean(mean - bernstein)),
                         "clopper_pearson (Bernoulli only)": float(np.mean(mean - cp_lower(x.sum(0).astype(int), n,
                                                                                              alpha)))})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    a = script_parser(__doc__)
    a.add_argument("--alpha", type=float, default=0.001)
    a.add_argument("--reps", type=int, default=2000)
    a.add_argument("--n", type=int, nargs="+", default=[30, 100, 1000])
    a.add_argument("--p", type=float, nargs="+", default=[0.6, 0.95])
    a.add_argument("--seed", type=int, default=0)
    args = a.parse_args(argv)
    table = widths(args.n, args.p, args.alpha, args.reps, args.seed)
    print(f"mean width (sample mean - lower bound), alpha = {args.alpha:g}, {args.reps} samples per cell")
    print(table.to_markdown(index=False, floatfmt=(".2f", ".0f", ".4f", ".4f", ".4f", ".4f")))
    return table


if __name__ == "__main__":
    main()
