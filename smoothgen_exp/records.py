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

from smoothgen_exp.checks import hydra_choice
from smoothgen_exp.config import GROUPS, has_records, refuse_existing_records
from smoothgen_exp.errors import SmoothgenError

CHOICE_GROUPS = tuple(g for g in GROUPS if g != "logger")     # the option chosen per group is a column


def choice_columns(cfg) -> dict[str, str]:
    """The option chosen in each group (Hydra's runtime choices, else the target's class name)."""
    return {g: hydra_choice(cfg, g) or cfg[g]._target_.rsplit(".", 1)[-1] for g in CHOICE_GROUPS}


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
    "attack_within_radius": pa.bool_(), "certificate_checked": pa.bool_(), "attack_abstained": pa.bool_(),
    "certificate_violation": pa.bool_(),   # null where the attacked item was not checked
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
    if not resume:
        refuse_existing_records(run_dir)
    if not has_records(run_dir):
        return set()
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
    confidence, the violation counts, the certifier's `mean_bound_*` and `mean_diag_*` lines) is computed over the valid
    rows only; the invalid rows get the same keys prefixed `nominal_`.
    `certificate_valid` is true when every row is valid.
    """
    smoothed = df[df.variant == "smoothed"]
    baseline = df[df.variant == "baseline"]
    summary: dict[str, Any] = {"items": int(smoothed.item_id.nunique())}
    # accuracies need ground truth: an oracle without classes (oracle=none) or an answer judged up to
    # equivalence has none, and the run reports none (as a certified fraction replaces certified accuracy)
    if _has_truth(baseline.get("correct")):
        summary["baseline_accuracy"] = _mean(baseline.correct.dropna().astype(float))
    summary["time_baseline_s"] = _mean(baseline.time_total_s)
    summary["time_smoothed_s"] = _mean(smoothed.time_total_s)
    if _has_truth(smoothed.get("smoothed_correct")):
        summary["smoothed_accuracy"] = _mean(smoothed.smoothed_correct.dropna().astype(float))
    if "samples_used" in smoothed:
        summary["mean_samples_used"] = _mean(smoothed.samples_used.astype(float))
    if "attack_success" in df:
        for variant, rows in (("baseline", baseline), ("smoothed", smoothed)):
            summary[f"attack_success_rate_{variant}"] = _mean(rows.attack_success.astype(float))
            summary[f"attack_output_shift_{variant}"] = _mean(rows.attack_output_shift.astype(float))
            summary[f"attack_class_changed_{variant}"] = _mean(rows.attack_class_changed.astype(float))
            summary[f"attack_unmoved_{variant}"] = int((rows.attack_distance.astype(float) == 0).sum())
            if "attack_clean_class" in rows:      # the judge already off the reference at x: no success there
                off = (rows.attack_clean_class.astype("Int64") != rows.attack_reference_class.astype("Int64")).fillna(False)
                summary[f"attack_reference_unstable_{variant}"] = int(off.sum())
                # the rate over the items an untargeted attack can move at all (the rate above counts the others as
                # failures: against the smoothed judge, which abstains more at x, that favours the defence)
                summary[f"attack_success_rate_stable_{variant}"] = _mean(rows.attack_success[~off.astype(bool)].astype(float))
        if "attack_abstained" in smoothed:
            summary["attack_abstain_rate_smoothed"] = _mean(smoothed.attack_abstained.astype(float))
    valid = valid_certificates(smoothed)
    if valid.any() or not len(smoothed):
        summary.update(_certificate_summary(smoothed[valid], radii, certifier))
    if (~valid).any():
        summary.update({f"nominal_{k}": v for k, v in
                        _certificate_summary(smoothed[~valid], radii, certifier).items()})
    summary["certificate_valid"] = bool(valid.all())
    if certifier is not None:
        summary.update(certifier.settings())
    return summary


def valid_certificates(rows: pd.DataFrame) -> pd.Series:
    """The rows whose certificate is valid (`certificate_valid`; unknown, as in old records, is not valid)."""
    if "certificate_valid" not in rows:
        return pd.Series(False, index=rows.index)
    return rows.certificate_valid.fillna(False).astype(bool)


def certificates(rows: pd.DataFrame) -> pd.Series:
    """The rows that are certificates: smoothed rows whose procedure certified (`certified`) under
    assumptions that hold (`valid_certificates`). Count certificates with this mask: `valid_certificates`
    alone is also true for abstaining rows and for baseline rows, which certify nothing."""
    certified = rows["certified"].fillna(False).astype(bool) if "certified" in rows else False
    return valid_certificates(rows) & certified & (rows["variant"] == "smoothed")


def _has_truth(correct: pd.Series | None) -> bool:
    """Whether a correctness column holds any ground truth (not absent, not all null)."""
    return correct is not None and bool(correct.notna().any())


def _certificate_summary(smoothed: pd.DataFrame, radii: list[float], certifier) -> dict[str, Any]:
    """The keys that state guarantees, over rows whose certificate is valid (or, for `nominal_*`, not)."""
    out: dict[str, Any] = {}
    if "radius" in smoothed and "certified" in smoothed:
        certified = smoothed.certified.fillna(False).astype(bool)
        # "accuracy" needs ground truth; an answer certified up to equivalence has none (issue 11.5)
        has_class = _has_truth(smoothed.get("correct"))
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


def strict_json(value):
    """Strict JSON has no NaN or infinity: such a number is written as null ("not a finite number")."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_summary(run_dir: str | os.PathLike, summary: dict) -> None:
    """Atomically write `<run_dir>/summary.json`, the completion marker of a run."""
    path = Path(run_dir) / "summary.json"
    tmp = path.with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(strict_json(summary), indent=2, default=float, allow_nan=False) + "\n")
    os.replace(tmp, path)
