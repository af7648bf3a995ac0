"""Figures from any set of runs: certified accuracy against radius, radius against n, time against n.

    python scripts/plot.py outputs/sweeps/<sweep> [--out outputs/tables] [--name NAME]

One curve per run in the first figure, labelled by its swept keys (sigma, n, ...). Rows whose
certificate is invalid (`certificate_valid=false`) are drawn dashed and labelled NOMINAL: they are not
certified accuracy. The n-figures put certifier.n on the x axis and draw one line per value of the other
swept keys (their metrics fall back to the `nominal_*` keys, labelled so). Writes
<name>_certified_accuracy.png, <name>_radius_vs_n.png and <name>_time_vs_n.png.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from smoothgen_exp.cli import script_parser  # noqa: E402
from smoothgen_exp.tables import (  # noqa: E402
    NOMINAL_TAG,
    by_validity,
    certified_and_correct,
    load_records,
    load_summaries,
    require_runs,
    results_table,
    swept_keys,
)


def named(pairs) -> str:
    """"key=value, ..." for a legend, leaving out keys a run does not set (a run outside any experiment
    had "experiment=" beside one inside it)."""
    return ", ".join(f"{k}={v}" for k, v in pairs if v not in ("", None) and not (isinstance(v, float) and v != v))


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("paths", nargs="+")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--name", default="runs")
    args = p.parse_args(argv)
    run_dirs = require_runs(*args.paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(run_dirs)
    labels = {}
    if keys:
        table = results_table(run_dirs, [], by=keys)
        labels = {r.run_dir: named((k, r[k]) for k in keys) for _, r in table.astype(object).iterrows()}
    rows = load_records(run_dirs)
    sm = rows[rows.variant == "smoothed"]

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    radii = np.linspace(0, max(float(sm.radius.astype(float).max()), 1e-6) * 1.05, 120)
    for d in run_dirs:
        for g, nominal in by_validity(sm[sm.run_dir == str(d)]):
            r = g.radius.astype(float).where(g.certified.astype(bool), 0.0)
            good = certified_and_correct(g)
            label = labels.get(str(d), d.name) + (NOMINAL_TAG if nominal else "")
            ax.plot(radii, [(good & (r >= x)).mean() for x in radii], "--" if nominal else "-", label=label)
    ax.set(xlabel="radius", ylabel="certified accuracy", title="Certified accuracy vs radius")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / f"{args.name}_certified_accuracy.png", dpi=130)

    summaries = load_summaries(run_dirs)
    if "n" in summaries and summaries.n.nunique() > 1:
        others = [k for k in keys if k != "certifier.n"]
        table = results_table(run_dirs, ["mean_radius", "average_certified_radius", "seconds_per_item"], by=keys)
        table = table.merge(summaries[["run_dir", "n"]], on="run_dir")
        for metric, name, ylabel in (("average_certified_radius", "radius_vs_n", "average certified radius"),
                                     ("seconds_per_item", "time_vs_n", "seconds per item")):
            fig, ax = plt.subplots(figsize=(5, 3.6))
            groups = table.groupby(others) if others else [((), table)]
            for i, (key, g) in enumerate(groups):
                g = g.sort_values("n")
                label = named(zip(others, key, strict=True)) or "runs"
                nominal = bool(g.get(f"{metric} nominal", pd.Series(False)).any())
                # own marker, shrinking line by line: equal curves (every item abstaining: 0) stay visible
                ax.plot(g.n, g[metric], "--" if nominal else "-", marker="osD^v<>p"[i % 8], ms=max(3.0, 8.0 - 1.5 * i),
                        lw=max(1.0, 2.5 - 0.5 * i), label=label + (NOMINAL_TAG if nominal else ""))
            ax.set(xscale="log", xlabel="n", ylabel=ylabel, title=f"{ylabel} vs n")
            if metric == "seconds_per_item":
                ax.set_yscale("log")
            ax.legend(fontsize=6)
            fig.tight_layout()
            fig.savefig(out / f"{args.name}_{name}.png", dpi=130)
    plt.close("all")
    print(f"wrote {out}/{args.name}_*.png")


if __name__ == "__main__":
    main()
