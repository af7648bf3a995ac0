"""What the runner asks of an aggregator (`aggregator=...`). Torch-free."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Aggregator(Protocol):
    """n noisy generations -> the smoothed output. `aggregate(ctx)` returns (row columns, including
    `smoothed_prediction`, and the smoothed output itself for previews and metrics)."""

    n: int

    def aggregate(self, ctx: Any) -> tuple[dict, Any]: ...
