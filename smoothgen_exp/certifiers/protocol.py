"""What the runner asks of a certifier (`certifier=...`); `certifiers.base.Certifier` implements it. Torch-free."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class CertifierProtocol(Protocol):
    """Certificates of the smoothed generator at one item, with probability >= `confidence`."""

    name: str
    n0: int
    n: int
    alpha: float
    batch_size: int
    certifies: str | None      # class | answer | cosine | sequence: what certifiers.check tests at z
    required_lower: float      # the lower bound a radius > 0 needs

    @property
    def confidence(self) -> float: ...

    def certify(self, ctx: Any) -> dict: ...

    def run_columns(self) -> dict: ...

    def max_lower_bound(self, n: int) -> float | None: ...
