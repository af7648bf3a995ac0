"""Feature-space smoothing with the Gaussian Smoothness Booster: the ablation of the FS papers' Table 6.

    python scripts/fs_table.py [SWEEP_DIR] [--attacks ATTACK_SWEEP_DIR] [--out outputs/tables] [--name fs_gsb]

From an `experiment=fs_gsb` sweep (sigma x booster.components on model=digit_encoder) writes
fs_gsb.{md,tex,csv}: per sigma and variant (vanilla, +P, +M, +P+M), over the held-out digits,
- S: the Gaussian robustness score E[(1 + cos(f'(x + eta), f'(x)))/2] (Monte Carlo, `diag_robustness_score`);
- s_lower and the FCSB bound b(eps) = 2 Phi(Phi^-1(s_lower) - eps/sigma) - 1 on <F(x + delta), u> at the eps
  grid: a cosine bound only where positive, so its mean over the items where it is, with their count
  where some are not, and "vacuous" where none is (the rows' bound_fcsb_* are NaN there);
- the certified radius at cos_min (the largest eps with b >= cos_min; 0 for an item that certifies none),
  its mean over all items, and the fraction of items certified;
- the linear probe's accuracy on the clean boosted feature f'(x) (`baseline` rows; for vanilla: the plain
  encoder) and on the smoothed one (the mean of `aggregator.n` noisy boosted features; `smoothed` rows).
With `--attacks` (an `experiment=fs_gsb_attacks` sweep, any norms and eps) it also writes
fs_gsb_attacks.{md,tex,csv}: the feature-cosine PGD against the plain (`baseline`) and the smoothed variant,
success rate (cosine <= attack.cos_threshold) and the mean cosine reached, and the sound check against the
FCSB value at every certified item attacked within its radius (checks, violations).
Values are mean ± standard error over items.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from smoothgen_exp.certifiers.base import eps_col
from smoothgen_exp.cli import script_parser
from smoothgen_exp.records import valid_certificates
from smoothgen_exp.tables import certified_part, load_records, require_runs, run_config, write_table

VARIANTS = {"none": "vanilla", "p": "+P", "m": "+M", "pm": "+P+M"}


def mean_se(values) -> tuple[float, float]:
    v = pd.Series(values, dtype=float).dropna()
    if not len(v):
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def cell(values, digits: int = 3) -> str:
    m, se = mean_se(values)
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def fcsb_cell(b) -> str:
    """The FCSB b(eps) the rows hold (`bound_fcsb_eps*`, computed with the noise the run drew) over the items
    where it bounds the cosine, with how many those are; b <= 0 says nothing about the cosine (the rows hold
    NaN there), so it is not averaged in as a number."""
    b = np.asarray(b, dtype=float)
    positive = b[~np.isnan(b)]
    if not len(positive):
        return "vacuous (b ≤ 0)"
    return cell(positive) + ("" if len(positive) == len(b) else f" ({len(positive)} of {len(b)} items)")


def run_key(run_dir) -> dict:
    cfg = run_config(Path(run_dir))
    return {"sigma": float(cfg["smoothing"]["sigma"]), "components": cfg["booster"].get("components", "none"),
            "norm": cfg["attack"].get("norm"), "eps": cfg["attack"].get("eps"),
            "cos_min": cfg["certifier"]["cos_min"], "eps_grid": list(cfg["certifier"]["eps_grid"])}


def order(df: pd.DataFrame) -> pd.DataFrame:
    rank = {k: i for i, k in enumerate(VARIANTS)}
    return df.assign(_r=df.components.map(rank)).sort_values([*[c for c in ("norm", "eps") if c in df], "sigma", "_r"])


def certificate_table(run_dirs) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        key, recs = run_key(d), load_records([d])
        base, sm = recs[recs.variant == "baseline"], recs[recs.variant == "smoothed"]
        cert, note = certified_part(sm)              # s_lower and radii: valid rows, else marked nominal
        row = {"sigma": key["sigma"], "components": key["components"], "variant": VARIANTS[key["components"]],
               "items": len(sm), "S ↑": cell(sm.diag_robustness_score), "s_lower ↑": cell(cert.bound_s_lower) + note}
        valid = sm[valid_certificates(sm)]                    # a bound only where the certificate holds
        for eps in key["eps_grid"]:
            row[f"FCSB b(ε={eps:g}) ↑"] = fcsb_cell(valid[eps_col("bound_fcsb", eps)]) if len(valid) else "–"
        radius = cert.radius.astype(float).where(cert.certified.fillna(False).astype(bool), 0.0).fillna(0.0)
        row[f"radius at cos ≥ {key['cos_min']:g} ↑"] = cell(radius) + note
        row["certified ↑"] = cell(cert.certified.fillna(False).astype(float)) + note
        row["probe acc. clean ↑"] = cell(base.correct.astype(float))
        row["probe acc. smoothed ↑"] = cell(sm.smoothed_correct.astype(float))
        row["radius_mean"] = float(radius.mean())
        row["radius_nominal"] = len(sm) > 0 and len(valid) == 0      # no valid certificate: all nominal
        rows.append(row)
    return order(pd.DataFrame(rows))


def attack_table(run_dirs) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        key, recs = run_key(d), load_records([d])
        base, sm = recs[recs.variant == "baseline"], recs[recs.variant == "smoothed"]
        within = sm.attack_within_radius.fillna(False).astype(bool)
        rows.append({"norm": key["norm"], "eps": key["eps"], "sigma": key["sigma"], "components": key["components"],
                     "variant": VARIANTS[key["components"]], "items": len(sm),
                     "success plain ↓": cell(base.attack_success.astype(float)),
                     "cos reached plain ↑": cell(base.attack_cosine),
                     "success smoothed ↓": cell(sm.attack_success.astype(float)),
                     "cos reached smoothed ↑": cell(sm.attack_cosine),
                     "checked (within radius)": int(within.sum()),
                     "violations ↓": int(sm.certificate_violation.fillna(False).astype(bool).sum())})
    return order(pd.DataFrame(rows))


def main(argv: list[str] | None = None):
    p = script_parser(__doc__)
    p.add_argument("sweep", nargs="?", default="outputs/sweeps/fs_gsb")
    p.add_argument("--attacks", default=None, help="an experiment=fs_gsb_attacks sweep directory")
    p.add_argument("--out", default="outputs/tables")
    p.add_argument("--name", default="fs_gsb")
    args = p.parse_args(argv)
    out = Path(args.out)
    cert = certificate_table(require_runs(args.sweep, hint="run `make table-fs` first"))
    show = cert.drop(columns=["components", "_r", "radius_mean", "radius_nominal"])
    write_table(show, out / args.name,
                "Feature-space smoothing of the digit encoder with the Gaussian Smoothness Booster (FS Table 6 "
                "ablation): robustness score S, FCSB bound on <F(x+δ), u> at each ε, certified radius at cos_min "
                "(0 where none), fraction certified, and the linear probe's accuracy on the clean boosted and the "
                "smoothed boosted feature. Mean ± standard error over items.")
    print(show.to_markdown(index=False))
    for sigma, part in cert.groupby("sigma"):
        vanilla = part[part.components == "none"]["radius_mean"]
        if len(vanilla):
            gains = {r.variant: r.radius_mean - float(vanilla.iloc[0]) for r in part.itertuples() if r.components != "none"}
            nominal = " (NOMINAL: invalid certificates)" if part.radius_nominal.any() else ""
            print(f"sigma={sigma:g}: mean certified radius over vanilla{nominal}: "
                  + ", ".join(f"{k} {v:+.4f}" for k, v in gains.items()))
    written = [f"{args.name}.{{md,tex,csv}}"]
    if args.attacks:
        att = attack_table(require_runs(args.attacks, hint="run `make table-fs` first")).drop(columns=["components",
                                                                                                        "_r"])
        write_table(att, out / f"{args.name}_attacks",
                    "Feature-cosine PGD (attack.objective=feature) against the plain and the smoothed variant: "
                    "success (cosine to the clean feature <= attack.cos_threshold), the cosine reached, and the sound "
                    "check of the FCSB value at certified items attacked within their radius.")
        print(att.to_markdown(index=False))
        written.append(f"{args.name}_attacks.{{md,tex,csv}}")
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return cert


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
