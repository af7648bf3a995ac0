"""Read run directories back: rows, summaries and the config choices that tell runs apart.

A run directory is any directory with `summary.json` and `records/`; a sweep directory holds several.
Scripts that make tables and figures start here, so they never depend on how a run was launched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from smoothgen_exp.records import read_records


def find_run_dirs(*paths: str | Path) -> list[Path]:
    """Every run directory at or below the given paths (sorted, deduplicated)."""
    found = set()
    for p in map(Path, paths):
        found.update(s.parent for s in p.rglob("summary.json") if (s.parent / "records").is_dir())
        if (p / "summary.json").exists():
            found.add(p)
    return sorted(found)


def run_config(run_dir: Path) -> dict:
    cfg_path = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False) if cfg_path.exists() else {}


def load_summaries(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per run: its flattened summary.json plus `run_dir`."""
    rows = []
    for d in run_dirs:
        summary = json.loads((d / "summary.json").read_text())
        rows.append({"run_dir": str(d), **pd.json_normalize(summary, sep="/").iloc[0].to_dict()})
    return pd.DataFrame(rows)


def load_records(run_dirs: list[Path]) -> pd.DataFrame:
    """All rows of all runs, with a `run_dir` column."""
    frames = [read_records(d).assign(run_dir=str(d)) for d in run_dirs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_table(df: pd.DataFrame, out_stem: Path, caption: str = "", floatfmt: str = ".4g") -> list[Path]:
    """Write `<stem>.md`, `<stem>.tex` and `<stem>.csv`; returns the paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    md = out_stem.with_suffix(".md")
    md.write_text((f"{caption}\n\n" if caption else "") + df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    tex = out_stem.with_suffix(".tex")
    tex.write_text(df.to_latex(index=False, float_format=lambda v: format(v, floatfmt), caption=caption or None))
    csv = out_stem.with_suffix(".csv")
    df.to_csv(csv, index=False)
    return [md, tex, csv]
