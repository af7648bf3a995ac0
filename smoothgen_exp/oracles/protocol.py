"""What the runner asks of an oracle (`oracle=...`): the base classifier on generations. Torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Oracle(Protocol):
    """Outputs -> classes (a LongTensor [B]); `equivalent` compares outputs to one reference.

    Optional, on the class: `class_names`, a tuple or a function of the oracle's config returning one: the
    names of its classes in index order, checked against the dataset's labels before anything loads."""

    num_classes: int
    has_classes: bool          # False: answers have no ground truth (runs report a certified fraction)

    def classify(self, outputs: Any) -> Any: ...

    def equivalent(self, outputs: Any, reference: Any) -> Any: ...


@runtime_checkable
class FeatureOracle(Oracle, Protocol):
    """An oracle with a feature space (feature certifier, center smoothing with metric=feature)."""

    def features(self, outputs: Sequence[Any] | Any) -> Any: ...
