"""Records: one parquet row per (run, item, variant) and the run summary (loggers: `loggers/`).

Rows go to `<run_dir>/records/part-<rank>-<seq>.parquet`, written atomically every `flush_every`
items; `pandas.read_parquet(run_dir / "records")` reads them all. Column names and types of the core
schema (SPEC section 3) are fixed in COLUMNS: tables and figures read them. Run-level parameters
(sigma, n0, n, alpha) are repeated on every row, the baseline's included, so rows group by them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from smoothgen_exp.config import GROUPS
from smoothgen_exp.errors import SmoothgenError

CHOICE_GROUPS = tuple(g for g in GROUPS if g != "logger")     # the option chosen per group is a column

COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(), "config_hash": pa.string(), "git_sha": pa.string(),
    **{g: pa.string() for g in CHOICE_GROUPS},
    "item_id": pa.string(), "condition": pa.string(), "seed": pa.int64(),
    "noise": pa.string(), "sigma": pa.float64(), "certificate_valid": pa.bool_(),
    "n0": pa.int64(), "n": pa.int64(), "alpha": pa.float64(),
    "variant": pa.string(),                # baseline | smoothed
    "prediction": pa.int64(),              # class; -1 = abstain
    "label": pa.int64(), "correct": pa.bool_(),
    "top_class": pa.int64(), "count": pa.int64(), "p_lower": pa.float64(), "radius": pa.float64(),
    "certified": pa.bool_(), "abstained": pa.bool_(), "abstain_reason": pa.string(),
    "smoothed_prediction": pa.int64(), "smoothed_correct": pa.bool_(), "predict_n": pa.int64(),
    "predict_count_a": pa.int64(), "predict_count_b": pa.int64(), "predict_pvalue": pa.float64(),
    "samples_used": pa.int64(), "batch_size": pa.int64(),
    "time_encode_s": pa.float64(), "time_generate_s": pa.float64(), "time_predict_s": pa.float64(),
    "time_certify_s": pa.float64(), "time_total_s": pa.float64(),
}
REQUIRED = ("run_id", "item_id", "seed", "variant", "model", "sigma", "n0", "n", "alpha", "prediction",
            "label", "correct", "count", "p_lower", "radius", "certified", "abstained", "time_total_s")


def _arrow_type(values: list) -> pa.DataType:
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool | np.bool_):
            return pa.bool_()
        if isinstance(v, int | np.integer):
            return pa.int64()
        if isinstance(v, float | np.floating):
            return pa.float64()
        return pa.infer_type([v])
    return pa.float64()


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows to an Arrow table with the fixed types of COLUMNS (other columns are inferred)."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    schema = pa.schema([(k, COLUMNS.get(k) or _arrow_type([r.get(k) for r in rows])) for k in names])
    return pa.Table.from_pylist(rows, schema=schema)


class RecordWriter:
    """Buffers rows and writes them as atomic parquet parts under `<run_dir>/records/`."""

    def __init__(self, run_dir: str | os.PathLike, rank: int = 0, flush_every: int = 10):
        self.dir = Path(run_dir) / "records"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank, self.flush_every = rank, flush_every
        self.buffer: list[dict] = []
        self.items_buffered = 0
        self.seq = len(list(self.dir.glob(f"part-{rank:03d}-*.parquet")))

    def add(self, rows: list[dict]) -> None:
        """Add the rows of one item; flushes every `flush_every` items."""
        self.buffer.extend(rows)
        self.items_buffered += 1
        if self.items_buffered >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        path = self.dir / f"part-{self.rank:03d}-{self.seq:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(rows_to_table(self.buffer), tmp)
        os.replace(tmp, path)
        self.seq += 1
        self.buffer, self.items_buffered = [], 0


def recorded_items(run_dir: str | os.PathLike, config_hash: str, resume: bool = True) -> set[str]:
    """Items whose rows are already in `run_dir` (a resumed run skips them).

    Records of another configuration in the same directory are an error: mixing them would silently
    corrupt every table made from the directory. So are existing records with resume=false.
    """
    if not list((Path(run_dir) / "records").glob("part-*.parquet")):
        return set()
    if not resume:
        raise SmoothgenError(f"resume=false: {run_dir} already holds records; resume them (resume=true) or "
                             "choose another hydra.run.dir")
    df = read_records(run_dir)
    other = set(df.config_hash.unique()) - {config_hash}
    if other:
        raise SmoothgenError(f"hydra.run.dir={run_dir}: holds records of another configuration "
                             f"(config_hash {sorted(other)[0][:12]}); choose a new run directory")
    return set(df.item_id.unique())


def read_records(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All rows of a run, with nullable integer and boolean columns (no int -> float casts)."""
    return pd.read_parquet(Path(run_dir) / "records", dtype_backend="numpy_nullable")


