"""SmoothGen's text-to-image table on digits: the diffusion model trained here beside the CVAE default.

    python scripts/t2i_digits.py [SWEEP_DIR] [--out outputs/tables] [--name t2i_digits] [--grid-n 100]

From an `experiment=t2i_digits` sweep (model x sigma x {mean, ot_blend} x n): writes
- `<name>.{md,tex,csv}`: per run, certified accuracy at the radius grid, the average certified radius,
  the certified output bound on ||h(x) - h(x + delta)|| at eps (C2, TV form: it needs no sampling, so it
  is computed here from the noise's L2 scale, as the rows record it, and the output ball, rho = sqrt(64) / 2
  = 4; empty where the run's certificates are not valid), FID and digit probability
  of baseline and smoothed images with their retention (smoothed / baseline, FID inverted), the same
  against the smoothed output at sigma = 0 (the cost of the noise alone: at sigma = 0 the aggregate
  already averages over the per-sample seeds), and seconds per item;
- `<name>_retention.png`: retention against the average certified radius (one line per model,
  aggregator and n; the points are the sigma grid), the robustness-quality trade-off;
- `<name>_grid.png`: prompts x sigma of smoothed images (the pixel mean of `--grid-n` generations as the
  runner computes it, seed 0), one panel per model as the sweep configured it; skipped with --grid-n 0.
Then prints, per model, aggregator and n, the largest sigma on the grid whose retention is at or above 90%
and 80% (for each retention column).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from smoothgen_exp.cli import script_parser  # noqa: E402
from smoothgen_exp.records import valid_certificates  # noqa: E402
from smoothgen_exp.stats import output_tv_bound  # noqa: E402
from smoothgen_exp.tables import load_records, load_summaries, require_runs, run_config, write_table  # noqa: E402

RADII = ("0", "0.05", "0.1", "0.25")
EPS = (0.1, 0.25)
RHO = 4.0            # 8x8 outputs in [0, 1]: the box's ball, sqrt(m) / 2
MODELS = {"DigitsDiffusion": "digits_diffusion", "DigitsT2I": "digits_t2i (CVAE)"}
AGGREGATORS = {"Mean": "mean", "OTBlend": "ot_blend"}
GRID_PROMPTS = ("a blurry seven", "show me a 3", "a small pixelated five", "number 0 in handwriting",
                "the figure eight, written by hand")


def certified_scale(run_dir: Path) -> float:
    """The L2 scale of the noise a run drew, over its rows with a valid certificate: `sigma` for isotropic
    noise, sqrt(lambda_min) (`noise_sigma_min`) for calibrated noise; NaN where no row is valid (input-
    dependent noise certifies nothing) or the noise is 0. The output bound is computed from it, not from
    the config's smoothing.sigma, which is not the L2 scale of every noise law."""
    rows = load_records([run_dir])
    rows = rows[(rows.variant == "smoothed")]
    rows = rows[valid_certificates(rows)]
    scale = rows["noise_sigma_min"] if "noise_sigma_min" in rows else rows["sigma"]
    scale = scale.astype(float).min() if len(rows) else np.nan
    return float(scale) if scale > 0 else np.nan


def table_of(run_dirs: list[Path]) -> pd.DataFrame:
    summaries = load_summaries(run_dirs)
    rows = []
    for d, (_, s) in zip(run_dirs, summaries.iterrows(), strict=True):
        cfg = run_config(d)
        sigma = float(cfg["smoothing"]["sigma"])
        row = {"model": MODELS.get(cfg["model"]["_target_"].rsplit(".", 1)[-1], cfg["model"]["_target_"]),
               "aggregator": AGGREGATORS.get(cfg["aggregator"]["_target_"].rsplit(".", 1)[-1], "?"),
               "n": int(cfg["aggregator"]["n"]), "sigma": sigma, "items": int(s.get("items", 0))}
        for r in RADII:
            row[f"cert_acc@{r}"] = s.get(f"certified_accuracy/{r}", np.nan)
        row["ACR"] = s.get("average_certified_radius", np.nan)
        scale = certified_scale(d)
        for eps in EPS:
            row[f"output_bound@{eps}"] = np.nan if np.isnan(scale) else float(output_tv_bound(RHO, eps, scale))
        for key, col in (("metric_fid_baseline", "FID base"), ("metric_fid_smoothed", "FID smooth"),
                         ("metric_digit_prob_baseline", "p(digit) base"),
                         ("metric_digit_prob_smoothed", "p(digit) smooth"),
                         ("retention_fid", "ret FID"), ("retention_digit_prob", "ret p(digit)"),
                         ("retention_digit_prob_noisy", "ret p(digit) noisy"),    # one unfiltered G(x + eta)
                         ("seconds_per_item", "s/item")):
            row[col] = s.get(key, np.nan)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["model", "aggregator", "n", "sigma"]).reset_index(drop=True)
    # what the noise alone costs: against the same aggregate at sigma = 0 (which already averages the
    # per-sample seeds, so its FID is not the baseline's)
    for (_, _, _), g in table.groupby(["model", "aggregator", "n"]):
        zero = g[g.sigma == 0]
        fid0, p0 = (zero["FID smooth"].iloc[0], zero["p(digit) smooth"].iloc[0]) if len(zero) else (np.nan, np.nan)
        table.loc[g.index, "ret FID vs σ=0"] = fid0 / g["FID smooth"]
        table.loc[g.index, "ret p(digit) vs σ=0"] = g["p(digit) smooth"] / p0
    return table


