"""dataset=harmful_prompts: prompts from a CSV (Qi et al.'s harmful-instructions format).

Columns: `prompt` (required); `label` (optional: 1 = a harmful request that should be refused,
0 = benign; the refusal oracle's classes); `image` (optional: a path, for vision-language models).
The project ships a small, project-written sample (`harmful_prompts_sample.csv`: mild requests that
only exercise the pipeline); point `dataset.path` at the real file to reproduce the paper.
"""

from __future__ import annotations

import csv
from pathlib import Path

from smoothgen_exp.data.base import Item, ItemList
from smoothgen_exp.errors import SmoothgenError

SAMPLE = Path(__file__).with_name("harmful_prompts_sample.csv")


class PromptsCSV(ItemList):
    num_classes = 2

    def __init__(self, path: str | None = None, limit: int | None = None, calibration_fraction: float = 0.0):
        path = Path(path) if path else SAMPLE
        if not path.is_file():
            raise SmoothgenError(f"dataset.path={path}: no such CSV file")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "prompt" not in rows[0]:
            raise SmoothgenError(f"dataset.path={path}: needs a `prompt` column")
        items = [Item(f"p{i:05d}", r["prompt"], int(r["label"]) if r.get("label") not in (None, "") else -1)
                 for i, r in enumerate(rows)]
        self.images = {it.item_id: r.get("image") or None for it, r in zip(items, rows, strict=True)}
        self.items = items[:limit] if limit is not None else items

    def calibration_conditions(self) -> list[str]:
        return [it.condition for it in self.items]
