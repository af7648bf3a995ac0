"""An attack's budget: the eps-ball of its norm, the projection onto it, and uniform draws from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class Budget:
    eps: float
    norm: str                # l2 | linf


def project(delta: torch.Tensor, budget: Budget) -> torch.Tensor:
    """Project perturbations [B, d] onto the eps-ball of the budget's norm."""
    if budget.norm == "linf":
        return delta.clamp(-budget.eps, budget.eps)
    norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return delta * (budget.eps / norms).clamp(max=1.0)


def random_in_ball(shape: tuple, budget: Budget, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform draws from the eps-ball (L2: uniform direction, radius eps U^(1/d); Linf: the cube)."""
    if budget.norm == "linf":
        return (torch.rand(shape, generator=gen, device=like.device, dtype=like.dtype) * 2 - 1) * budget.eps
    direction = F.normalize(torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype), dim=1)
    radius = torch.rand((shape[0], 1), generator=gen, device=like.device, dtype=like.dtype) ** (1 / shape[1])
    return direction * radius * budget.eps