# ------------------------------------------------------------------------------------ summary
def _mean(series: pd.Series) -> float:
    return float(series.mean()) if len(series) else math.nan


def summarize(df: pd.DataFrame, radii: list[float], certifier=None) -> dict[str, Any]:
    """The run summary: accuracies, certified accuracy at each radius, abstain rate, timing, and the
    certifier's own lines (`certifier.summarize`).

    One rule, applied here and nowhere else: a row with `certificate_valid` false (input-dependent
    noise, the symmetric oracle-error model: SPEC 4) never contributes to a certified key. Every key
    that states a guarantee (those of `_certificate_summary`: certified accuracy or fraction, radii,
    confidence, the violation counts, the certifier's `mean_bound_*` lines) is computed over the valid
    rows only; the invalid rows get the same keys prefixed `nominal_`.
    `certificate_valid` is true when every row is valid.
    """
    smoothed = df[df.variant == "smoothed"]
    baseline = df[df.variant == "baseline"]
    summary: dict[str, Any] = {
        "items": int(smoothed.item_id.nunique()),
        "baseline_accuracy": _accuracy(baseline.get("correct")),
        "time_baseline_s": _mean(baseline.time_total_s),
        "time_smoothed_s": _mean(smoothed.time_total_s),
    }
    if "smoothed_correct" in smoothed:
        summary["smoothed_accuracy"] = _accuracy(smoothed.smoothed_correct)
    if "samples_used" in smoothed:
        summary["mean_samples_used"] = _mean(smoothed.samples_used.astype(float))
    if "attack_success" in df:
        for variant, rows in (("baseline", baseline), ("smoothed", smoothed)):
            summary[f"attack_success_rate_{variant}"] = _mean(rows.attack_success.astype(float))
            summary[f"attack_output_shift_{variant}"] = _mean(rows.attack_output_shift.astype(float))
            summary[f"attack_class_changed_{variant}"] = _mean(rows.attack_class_changed.astype(float))
    valid = valid_certificates(smoothed)
    if valid.any() or not len(smoothed):
        summary.update(_certificate_summary(smoothed[valid], radii, certifier))
    if (~valid).any():
        summary.update({f"nominal_{k}": v for k, v in
                        _certificate_summary(smoothed[~valid], radii, certifier).items()})
    summary["certificate_valid"] = bool(valid.all())
    return summary


def valid_certificates(rows: pd.DataFrame) -> pd.Series:
    """The rows whose certificate is valid (`certificate_valid`; unknown, as in old records, is not valid)."""
    if "certificate_valid" not in rows:
        return pd.Series(False, index=rows.index)
    return rows.certificate_valid.fillna(False).astype(bool)


def _accuracy(correct: pd.Series | None) -> float:
    """Mean of a boolean column; NaN where the oracle has no ground truth (the column is all null)."""
    if correct is None or not correct.notna().any():
        return math.nan
    return _mean(correct.dropna().astype(float))


def _certificate_summary(smoothed: pd.DataFrame, radii: list[float], certifier) -> dict[str, Any]:
    """The keys that state guarantees, over rows whose certificate is valid (or, for `nominal_*`, not)."""
    out: dict[str, Any] = {}
    if "radius" in smoothed and "certified" in smoothed:
        certified = smoothed.certified.fillna(False).astype(bool)
        # "accuracy" needs ground truth; an answer certified up to equivalence has none (issue 11.5)
        has_class = "correct" in smoothed and smoothed.correct.notna().any()
        good = certified & smoothed.correct.fillna(False).astype(bool) if has_class else certified
        radius = smoothed.radius.astype(float)
        key = "certified_accuracy" if has_class else "certified_fraction"
        out.update({
            key: {f"{r:g}": _mean(good & (radius >= r)) for r in radii},
            "abstain_rate": _mean(smoothed.abstained.astype(float)),
            "mean_radius": _mean(radius[certified]),                   # over certified items
            "average_certified_radius": _mean(radius.where(good, 0.0)),  # 0 if wrong or abstained
        })
    if "confidence" in smoothed and smoothed.confidence.notna().any():
        out["confidence"] = float(smoothed.confidence.astype(float).min())
    if "certificate_violation" in smoothed:
        out["attack_within_radius"] = int(smoothed.attack_within_radius.fillna(False).astype(bool).sum())
        out["certificate_checked"] = int(smoothed.get("certificate_checked", pd.Series(dtype=bool))
                                         .fillna(False).astype(bool).sum())
        out["certificate_violations"] = int(smoothed.certificate_violation.fillna(False).astype(bool).sum())
    if certifier is not None:
        out.update(certifier.summarize(smoothed))
    return out


def write_summary(run_dir: str | os.PathLike, summary: dict) -> None:
    """Atomically write `<run_dir>/summary.json`, the completion marker of a run."""
    path = Path(run_dir) / "summary.json"
    tmp = path.with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


