"""dataset=gan_latents: "image seeds" (SmoothGen): each item is one latent seed of a GAN, and a class too
for a class-conditional one.

Item j (j = 0 .. count-1) is latent seed `first_seed + j`; with `classes`, it also asks for class
`classes[j % len(classes)]`. Its condition is the text "latent seed 17" or "class 207, latent seed 17", and
the model draws the latent from that seed under its own prior (`latent_seeds` reads the conditions back),
so one dataset serves generators of any latent size or truncation: `encode` returns the latent itself
(and the class embedding), the space the noise is added to. Items carry no label (-1): a generator's
output has no ground-truth class to compare with (`oracle=none`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from smoothgen_exp.config import configured
from smoothgen_exp.data.base import Item, ItemList
from smoothgen_exp.errors import SmoothgenError

_CONDITION = re.compile(r"(?:class (\d+), )?latent seed (\d+)")


def latent_condition(seed: int, cls: int | None = None) -> str:
    return f"latent seed {seed}" if cls is None else f"class {cls}, latent seed {seed}"


def latent_seeds(conditions: Sequence[str], model: str) -> tuple[list[int], list[int | None]]:
    """(seeds, classes) of conditions written by `latent_condition`; anything else fails in one line."""
    seeds, classes = [], []
    for condition in conditions:
        match = _CONDITION.fullmatch(str(condition))
        if match is None:
            raise SmoothgenError(f"model={model}: its conditions are latent seeds (dataset=gan_latents), "
                                 f"not {str(condition)[:60]!r}")
        classes.append(None if match.group(1) is None else int(match.group(1)))
        seeds.append(int(match.group(2)))
    return seeds, classes


@configured
class GANLatents(ItemList):
    num_classes = 0           # no labels: every item's label is -1
    item_kind = "latent seeds"
    class_names = None        # no labels

    def __init__(self, count: int, first_seed: int, classes: list[int] | None, limit: int | None):
        classes = list(classes) if classes else None
        self.items = []
        for j in range(count):
            seed, cls = first_seed + j, None if classes is None else int(classes[j % len(classes)])
            item_id = f"z{seed:05d}" if cls is None else f"c{cls:04d}_z{seed:05d}"
            self.items.append(Item(item_id, latent_condition(seed, cls), -1))
        if limit is not None:
            self.items = self.items[:limit]

    def calibration_items(self) -> list[Item]:
        raise SmoothgenError("dataset=gan_latents has no calibration split for smoothing=calibrated|adaptive: "
                             "use smoothing=gaussian")
