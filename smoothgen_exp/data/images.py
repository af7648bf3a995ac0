"""dataset=digits_images: scikit-learn's real held-out digit images as items (image-conditioned models).

Each item is one 8x8 digit in [0, 1] (label: its digit); the model resizes it to its own resolution.
"""

from __future__ import annotations

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.data.base import Item, ItemList
from smoothgen_exp.data.digits import WORDS, digit_images
from smoothgen_exp.errors import SmoothgenError


@configured
class DigitImages(ItemList):
    num_classes = 10
    class_names = WORDS
    item_kind = "images"

    def __init__(self, split: str, limit: int | None):
        x, y = digit_images(split)
        items = [Item(f"img{i:04d}", f"{split} digit image {i}", int(y[i])) for i in range(len(x))]
        self.items = items[:limit] if limit is not None else items
        self.images = {it.item_id: torch.from_numpy(x[i]) for i, it in enumerate(self.items)}

    def calibration_items(self) -> list[Item]:
        """No calibration split: the noise laws fitted on data encode text conditions."""
        raise SmoothgenError("smoothing=calibrated and adaptive fit on text conditions; dataset=digits_images "
                             "holds images: use smoothing=gaussian")

    def calibration_conditions(self) -> list[str]:
        return [it.condition for it in self.calibration_items()]