CURVES = {"certified_accuracy": "certified accuracy ↑", "certified_fraction": "certified fraction ↑",
          "nominal_certified_accuracy": "NOMINAL certified accuracy (not a certificate)",
          "nominal_certified_fraction": "NOMINAL certified fraction (not a certificate)"}
LOWER_IS_BETTER = ("abstain", "time", "seconds", "samples", "error", "bound_tv", "bound_w", "bound_lip",
                   "bound_harm", "bound_eps_out", "bound_interval", "bound_mcdiarmid", "event", "attack_",
                   "violation", "_mse")


NEITHER = ("items", "world_size", "n", "n0", "alpha", "sigma", "confidence", "max_certifiable_radius", "mean_bound_rho",
           "attack_within_radius", "mcdiarmid_n", "alpha_per_bound", "mean_bound_center_radius", "mean_bound_center_frac")


def metric_arrow(key: str) -> str:
    """↑ when a higher value is better, ↓ when lower is, "" for settings and counts that are neither."""
    if key in NEITHER or key.startswith("items") or key.endswith("_items"):
        return ""
    if key.startswith("retention") or "certified_accuracy" in key or "certified_fraction" in key:
        return "↑"
    fid = "fid" in key.split("_")               # a token: "confidence" holds the letters f, i, d too
    return "↓" if fid or any(t in key for t in LOWER_IS_BETTER) else "↑"


def _print_answers(console, rows: pd.DataFrame, examples: int) -> None:
    """The smoothed answers of the first items, each beside what its row certifies: the radius of that
    very answer (certified_text for certified decoding), the radius of another class where the shown
    answer is not the certified class, NOMINAL where the certificate is not valid (`valid_certificates`:
    its assumptions fail, or a row does not say), or the reason it abstains. Model text is escaped: it is never read as rich markup."""
    from rich.markup import escape
    from rich.table import Table

    if not len(rows):
        return
    table = Table(title=f"smoothed answers, {min(examples, len(rows))} of {len(rows)} items", header_style="bold")
    for col in ("item", "condition", "smoothed answer", "certificate"):
        table.add_column(col)
    shown = rows.head(examples)
    for (_, series), valid in zip(shown.iterrows(), valid_certificates(shown), strict=True):
        r = {k: None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
             for k, v in series.items()}
        answer = r.get("certified_text") or r.get("output_text")
        label = "radius" if valid else "NOMINAL radius"          # the summary's own rule (valid_certificates)
        if r.get("certified") is None or not bool(r["certified"]):
            cert = f"abstains: {r['abstain_reason']}" if r.get("abstain_reason") else "no class certificate"
        elif r.get("certified_text") is None and None not in (r.get("smoothed_class"), r.get("prediction")) \
                and r["smoothed_class"] != r["prediction"]:
            cert = f"{label} {r['radius']:.3g} for class {r['prediction']}, not this answer's"
        else:
            cert = f"{label} {r['radius']:.3g}"
        table.add_row(*(escape(str(v)[:60]) for v in (r.get("item_id"), r.get("condition"), answer, cert)))
    console.print(table)


def print_summary(summary: dict, title: str, records: pd.DataFrame | None = None, examples: int = 5) -> None:
    """The summary as two small tables: certified accuracy by radius, then every other number; for text
    outputs (language models), first the smoothed answers of a few items with their certificates."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if records is not None and "output_text" in records:
        _print_answers(console, records[(records.variant == "smoothed") & records.output_text.notna()], examples)
    ceiling = math.inf if summary.get("max_certifiable_radius") is None else summary["max_certifiable_radius"]
    for key, label in ((k, v) for k, v in CURVES.items() if k in summary):
        table = Table(title=title, header_style="bold")
        table.add_column("radius ≥", justify="right")
        table.add_column(label, justify="right")
        for r, acc in summary[key].items():      # 0 by arithmetic above what n can certify: say so
            table.add_row(r, f"{acc:.3f}" + (" (above the ceiling)" if float(r) > ceiling and not acc else ""))
        console.print(table)
    smoothed = records[records.variant == "smoothed"] if records is not None and "abstained" in records else None
    if smoothed is not None and (why := smoothed.abstain_reason[smoothed.abstained.fillna(False).astype(bool)]).size:
        console.print(f"abstained: {len(why)} of {len(smoothed)} items (" + "; ".join(
            f"{k}: {v}" for k, v in why.fillna("no reason given").value_counts().items()) + ")")
    if not summary.get("certificate_valid", True):
        console.print("[bold red]WARNING: some rows rest on assumptions that fail (input-dependent noise, "
                      "Sukenik et al. 2022; or the symmetric oracle-error model), so their radii and bounds are "
                      "NOT certificates. They are reported only as nominal_*.[/]")
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or key in ("n0", "n", "alpha", "sigma"):
            continue
        arrow = metric_arrow(key)
        table.add_row(f"{key} {arrow}", f"{value:.4g}")
    console.print(table)
