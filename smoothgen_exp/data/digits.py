"""scikit-learn's bundled 8x8 digits, and prompts that ask for a digit.

Images: 1797 real handwritten digits, scaled to [0, 1], split once (stratified, fixed seed) into a
training part and a held-out part. Prompts: one per (template, digit). Templates 0-9 train the
generator; templates 10-15 are paraphrases it never saw and are the default evaluation items.

Calibration split (noise laws fitted on data, `smoothing=calibrated|adaptive`), always whole templates
and never an evaluation item:
- split=heldout: the ten training templates (100 prompts); `calibration_fraction` must stay 0.
- split=train|all: the evaluation items include the training templates, so `calibration_fraction` f > 0
  moves the last ceil(f * T) training templates (T templates in the split: 10 for train, 16 for all)
  out of the evaluation items and into the calibration split; f = 0 keeps them all for evaluation,
  and a noise law that needs a calibration split refuses to run.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from smoothgen_exp.config import configured
from smoothgen_exp.data.base import Item, ItemList
from smoothgen_exp.errors import SmoothgenError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {w}: the digit as a word, {d}: as a numeral.
TEMPLATES = (
    # training templates
    "a handwritten digit {w}",
    "the number {d}",
    "{w}",
    "an image of the digit {d}",
    "a scan of a handwritten {w}",
    "draw a {w}",
    "the numeral {d}",
    "a picture of the number {w}",
    "digit: {d}",
    "write the digit {w}",
    # held-out templates
    "a black and white sketch of a {w}",
    "show me a {d}",
    "a small pixelated {w}",
    "the figure {w}, written by hand",
    "number {d} in handwriting",
    "a blurry {w}",
)
N_TRAIN_TEMPLATES = 10
SPLITS = {
    "train": range(0, N_TRAIN_TEMPLATES),
    "heldout": range(N_TRAIN_TEMPLATES, len(TEMPLATES)),
    "all": range(0, len(TEMPLATES)),
}
HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0


def prompt(template: int, digit: int) -> str:
    return TEMPLATES[template].format(w=WORDS[digit], d=digit)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=HELDOUT_FRACTION,
                                           random_state=SPLIT_SEED, stratify=data.target)
    return images, data.target.astype(np.int64), np.sort(idx_train), np.sort(idx_test)


def digit_images(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Real digit images [N, 1, 8, 8] in [0, 1] and labels for split 'train' or 'heldout'."""
    images, labels, idx_train, idx_test = _digits()
    idx = {"train": idx_train, "heldout": idx_test}[split]
    return images[idx], labels[idx]


def calibration_templates(split: str, calibration_fraction: float = 0.0) -> range:
    """The templates whose prompts calibrate noise laws for `split` (see the module docstring)."""
    if split == "heldout":
        return SPLITS["train"]
    k = math.ceil(calibration_fraction * len(SPLITS[split]))
    return range(N_TRAIN_TEMPLATES - k, N_TRAIN_TEMPLATES)


def template_item(template: int, digit: int) -> Item:
    return Item(f"t{template:02d}-d{digit}", prompt(template, digit), digit)


@configured
class DigitsPrompts(ItemList):
    """Evaluation items: one prompt per (template, digit) in the chosen template split, less the
    calibration templates (split=train|all with calibration_fraction > 0)."""

    num_classes = 10
    class_names = WORDS
    item_kind = "prompts"

    def __init__(self, split: str, limit: int | None, calibration_fraction: float):
        if split not in SPLITS:
            raise SmoothgenError(f"dataset.split={split}: must be one of {', '.join(SPLITS)}")
        if not 0.0 <= calibration_fraction < 1.0:
            raise SmoothgenError(f"dataset.calibration_fraction={calibration_fraction}: must lie in [0, 1)")
        if split == "heldout" and calibration_fraction > 0:
            raise SmoothgenError(f"dataset.calibration_fraction={calibration_fraction}: split=heldout always "
                                 "calibrates on the training templates; the fraction is for split=train|all")
        k = math.ceil(calibration_fraction * len(SPLITS[split])) if split != "heldout" else 0
        if split == "train" and k >= N_TRAIN_TEMPLATES:
            raise SmoothgenError(f"dataset.calibration_fraction={calibration_fraction}: leaves no evaluation "
                                 "templates in split=train")
        if k > N_TRAIN_TEMPLATES:
            raise SmoothgenError(f"dataset.calibration_fraction={calibration_fraction}: would hold out {k} "
                                 f"templates; only the {N_TRAIN_TEMPLATES} training templates calibrate")
        self.split, self.calibration_fraction = split, float(calibration_fraction)
        self.calibration_templates = calibration_templates(split, calibration_fraction)
        held = set(self.calibration_templates) if split != "heldout" else set()
        items = [template_item(t, d) for t in SPLITS[split] if t not in held for d in range(10)]
        self.items = items[:limit] if limit is not None else items

    def calibration_items(self) -> list[Item]:
        """Prompts for fitting noise laws: whole templates, never evaluation items."""
        if self.split != "heldout" and self.calibration_fraction == 0:
            raise SmoothgenError(f"dataset=digits_prompts split={self.split} evaluates the training templates, "
                                 "the calibration prompts of split=heldout: set dataset.calibration_fraction "
                                 "(e.g. 0.2) to hold templates out for calibration, or use split=heldout")
        return [template_item(t, d) for t in self.calibration_templates for d in range(10)]

    def calibration_conditions(self) -> list[str]:
        return [it.condition for it in self.calibration_items()]
