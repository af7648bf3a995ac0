"""What smoothing costs a language model's answers: text quality and certified accuracy against sigma.

    python scripts/llm_quality.py [SWEEP_DIR] [--out outputs/tables] [--name llm_quality]

From an `experiment=llm_quality` sweep (metrics=text): writes llm_quality.{md,tex,csv} (MiniLM
similarity, ROUGE-L and BLEU of the smoothed answer against the canonical answer and the baseline
answer, retention = smoothed / baseline against the canonical answer, certified accuracy) and
llm_quality.png (the same against sigma: the robustness-quality trade-off).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from smoothgen_exp.cli import script_parser  # noqa: E402
from smoothgen_exp.tables import formatted, require_runs, results_table, swept_keys, write_table  # noqa: E402

METRICS = ["metric_minilm_similarity_baseline_vs_answer", "metric_minilm_similarity_smoothed_vs_answer",
           "retention_minilm_similarity", "metric_rougeL_baseline_vs_answer", "metric_rougeL_smoothed_vs_answer",
           "retention_rougeL", "metric_rougeL_smoothed_vs_baseline", "metric_bleu_smoothed_vs_baseline",
           "smoothed_accuracy", "certified_accuracy/0", "certified_accuracy/0.05", "seconds_per_item"]


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("sweep", nargs="?", default="outputs/sweeps/llm_quality")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--name", default="llm_quality")
    args = p.parse_args(argv)
    run_dirs = require_runs(args.sweep, hint="run `make table-llm` first")
    out = Path(args.out)
    # sigma first, then any other swept key (an attack sweep's attack.eps), so that no two rows look alike
    by = ["smoothing.sigma", *(k for k in swept_keys(run_dirs) if k != "smoothing.sigma")]
    table = results_table(run_dirs, METRICS, by=by)
    write_table(formatted(table, METRICS), out / args.name,
                "Answer quality of the smoothed model against sigma: similarity to the canonical answer "
                "(baseline and smoothed), retention = smoothed / baseline, agreement with the baseline answer, "
                "and certified accuracy.")
    plotted = table.drop_duplicates("smoothing.sigma")     # one run per sigma (the others only vary the attack)
    sigma = plotted["smoothing.sigma"].astype(float)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(sigma, plotted["metric_minilm_similarity_baseline_vs_answer"], "k--o", mfc="none",
            label="baseline: MiniLM sim. to answer")
    ax.plot(sigma, plotted["metric_minilm_similarity_smoothed_vs_answer"], "o-", label="smoothed: MiniLM sim. to answer")
    ax.plot(sigma, plotted["metric_rougeL_smoothed_vs_baseline"], "s-", label="smoothed vs baseline: ROUGE-L")
    ax.plot(sigma, plotted["smoothed_accuracy"], "^-", label="smoothed accuracy")
    ax.plot(sigma, plotted["certified_accuracy/0.05"], "v-", label="certified accuracy at r = 0.05")
    ax.set(xlabel="sigma (noise on the question's input embeddings)", ylabel="score", ylim=(-0.02, 1.02),
           title="Answer quality vs sigma")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{args.name}.png", dpi=130)
    print(formatted(table, METRICS).to_markdown(index=False))
    print(f"wrote {out / args.name}.{{md,tex,csv,png}}")


if __name__ == "__main__":
    main()
