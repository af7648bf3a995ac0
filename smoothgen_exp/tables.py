"""Read run directories back: rows, summaries and the config choices that tell runs apart.

A run directory is any directory with `summary.json` and `records/`; a sweep directory holds several.
Scripts that make tables and figures start here, so they never depend on how a run was launched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from smoothgen_exp.config import CURVE_KEYS
from smoothgen_exp.records import read_records, valid_certificates
from smoothgen_exp.report import ceiling_mark, metric_arrow


def find_run_dirs(*paths: str | Path) -> list[Path]:
    """Every run directory at or below the given paths (sorted, deduplicated)."""
    found = set()
    for p in map(Path, paths):
        found.update(s.parent for s in p.rglob("summary.json") if (s.parent / "records").is_dir())
        if (p / "summary.json").exists():
            found.add(p)
    return sorted(found)


def require_runs(*paths: str | Path, hint: str = "") -> list[Path]:
    """find_run_dirs, or exit with a one-line error (the scripts' shared entry)."""
    run_dirs = find_run_dirs(*paths)
    if not run_dirs:
        raise SystemExit(f"error: no run directories (with summary.json and records/) under "
                         f"{' '.join(map(str, paths))}{f' ({hint})' if hint else ''}")
    return run_dirs


def run_config(run_dir: Path) -> dict:
    cfg_path = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False) if cfg_path.exists() else {}


