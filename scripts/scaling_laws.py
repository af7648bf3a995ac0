"""Figures 3-7 and tables of the RS-for-VLM paper's section 5, from an `experiment=scaling_laws` sweep.

    python scripts/scaling_laws.py [SWEEP_DIR] [--out outputs/tables]

Reads every run under SWEEP_DIR (one per n), with N = the largest n as the reference, and writes:
- scaling_ratio.png        (Fig. 3/4) average radius at n over that at N, with Cor. 5.4's prediction
- scaling_certified_accuracy.png (Fig. 5) certified accuracy against radius, one curve per n
- scaling_accuracy_drop.png     (Fig. 6) certified-accuracy drop against the z/sqrt(n) bound of Thm 5.5.
  The bound concerns items lost to abstention (p_A within ~z/(2 sqrt(n)) of 1/2), i.e. the drop in
  certified accuracy at radius 0; the largest drop over all radii is drawn too, for context: where the
  accuracy curve is steep a small horizontal (radius) shift is a large vertical one, and no z/sqrt(n)
  bound applies to it.
- scaling_time.png         (Fig. 7) certification time per item against n
- scaling_laws.{md,tex,csv} the numbers behind them
The average radius (`avg_radius`) is that of the certified class, right or wrong, with abstentions at 0:
the radius ratio of Cor. 5.4 concerns the radius alone; `average_certified_radius` beside it is the
usual ACR, which counts a wrong class as 0 too. Predictions are marked out of range where n < (1.64 z)^2
or n < 30, where the CLT-based forms do not apply.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from smoothgen_exp.cli import script_parser  # noqa: E402
from smoothgen_exp.stats import accuracy_drop_bound, scaling_in_range, scaling_ratio  # noqa: E402
from smoothgen_exp.tables import (  # noqa: E402
    NOMINAL_TAG,
    by_validity,
    certified_and_correct,
    load_records,
    require_runs,
    write_table,
)


def per_n(rows: pd.DataFrame, radii: np.ndarray) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Per n: average radius, per-item radii and the certified-accuracy curve on `radii`."""
    sm = rows[rows.variant == "smoothed"].copy()
    sm["r"] = sm.radius.astype(float).where(sm.certified.astype(bool), 0.0)
    sm["good"] = certified_and_correct(sm)
    curves, stats = {}, []
    for n, g in sm.groupby("n"):
        curves[int(n)] = np.array([(g.good & (g.r >= r)).mean() for r in radii])
        # avg_radius: the certified class's radius, right or wrong (Cor. 5.4 concerns the radius alone);
        # average_certified_radius: the usual ACR, 0 where the certified class is wrong
        stats.append({"n": int(n), "items": g.item_id.nunique(), "avg_radius": g.r.mean(),
                      "average_certified_radius": g.r.where(g.good, 0.0).mean(),
                      "certified_accuracy_r0": (g.good & (g.r > 0)).mean(),
                      "time_certify_s": g.time_certify_s.astype(float).mean(),
                      "alpha": float(g.alpha.iloc[0]), "sigma": float(g.sigma.iloc[0])})
    return pd.DataFrame(stats).sort_values("n").reset_index(drop=True), curves


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = script_parser(__doc__)
    p.add_argument("sweep", nargs="?", default="outputs/sweeps/scaling_laws")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--prefix", default="scaling")
    args = p.parse_args(argv)

    run_dirs = require_runs(args.sweep, hint="run `make table-scaling` first")
    rows = load_records(run_dirs)
    rows, nominal = by_validity(rows)[0]      # certified curves from valid certificates only
    tag = NOMINAL_TAG if nominal else ""
    sigma = float(rows.sigma.iloc[0])
    radii = np.linspace(0, 3.5 * sigma, 71)
    table, curves = per_n(rows, radii)
    n_ref = int(table.n.max())
    alpha = float(table.alpha.iloc[0])
    ref = table.set_index("n").loc[n_ref]

    # per-item ratios, over items certified at the reference n
    sm = rows[rows.variant == "smoothed"]
    r_item = sm.pivot_table(index="item_id", columns="n", values="radius", aggfunc="first").astype(float)
    r_item = r_item[r_item[n_ref] > 0]
    table["ratio_measured"] = table.avg_radius / ref.avg_radius
    table["ratio_mean_of_items"] = [float((r_item[n] / r_item[n_ref]).mean()) for n in table.n]
    table["prediction_in_range"] = scaling_in_range(table.n.to_numpy(), alpha)
    # out of Cor. 5.4's range the formula is clipped to 0, which is no prediction: NaN (new-user review)
    table["ratio_predicted"] = np.where(table.prediction_in_range, scaling_ratio(table.n.to_numpy(), n_ref, alpha), np.nan)
    table["accuracy_drop_r0"] = ref.certified_accuracy_r0 - table.certified_accuracy_r0
    table["accuracy_drop_max_over_radii"] = [float(np.max(curves[n_ref] - curves[n])) for n in table.n]
    table["accuracy_drop_bound"] = accuracy_drop_bound(table.n.to_numpy(), alpha)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["n", "items", "avg_radius", "average_certified_radius", "ratio_measured", "ratio_predicted", "prediction_in_range",
            "ratio_mean_of_items", "certified_accuracy_r0", "accuracy_drop_r0", "accuracy_drop_bound",
            "accuracy_drop_max_over_radii",
            "time_certify_s"]
    model = ", ".join(sorted(rows.model.astype(str).unique())) if "model" in rows else "?"
    caption = (f"Scaling laws on model={model} (sigma={sigma:g}, alpha={alpha:g}, reference N={n_ref}). "
               "avg_radius = mean radius of the certified class, right or wrong (abstain = 0), which Cor. 5.4 "
               "concerns; average_certified_radius counts a wrong class as 0 too; "
               "ratio ↑ = avg_radius at n / at N; predicted = Cor. 5.4 (nan below its range, n < (1.64 z)^2); "
               "accuracy drop ↓ = certified accuracy at radius 0, N minus n; bound = z/sqrt(n) (Thm 5.5); "
               "the max drop over all radii is shown for context and is not covered by the bound."
               + (" NOMINAL: these rows' certificates are invalid (certificate_valid=false)." if nominal else ""))
    write_table(table[cols], out / f"{args.prefix}_laws", caption)

    ns = table.n.to_numpy()
    grid = np.geomspace(max(30, ns.min()), n_ref, 200)
    ok = scaling_in_range(grid, alpha)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ns, table.ratio_measured, "o-", label="measured (ratio of averages)")
    ax.plot(ns, table.ratio_mean_of_items, "s--", ms=4, label="measured (mean of per-item ratios)")
    ax.plot(grid[ok], scaling_ratio(grid[ok], n_ref, alpha), "k-", lw=1, label="Cor. 5.4 prediction")
    ax.set(xscale="log", xlabel="n (estimation samples)", ylabel=f"radius ratio to n={n_ref}",
           title="Fig. 3/4: radius ratio vs n", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{args.prefix}_ratio.png", dpi=130)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for n in ns:
        ax.plot(radii, curves[n], label=f"n={n}")
    ax.set(xlabel="radius (L2 in prompt-embedding space)", ylabel="certified accuracy" + tag,
           title="Fig. 5: certified accuracy vs radius" + tag)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{args.prefix}_certified_accuracy.png", dpi=130)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ns, table.accuracy_drop_r0, "o-", label=f"measured drop at radius 0 (vs n={n_ref})")
    ax.plot(ns, table.accuracy_drop_bound, "k--", label="z / sqrt(n) (Thm 5.5)")
    ax.plot(ns, table.accuracy_drop_max_over_radii, "x:", color="gray", label="max drop over radii (context)")
    ax.set(xscale="log", xlabel="n", ylabel="certified-accuracy drop",
           title="Fig. 6: certified-accuracy drop vs n")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{args.prefix}_accuracy_drop.png", dpi=130)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ns, table.time_certify_s, "o-")
    ax.set(xscale="log", yscale="log", xlabel="n", ylabel="seconds per item (certify)",
           title="Fig. 7: certification time vs n")
    fig.tight_layout()
    fig.savefig(out / f"{args.prefix}_time.png", dpi=130)
    plt.close("all")
    print(table[cols].to_markdown(index=False, floatfmt=".3g"))
    print(f"wrote {out}/{args.prefix}_*.png and {args.prefix}_laws.{{md,tex,csv}}")
    return table


if __name__ == "__main__":
    main()
