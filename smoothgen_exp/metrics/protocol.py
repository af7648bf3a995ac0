"""What the runner asks of a quality metric set (`metrics=...`). Torch-free."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Metrics(Protocol):
    """Per item: {"baseline": columns, "smoothed": columns}; per run: summary keys (metric_*, retention_*)."""

    enabled: bool

    def setup(self, oracle: Any, dataset: Any, model: Any, reference: bool = True) -> None: ...

    def item(self, ctx: Any, aggregator: Any, aggregated: dict) -> dict: ...

    def summary(self, records: Any) -> dict: ...
