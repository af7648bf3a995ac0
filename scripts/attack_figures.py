"""Attack success against eps, baseline vs smoothed, with the certified-accuracy curve on the same axes.

    python scripts/attack_figures.py [SWEEP_DIR] [--out outputs/tables] [--name attacks] [--radius 0.1]

From an `experiment=attacks` sweep: writes attacks.{md,tex,csv} (success rates ± binomial stderr per
attack, norm and eps, violations, output shift, W2) and attacks.png. On the plot, the dotted line
"1 - certified fraction" is the ceiling the certificates put on the rate at which an L2 attack moves the
smoothed class to another class: a certified item keeps its class within its radius (up to probability
alpha). Success also counts an abstention of the smoothed PREDICT at the attacked point, which a
certificate does not exclude (PREDICT abstains near ties), so the success curve may cross it. Both come
from rows with a valid certificate only; when the sweep's certificates are invalid (adaptive noise,
the symmetric oracle-error model) the curves are drawn from them, dashed and labelled NOMINAL.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from smoothgen_exp.cli import script_parser  # noqa: E402
from smoothgen_exp.tables import (  # noqa: E402
    NOMINAL_TAG,
    by_validity,
    certified_and_correct,
    formatted,
    load_records,
    require_runs,
    results_table,
    write_table,
)

METRICS = ["attack_success_rate_baseline", "attack_success_rate_smoothed", "attack_class_changed_smoothed",
           "certificate_violations", "attack_within_radius", "attack_output_shift_baseline",
           "attack_output_shift_smoothed", "attack_w2_baseline", "attack_w2_smoothed"]


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("sweep", nargs="?", default="outputs/sweeps/attacks")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--name", default="attacks")
    p.add_argument("--radius", default="0.1", help="the summary radius whose certified accuracy the table shows")
    args = p.parse_args(argv)
    run_dirs = require_runs(args.sweep, hint="run `make table-attacks` first")
    out = Path(args.out)
    metrics = METRICS + [f"certified_accuracy/{args.radius}"]
    table = results_table(run_dirs, metrics, by=["attack._target_", "attack.norm", "attack.eps"])
    table["attack._target_"] = table["attack._target_"].str.rsplit(".", n=1).str[-1]
    table = table.rename(columns={"attack._target_": "attack"})
    write_table(formatted(table, metrics), out / args.name,
                "Attack success rate (↓ for the defender) against eps, baseline vs smoothed; ± = binomial stderr.")

    rows = load_records(run_dirs)
    sm = rows[rows.variant == "smoothed"]
    first, nominal = by_validity(sm[sm.run_dir == sm.run_dir.iloc[0]])[0]
    radius = first.radius.astype(float).where(first.certified.astype(bool), 0.0)
    good = certified_and_correct(first)
    grid = np.linspace(0, rows.attack_eps.astype(float).max() * 1.05, 100)
    tag, style = (NOMINAL_TAG, "--") if nominal else ("", "-")

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, ((name, norm), g) in enumerate(rows.groupby(["attack", "attack_norm"])):
        rates = g.groupby(["attack_eps", "variant"]).attack_success.mean().unstack()
        color, name = f"C{i}", f"{name} ({norm})"
        # baseline dash-dotted with large hollow markers, smoothed solid with small filled ones: equal rates
        # stay visible (dashes are kept for NOMINAL curves, as in the other figures)
        ax.plot(rates.index, rates["baseline"], "-.o", color=color, ms=7, mfc="none", label=f"{name}: baseline")
        ax.plot(rates.index, rates["smoothed"], "-s", color=color, ms=3, label=f"{name}: smoothed")
    ax.plot(grid, [(good & (radius >= e)).mean() for e in grid], "k" + style, lw=2, label="certified accuracy" + tag)
    ax.plot(grid, [1 - (radius >= e).mean() for e in grid], "k:", label="1 - certified fraction (ceiling)" + tag)
    ax.set(xlabel="eps in the noised space (each attack's norm; the certified curves are L2 radii)", ylabel="rate",
           ylim=(-0.02, 1.02),
           title="Attack success vs eps")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)   # beside the curves
    fig.tight_layout()
    fig.savefig(out / f"{args.name}.png", dpi=130)
    print(formatted(table, metrics).to_markdown(index=False))
    print(f"wrote {out / args.name}.{{md,tex,csv,png}}")


if __name__ == "__main__":
    main()