def load_summaries(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per run: its flattened summary.json plus `run_dir`."""
    rows = []
    for d in run_dirs:
        summary = json.loads((d / "summary.json").read_text())
        rows.append({"run_dir": str(d), **pd.json_normalize(summary, sep="/").iloc[0].to_dict()})
    df = pd.DataFrame(rows)
    for col in df.columns:                          # summary.json writes NaN as null: numbers again
        values = df[col].dropna()
        if pd.api.types.is_object_dtype(df[col]) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            df[col] = df[col].astype(float)
    return df


NOMINAL_TAG = " — NOMINAL, not certified"     # how figures label values from invalid certificates


def certified_and_correct(rows: pd.DataFrame) -> pd.Series:
    """Certified, and correct where there is ground truth (an answer without a label counts as certified)."""
    return rows.certified.astype(bool) & rows.correct.fillna(True).astype(bool)


def by_validity(rows: pd.DataFrame) -> list[tuple[pd.DataFrame, bool]]:
    """Split rows into (rows with a valid certificate, False) and (the others, True = nominal only).

    Tables and figures draw a certified quantity from the first part only, and label the second part
    NOMINAL (SPEC 4: input-dependent noise, the symmetric oracle-error model)."""
    valid = valid_certificates(rows)
    return [(part, nominal) for part, nominal in ((rows[valid], False), (rows[~valid], True)) if len(part)]


def certified_part(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows a table cell of certified figures is computed from, and the note the cell carries: the rows
    with a valid certificate ("" when all are, "(k of n valid)" when some are not), else all of them,
    marked "(nominal)" (SPEC 4: an invalid certificate is never shown as one)."""
    parts = by_validity(rows)
    if not parts or parts[0][1]:
        return rows, " (nominal)" if len(rows) else ""
    valid = parts[0][0]
    return valid, "" if len(valid) == len(rows) else f" ({len(valid)} of {len(rows)} valid)"


def load_records(run_dirs: list[Path]) -> pd.DataFrame:
    """All rows of all runs, with a `run_dir` column."""
    frames = [read_records(d).assign(run_dir=str(d)) for d in run_dirs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_table(df: pd.DataFrame, out_stem: Path, caption: str = "", floatfmt: str = ".4g") -> list[Path]:
    """Write `<stem>.md`, `<stem>.tex` and `<stem>.csv`; returns the paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    md, tex, csv = (out_stem.parent / f"{out_stem.name}{ext}" for ext in (".md", ".tex", ".csv"))   # a stem may hold dots
    md.write_text((f"{caption}\n\n" if caption else "") + df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    tex.write_text(df.to_latex(index=False, float_format=lambda v: format(v, floatfmt), caption=caption or None))
    df.to_csv(csv, index=False)
    return [md, tex, csv]


# ------------------------------------------------------------------------ grouped result tables
FRACTION_HINTS = ("accuracy", "rate", "fraction", "abstain")


def swept_keys(run_dirs: list[Path]) -> list[str]:
    """Override keys that differ between the runs (Hydra's recorded overrides, those that can change a
    result): set to different values, or set in some runs only (the others have the default)."""
    values: dict[str, set] = {}
    runs: dict[str, int] = {}
    for d in run_dirs:
        pairs = _overrides(d / ".hydra" / "overrides.yaml")
        for key in {k for k, _ in pairs}:
            runs[key] = runs.get(key, 0) + 1
        for key, value in pairs:
            values.setdefault(key, set()).add(value)
    return sorted(k for k, v in values.items()
                  if len(v) > 1 or runs[k] < len(run_dirs) or len(run_dirs) == 1 and k)


def _overrides(path: Path) -> list[tuple[str, str]]:
    """(key, value) of each override a run recorded that can change its results (not hydra.*, resume,
    progress, cache_dir, ...: provenance.NON_SEMANTIC)."""
    from smoothgen_exp.provenance import NON_SEMANTIC

    pairs = [str(ov).lstrip("+~").partition("=") for ov in (OmegaConf.load(path) if path.exists() else [])]
    return [(key, value) for key, _, value in pairs if key.split(".")[0].split("/")[0] not in NON_SEMANTIC]


def stderr_of(metric: str, value: float, items: int) -> float:
    """Binomial standard error over items for fraction-like metrics; NaN where none applies."""
    if any(h in metric for h in FRACTION_HINTS) and 0.0 <= value <= 1.0 and items > 0:
        return (value * (1.0 - value) / items) ** 0.5
    return float("nan")


def results_table(run_dirs: list[Path], metrics: list[str], by: list[str] | None = None) -> pd.DataFrame:
    """One row per run: its run_dir, the grouping columns (swept keys), then each metric and its stderr."""
    summaries = load_summaries(run_dirs)
    by = by if by is not None else swept_keys(run_dirs)
    rows = []
    for d, (_, s) in zip(run_dirs, summaries.iterrows(), strict=True):
        cfg, (reach, mark) = run_config(d), ceiling_mark(s)    # 0 above the reach is arithmetic, not measured
        row = {"run_dir": str(d)}
        for key in by:
            node = cfg
            for part in key.split("."):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            row[key] = node if not isinstance(node, dict) else s.get(key.split(".")[-1], "")
        for m in metrics:
            key = m if m in s and pd.notna(s[m]) else f"nominal_{m}"    # an invalid certificate: nominal
            value = float(s[key]) if key in s and pd.notna(s[key]) else float("nan")
            row[m] = value
            row[f"{m} stderr"] = stderr_of(m, value, int(s.get("items", 0)))
            row[f"{m} nominal"] = key != m and not pd.isna(value)
            row[f"{m} above"] = mark if value == 0 and _radius_of(m) > reach else ""
        rows.append(row)
    return pd.DataFrame(rows).sort_values(by).reset_index(drop=True) if by else pd.DataFrame(rows)


def _radius_of(metric: str) -> float:
    """The radius a certified curve is read at (`certified_accuracy/0.25` -> 0.25); -inf for other keys."""
    curve, _, radius = metric.partition("/")
    try:
        return float(radius) if curve in CURVE_KEYS else -math.inf
    except ValueError:
        return -math.inf


def formatted(df: pd.DataFrame, metrics: list[str], digits: int = 3) -> pd.DataFrame:
    """lm-evaluation-harness style: "value ± stderr" cells, arrows in the metric headers. A value that
    comes from rows whose certificate is invalid (`nominal_*` keys) says "(nominal)", and a certified curve
    read above the run's ceiling (0 by arithmetic: no n-sample count reaches it) says "(above the ceiling)"."""
    out = df[[c for c in df.columns if c not in metrics and not c.endswith((" stderr", " nominal", " above"))
              and c != "run_dir"]].copy()
    for m in metrics:
        cells = []
        nominal = df[f"{m} nominal"] if f"{m} nominal" in df else [False] * len(df)
        above = df[f"{m} above"] if f"{m} above" in df else [""] * len(df)
        for v, e, nom, mark in zip(df[m], df[f"{m} stderr"], nominal, above, strict=True):
            cell = "–" if pd.isna(v) else f"{v:.{digits}f}"
            cell = cell if pd.isna(e) or pd.isna(v) else f"{cell} ± {e:.{digits}f}"
            cells.append(f"{cell} (nominal)" if nom else cell + mark)
        out[f"{m} {metric_arrow(m.split('/')[0])}".strip()] = cells
    return out
