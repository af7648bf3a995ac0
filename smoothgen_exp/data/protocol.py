"""What the runner asks of a dataset (`dataset=...`). Torch-free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from smoothgen_exp.data.base import Item


@runtime_checkable
class Dataset(Protocol):
    """Evaluation items: (item_id, condition, label), label -1 for none.

    Optional, on the class: `class_names`, what its labels index (a tuple, or a function of the dataset's
    config returning one, None for no labels); the oracle's classes must begin with them (`checks`)."""

    num_classes: int
    item_kind: str             # "prompts" | "images" | "latent seeds": the models that read them (`reads`)

    def __iter__(self) -> Iterator[Item]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class CalibrationSplit(Protocol):
    """Items held out of the evaluation items, for noise laws fitted on data (`smoothing=calibrated`)."""

    def calibration_items(self) -> list[Item]: ...
