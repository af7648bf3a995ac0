"""SRL-VAE beside randomized smoothing of the same VAE, clean and under PhotoGuard (the SRL-VAE paper's table).

    python scripts/vae_table.py [SWEEP_DIR] [--out outputs/tables] [--name vae_table] [--columns 8]

From an `experiment=vae_table` sweep (model.robust x attack.eps x attack.objective on model=tiny_vae) writes
<name>.{md,tex,csv}: one row per VAE (baseline VAE, SRL-VAE, smoothed VAE, SRL-VAE smoothed: the runs'
baseline and smoothed rows under model.robust=none and srl) and per input (clean; each attack and L-inf eps),
with, over the attacked items,
- the reconstruction's MSE and PSNR against the clean input, mean ± standard error;
- the FID of the reconstructions against the real held-out digits (the digit oracle's features);
- the oracle's class agreement between the input and the reconstruction;
- for the smoothed rows, the certified output bound at that eps (TV form of SPEC C2, at the L2 radius
  eps * sqrt(d) of the L-inf ball on d pixels, rounded up to `certifier.eps_grid`), which bounds how far the smoothed mean
  reconstruction can move, and the measured movement (`attack_output_shift`) beside it;
- the largest L-inf distance the attack reached (a step schedule too short for the budget stops inside
  the ball, and the row's label would overstate it; the attack warns when it cannot reach eps).
And <name>.png: for each row, the reconstructions of the first `--columns` digits, clean and under PhotoGuard
at the largest eps (from each run's attacked_outputs.safetensors).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from smoothgen_exp.certifiers.base import eps_col
from smoothgen_exp.cli import script_parser
from smoothgen_exp.tables import (
    certified_part,
    load_records,
    load_summaries,
    require_runs,
    run_config,
    write_table,
)

ROWS = {("none", "baseline"): "VAE", ("srl", "baseline"): "SRL-VAE", ("none", "smoothed"): "smoothed VAE",
        ("srl", "smoothed"): "SRL-VAE smoothed"}
ATTACKS = {"latent": "PhotoGuard", "reconstruction": "reconstruction attack"}


def mean_se(values, digits: int) -> str:
    v = pd.Series(values, dtype=float).dropna()
    if not len(v):
        return "–"
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return f"{v.mean():.{digits}f}" if math.isnan(se) else f"{v.mean():.{digits}f} ± {se:.{digits}f}"


def l2_radius(cfg: dict, rows: pd.DataFrame, eps_linf: float) -> float | None:
    """The smallest eps of the certifier's grid that holds the L-inf ball's L2 radius eps sqrt(d), d the number
    of output coordinates (from the box [0, 1]^d's ball radius diag_rho = sqrt(d) / 2); None if none does."""
    rho = rows.diag_rho.dropna()
    if not len(rho) or (rows.diag_geometry.dropna() != "box").any():
        return None
    need = eps_linf * 2 * float(rho.iloc[0])
    grid = sorted(float(e) for e in cfg["certifier"].get("eps_grid") or [])
    radius = next((e for e in grid if e >= need), None)
    if radius is None:
        print(f"note: no certifier.eps_grid value >= {need:.4g} (L-inf {eps_linf:.4g}): no certified bound shown",
              file=sys.stderr)
    return radius


def table(sweep: Path) -> tuple[pd.DataFrame, dict]:
    run_dirs = require_runs(sweep, hint="run `make table-vae` first")
    summaries = load_summaries(run_dirs).set_index("run_dir")
    out, clean_done, figures = [], set(), {}
    for run_dir in run_dirs:
        cfg, summary = run_config(run_dir), summaries.loc[str(run_dir)]
        records = load_records([run_dir])
        robust, eps, objective = cfg["model"]["robust"], float(cfg["attack"]["eps"]), cfg["attack"]["objective"]
        radius = l2_radius(cfg, records[records.variant == "smoothed"], eps)
        for variant in ("baseline", "smoothed"):
            rows = records[records.variant == variant]
            name = ROWS[(robust, variant)]
            if (robust, variant) not in clean_done:         # the clean columns are the same in every run
                clean_done.add((robust, variant))
                out.append({"_order": (name, "", 0.0), "VAE": name, "input": "clean", "MSE": mean_se(rows.metric_recon_mse, 5),
                            "PSNR (dB)": mean_se(rows.metric_recon_psnr, 2),
                            "FID": f"{summary[f'metric_fid_{variant}']:.1f}",
                            "class agreement": f"{rows.metric_recon_agree.astype(float).mean():.3f}",
                            "certified bound": "–", "measured shift": "–", "L-inf reached": "–",
                            "items": len(rows)})
            bound = "–"
            if variant == "smoothed" and radius is not None:
                cert, note = certified_part(rows)              # valid certificates, else marked nominal
                bound = mean_se(cert[eps_col("bound_tv", radius)], 3) + note
            out.append({"_order": (name, objective, eps), "VAE": name,
                        "input": f"{ATTACKS.get(objective, objective)} {eps * 255:.0f}/255",
                        "MSE": mean_se(rows.attack_recon_mse, 5), "PSNR (dB)": mean_se(rows.attack_recon_psnr, 2),
                        "FID": f"{summary.get(f'metric_fid_attacked_{variant}', math.nan):.1f}",
                        "class agreement": f"{rows.attack_recon_agree.astype(float).mean():.3f}",
                        "certified bound": bound, "measured shift": mean_se(rows.attack_output_shift, 3),
                        # what the attack used of its budget (a short step schedule stops inside the ball)
                        "L-inf reached": f"{rows.attack_distance_linf.astype(float).max() * 255:.1f}/255",
                        "items": len(rows)})
        if objective == "latent":
            figures[(robust, eps)] = run_dir
    rank = {name: i for i, name in enumerate(ROWS.values())}
    out.sort(key=lambda r: (rank[r["_order"][0]], r["_order"][1] != "", r["_order"][1] != "latent", r["_order"][2]))
    return pd.DataFrame(out).drop(columns="_order"), figures


def figure(figures: dict, path: Path, columns: int) -> None:
    from safetensors.torch import load_file

    from smoothgen_exp.plots import image_rows

    if not figures:
        return
    eps = max(e for _, e in figures)
    rows = []
    for (robust, variant), name in ROWS.items():
        run_dir = figures.get((robust, eps))
        if run_dir is None or not (Path(run_dir) / "attacked_outputs.safetensors").exists():
            continue
        saved = load_file(str(Path(run_dir) / "attacked_outputs.safetensors"))
        for kind in ("clean", "attacked"):
            rows.append((f"{name}\n{kind}", list(saved[f"{variant}/{kind}"][:columns])))
    if rows:
        image_rows(rows, path, f"reconstructions of held-out digits, clean and under PhotoGuard at "
                               f"L-inf {eps * 255:.0f}/255 (smoothed: the mean over the judge's draws)")


def main() -> None:
    ap = script_parser(__doc__.splitlines()[0])
    ap.add_argument("sweep", nargs="?", default="outputs/sweeps/vae_table")
    ap.add_argument("--out", default="outputs/tables")
    ap.add_argument("--name", default="vae_table")
    ap.add_argument("--columns", type=int, default=8)
    args = ap.parse_args()
    df, figures = table(Path(args.sweep))
    out = Path(args.out)
    caption = ("SRL-VAE and randomized smoothing of the same VAE (model=tiny_vae, 8x8 digits), clean and under "
               "attack; mean ± standard error over items; FID against the real held-out digits (oracle features)")
    for path in write_table(df, out / args.name, caption, floatfmt="s"):
        print(f"wrote {path}")
    figure(figures, out / f"{args.name}.png", args.columns)
    print(f"wrote {out / f'{args.name}.png'}")
    print(df.to_markdown(index=False))


if __name__ == "__main__":
    main()
