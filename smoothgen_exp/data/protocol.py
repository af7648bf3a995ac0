"""What the runner asks of a dataset (`dataset=...`). Torch-free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from smoothgen_exp.data.base import Item


@runtime_checkable
class Dataset(Protocol):
    """Evaluation items: (item_id, condition, label), label -1 for none."""

    num_classes: int

    def __iter__(self) -> Iterator[Item]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class CalibrationSplit(Protocol):
    """Items held out of the evaluation items, for noise laws fitted on data (`smoothing=calibrated`)."""

    def calibration_items(self) -> list[Item]: ...
