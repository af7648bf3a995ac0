"""What smoothing costs: quality retention and certified accuracy across sigma x n, and time against n.

    python scripts/quality_figures.py [SWEEP_DIR] [--out outputs/tables]

From an `experiment=smoothgen_quality` sweep: writes quality.{md,tex,csv} and quality_overhead.png
(seconds per item against n, one line per sigma, with the baseline generator's time for reference).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from smoothgen_exp.cli import script_parser  # noqa: E402
from smoothgen_exp.tables import formatted, require_runs, results_table, write_table  # noqa: E402

# *_noisy: one unfiltered noisy generation (under aggregator=majority the smoothed outputs are the voted class's)
METRICS = ["retention_fid", "retention_digit_prob", "retention_digit_prob_noisy", "metric_fid_baseline",
           "metric_fid_smoothed", "metric_fid_noisy", "metric_digit_prob_smoothed", "metric_digit_prob_noisy",
           "certified_accuracy/0", "certified_accuracy/0.1",
           "certified_accuracy/0.25", "seconds_per_item", "time_baseline_s"]


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("sweep", nargs="?", default="outputs/sweeps/smoothgen_quality")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--name", default="quality")
    args = p.parse_args(argv)
    run_dirs = require_runs(args.sweep, hint="run `make table-quality` first")
    out = Path(args.out)
    table = results_table(run_dirs, METRICS, by=["smoothing.sigma", "certifier.n"])
    write_table(formatted(table, METRICS), out / args.name,
                "Quality retention (smoothed / baseline; FID inverted) and certified accuracy across sigma x n.")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for sigma, g in table.groupby("smoothing.sigma"):
        ax.plot(g["certifier.n"], g["seconds_per_item"], "o-", label=f"smoothed, sigma={sigma}")
    ax.plot(table["certifier.n"], table["time_baseline_s"], "k--", label="baseline generator")
    ax.set(xscale="log", yscale="log", xlabel="n", ylabel="seconds per item",
           title="Overhead of smoothing vs n")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{args.name}_overhead.png", dpi=130)
    print(formatted(table, METRICS).to_markdown(index=False))
    print(f"wrote {out / args.name}.{{md,tex,csv}} and {args.name}_overhead.png")


if __name__ == "__main__":
    main()
