"""scikit-learn's bundled 8x8 digits, and prompts that ask for a digit.

Images: 1797 real handwritten digits, scaled to [0, 1], split once (stratified, fixed seed) into a
training part and a held-out part. Prompts: one per (template, digit). Templates 0-9 train the
generator; templates 10-15 are paraphrases it never saw and are the default evaluation items.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from smoothgen_exp.data.base import Item, ItemList

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


class DigitsPrompts(ItemList):
    """Evaluation items: one prompt per (template, digit) in the chosen template split."""

    num_classes = 10

    def __init__(self, split: str = "heldout", limit: int | None = None):
        items = [Item(f"t{t:02d}-d{d}", prompt(t, d), d) for t in SPLITS[split] for d in range(10)]
        self.items = items[:limit] if limit is not None else items

    def calibration_conditions(self) -> list[str]:
        """Prompts for fitting noise laws: the training templates, never the evaluation items."""
        return [prompt(t, d) for t in SPLITS["train"] for d in range(10)]
