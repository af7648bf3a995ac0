"""What the runner asks of a booster (`booster=...`): a trained plug-in around a frozen feature encoder.
Torch-free."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Booster(Protocol):
    """`around(encoder, sigma, encoder_config)` returns the model the runner certifies: the encoder itself
    (booster=none), or a fixed function of the noisy input around it, so every certificate of the smoothed
    encoder (`certifier=feature`, FCSB) holds unchanged for the boosted one. `encoder_config` (the model's
    resolved config) keys the booster's weights to the encoder they were trained around."""

    enabled: bool
    name: str

    def around(self, encoder: Any, sigma: float, encoder_config: dict) -> Any: ...
