"""What the runner asks of an attack (`attack=...`). Torch-free."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Attack(Protocol):
    """The same budget against the baseline and the smoothed variant. `run` returns row columns plus
    `clean_output`, `attacked_output` and `attacked_condition` (popped by the runner)."""

    enabled: bool
    name: str
    white_box: bool            # needs gradients through the generator (Generator.differentiable)
    eval_n: int
    eval_alpha: float

    def run(self, ctx: Any, variant: str, reference: int) -> dict: ...