def crossings(table: pd.DataFrame) -> list[str]:
    """Per (model, aggregator, n): the largest sigma on the grid whose retention is >= 90% and >= 80%."""
    lines = []
    for (model, agg, n), g in table.groupby(["model", "aggregator", "n"]):
        for col in ("ret p(digit)", "ret FID", "ret p(digit) vs σ=0", "ret FID vs σ=0"):
            parts = []
            for level in (0.9, 0.8):
                ok = g[(g[col] >= level) & (g.sigma > 0)]
                parts.append(f">= {level:.0%} up to sigma {ok.sigma.max():g}" if len(ok) else f"< {level:.0%} at every sigma > 0")
            lines.append(f"{model}, {agg}, n={n}, {col}: " + "; ".join(parts))
    return lines


def retention_figure(table: pd.DataFrame, path: Path) -> None:
    panels = ("ret p(digit)", "ret FID", "ret FID vs σ=0")
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4), sharey=True)
    for ax, col in zip(axes, panels, strict=True):
        for (model, agg, n), g in table[table.sigma > 0].groupby(["model", "aggregator", "n"]):
            style = "-" if model.startswith("digits_diffusion") else "--"
            ax.plot(g["ACR"], g[col], style, marker="o" if agg == "mean" else "s", label=f"{model}, {agg}, n={n}")
            for _, r in g.iterrows():
                ax.annotate(f"{r.sigma:g}", (r["ACR"], r[col]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.axhline(0.9, color="grey", lw=0.6, ls=":")
        ax.axhline(0.8, color="grey", lw=0.6, ls=":")
        ax.set(xlabel="average certified radius (L2, prompt embedding)",
               title=col.replace("ret ", "retention of ") + ("" if "σ=0" in col else " (vs baseline)"))
    axes[0].set_ylabel("retention")
    axes[-1].legend(fontsize=6)
    fig.suptitle("Robustness-quality trade-off (labels: sigma)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def image_grid(run_dirs: list[Path], table: pd.DataFrame, n: int, path: Path) -> None:
    """Prompts x sigma of smoothed (pixel-mean) images, per model as the sweep configured it (same
    weights, from the runs' cache_dir), computed as the runner computes them."""
    from types import SimpleNamespace

    import torch
    from hydra.utils import instantiate

    import smoothgen_exp.training  # noqa: F401  (weights missing from the cache train on first use)
    from smoothgen_exp.aggregators.mean import Mean
    from smoothgen_exp.context import ItemContext
    from smoothgen_exp.smoothing.gaussian import GaussianNoise

    configs = {}
    for d in run_dirs:
        cfg = run_config(d)
        name = MODELS.get(cfg["model"]["_target_"].rsplit(".", 1)[-1], cfg["model"]["_target_"])
        configs.setdefault(name, (cfg["model"], cfg["oracle"], cfg.get("cache_dir", "outputs/cache")))
    sigmas = sorted(table.sigma.unique())
    fig, axes = plt.subplots(len(GRID_PROMPTS), len(sigmas) * len(configs), squeeze=False,
                             figsize=(0.75 * len(sigmas) * len(configs) + 1.2, 0.8 * len(GRID_PROMPTS) + 0.6))
    with torch.inference_mode():
        for m, (name, (model_cfg, oracle_cfg, cache_dir)) in enumerate(sorted(configs.items())):
            oracle = instantiate(oracle_cfg, cache_dir=cache_dir, device="cpu")
            model = instantiate(model_cfg, cache_dir=cache_dir, device="cpu")
            x = model.encode(list(GRID_PROMPTS))
            for i, prompt in enumerate(GRID_PROMPTS):
                for j, sigma in enumerate(sigmas):
                    item = SimpleNamespace(item_id=f"grid{i}", condition=prompt, label=None)
                    ctx = ItemContext(item, x[i], model, oracle, GaussianNoise(float(sigma)), 0, 256)
                    _, image = Mean(n=n).aggregate(ctx)
                    ax = axes[i, m * len(sigmas) + j]
                    ax.imshow(image[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if i == 0:
                        ax.set_title(f"{name.split()[0]}\nσ={sigma:g}" if j == 0 else f"σ={sigma:g}", fontsize=6)
                    if m == 0 and j == 0:
                        ax.set_ylabel(prompt, fontsize=5, rotation=0, ha="right", va="center")
    fig.suptitle(f"smoothed images (pixel mean of n = {n}), prompts x sigma", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("sweep", nargs="?", default="outputs/sweeps/t2i_digits")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--name", default="t2i_digits")
    p.add_argument("--grid-n", type=int, default=100, help="generations per smoothed image in the grid (0: no grid)")
    args = p.parse_args(argv)
    run_dirs = require_runs(args.sweep, hint="run `make table-t2i-digits` first")
    out = Path(args.out)
    table = table_of(run_dirs)
    write_table(table, out / args.name, "SmoothGen on digits: diffusion (trained here) vs the CVAE default; "
                "certified accuracy at L2 radius r in the prompt-embedding space, ACR, the certified output "
                "bound at eps (C2, TV form), quality of baseline and smoothed images, retention, seconds per item.",
                floatfmt=".3g")
    retention_figure(table, out / f"{args.name}_retention.png")
    if args.grid_n > 0:
        image_grid(run_dirs, table, args.grid_n, out / f"{args.name}_grid.png")
    print(table.to_markdown(index=False, floatfmt=".3g"))
    print("\n".join(crossings(table)))
    print(f"wrote {out / args.name}.{{md,tex,csv}}, {args.name}_retention.png"
          + (f", {args.name}_grid.png" if args.grid_n > 0 else ""))


if __name__ == "__main__":
    main()
