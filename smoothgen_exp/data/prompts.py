"""dataset=harmful_prompts: prompts from a CSV (Qi et al.'s harmful-instructions format).

Columns: `prompt` (required); `label` (optional: 1 = a harmful request that should be refused,
0 = benign; the refusal oracle's classes); `image` (optional: a path, for vision-language models).
The project ships a small, project-written sample (`harmful_prompts_sample.csv`: mild requests that
only exercise the pipeline); point `dataset.path` at the real file to reproduce the paper.

Calibration split (noise laws fitted on data, `smoothing=calibrated|adaptive`): with
`calibration_fraction` f > 0, the ceil(f * P) distinct prompts (P of them in the file) with the
smallest SHA-256 of their text are the calibration items, and every row holding one of them leaves the
evaluation items (before `limit` applies). The split needs no seed, does not depend on the row order
(a category-sorted file is split evenly) and stays put when rows are added elsewhere; equal prompts
always fall on the same side, so no evaluation condition is ever a calibration condition. Item ids
(`p<row>`) are the row numbers in the file either way. With f = 0 there is no calibration split and a
noise law that needs one refuses to run.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

from smoothgen_exp.config import configured
from smoothgen_exp.data.base import Item, ItemList
from smoothgen_exp.errors import SmoothgenError

SAMPLE = Path(__file__).with_name("harmful_prompts_sample.csv")
REFUSAL_CLASSES = ("complies", "refuses")   # a label: what the model should do (the refusal oracles' classes)


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@configured
class PromptsCSV(ItemList):
    num_classes = 2
    item_kind = "prompts"

    @staticmethod
    def class_names(conf) -> tuple[str, ...] | None:
        """Labels are refusal classes where the CSV has a `label` column; without one, items have none."""
        path = Path(conf.path) if conf.path else SAMPLE
        if not path.is_file():
            return None                      # the dataset says so in one line when it loads
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        return REFUSAL_CLASSES if "label" in header else None

    def __init__(self, path: str | None, limit: int | None, calibration_fraction: float):
        if not 0.0 <= calibration_fraction < 1.0:
            raise SmoothgenError(f"dataset.calibration_fraction={calibration_fraction}: must lie in [0, 1)")
        path = Path(path) if path else SAMPLE
        if not path.is_file():
            raise SmoothgenError(f"dataset.path={path}: no such CSV file")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "prompt" not in rows[0]:
            raise SmoothgenError(f"dataset.path={path}: needs a `prompt` column")
        items = [Item(f"p{i:05d}", r["prompt"], int(r["label"]) if r.get("label") not in (None, "") else -1)
                 for i, r in enumerate(rows)]
        self.path, self.calibration_fraction = path, float(calibration_fraction)
        self.images = {it.item_id: r.get("image") or None for it, r in zip(items, rows, strict=True)}
        by_hash = sorted({it.condition for it in items}, key=prompt_hash)
        held = set(by_hash[: math.ceil(self.calibration_fraction * len(by_hash))])
        rank = {c: i for i, c in enumerate(by_hash)}
        # calibration items in hash order (a noise law taking the first k gets a spread-out subset)
        self._calibration = sorted((it for it in items if it.condition in held),
                                   key=lambda it: (rank[it.condition], it.item_id))
        evaluation = [it for it in items if it.condition not in held]
        if not evaluation:
            raise SmoothgenError(f"dataset.calibration_fraction={calibration_fraction}: leaves no evaluation "
                                 f"items of the {len(items)} rows in {path}")
        self.items = evaluation[:limit] if limit is not None else evaluation

    def calibration_items(self) -> list[Item]:
        """The items held out for fitting noise laws, never evaluation items (see the module docstring)."""
        if not self._calibration:
            raise SmoothgenError("dataset=harmful_prompts has no calibration split, and this noise law is fitted "
                                 "on one: set dataset.calibration_fraction (e.g. 0.2) to hold prompts out of "
                                 "the evaluation items")
        return list(self._calibration)

    def calibration_conditions(self) -> list[str]:
        return [it.condition for it in self.calibration_items()]
