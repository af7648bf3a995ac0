"""booster=none: the encoder as it is."""

from __future__ import annotations

from smoothgen_exp.config import configured


@configured
class NoBooster:
    enabled, name = False, "none"

    def __init__(self, *, cache_dir: str = "outputs/cache", device=None):
        pass

    def around(self, encoder, sigma: float, encoder_config: dict):
        return encoder
