"""Paper-style tables from run directories: value ± stderr, grouped by the swept keys.

    python scripts/make_table.py outputs/sweeps/attacks --name attacks \
        --metrics attack_success_rate_baseline attack_success_rate_smoothed certified_accuracy/0.1

Reads every run under the given paths (a run dir, a sweep dir, or several), groups rows by the keys
that were swept (from each run's recorded overrides; `--by` to choose), and writes markdown, LaTeX and
CSV to `<out>/<name>.{md,tex,csv}`. Fraction-like metrics (accuracies, rates) carry the binomial
standard error over items; arrows say whether higher (↑) or lower (↓) is better. Every paper-style
table of the project goes through this script (or its functions in smoothgen_exp.tables).
"""

from __future__ import annotations

import sys
from difflib import get_close_matches
from pathlib import Path

from smoothgen_exp.cli import script_parser
from smoothgen_exp.tables import formatted, load_summaries, require_runs, results_table, write_table

DEFAULT_METRICS = ["certified_accuracy/0", "certified_accuracy/0.1", "certified_accuracy/0.25", "abstain_rate",
                   "mean_radius", "seconds_per_item"]


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("paths", nargs="+")
    p.add_argument("--metrics", nargs="*", default=None, help="summary keys (nested keys joined by '/')")
    p.add_argument("--by", nargs="*", default=None, help="grouping keys (default: the swept keys)")
    p.add_argument("--name", default="results")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--caption", default="")
    args = p.parse_args(argv)
    run_dirs = require_runs(*args.paths)
    available = set(load_summaries(run_dirs).columns)
    known = [m for m in (args.metrics or DEFAULT_METRICS) if m in available or f"nominal_{m}" in available]
    missing = sorted(set(args.metrics or []) - set(known))
    if missing:                         # a key asked for by name that no run has: say so (a typo wrote no column)
        hints = [f"{m} (did you mean {close[0]}?)" if (close := get_close_matches(m, available, n=1)) else m
                 for m in missing]
        sys.exit(f"error: no run under {', '.join(args.paths)} has --metrics {', '.join(hints)}")
    metrics = known
    table = results_table(run_dirs, metrics, args.by)
    pretty = formatted(table, metrics)
    caption = args.caption or f"{len(run_dirs)} runs from {', '.join(args.paths)}; ± = binomial stderr over items"
    paths = write_table(pretty, Path(args.out) / args.name, caption)
    raw = Path(args.out) / f"{args.name}.raw.csv"           # unformatted numbers, for further analysis
    table.to_csv(raw, index=False)
    print(pretty.to_markdown(index=False))
    print("wrote " + ", ".join(map(str, [*paths, raw])))
    return table


if __name__ == "__main__":
    main()
