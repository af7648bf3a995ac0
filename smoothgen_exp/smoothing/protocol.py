"""What the runner asks of a noise law (`smoothing=...`). Torch-free: the types are only named."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Smoothing(Protocol):
    """A `smoothing=...` option: `at(x, model)` gives the noise law used for the item with condition x
    (the option itself for laws fixed before any input is seen; `adaptive` picks one per input)."""

    sigma: float

    def at(self, x: Any, model: Any = None) -> NoiseLaw: ...

    @property
    def l2_scale(self) -> float: ...

    def columns(self) -> dict: ...


@runtime_checkable
class NoiseLaw(Smoothing, Protocol):
    """eta ~ the law; radii in its norm."""

    certificate_valid: bool    # False when the law depends on the input: every certificate is void

    def sample_(self, out: Any, generator: Any, add: Any = None) -> Any:
        """Fill `out` with eta (or add + eta), drawn in float64 and rounded once (SPEC 4)."""

    @property
    def l2_scale(self) -> float:
        """The sigma that turns Phi^-1(p) into a sound L2 radius."""

    def radius(self, p_lower: float) -> float: ...

    def required_p(self, radius: float) -> float: ...

    def columns(self) -> dict: ...


@runtime_checkable
class FittedNoiseLaw(Protocol):
    """A law fitted on the dataset's calibration split (never on evaluation items) before the first item."""

    def setup(self, model: Any, dataset: Any) -> None: ...
