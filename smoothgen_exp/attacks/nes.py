"""attack=nes: black-box Natural Evolution Strategies (Ilyas et al. 2018) with a query budget.

Each iteration estimates the gradient of the objective from `population` antithetic pairs
x' +- s u_i (u_i ~ N(0, I), s = fd_scale * eps / sqrt(d), so ||s u|| ~ fd_scale * eps):

    g = sum_i (L(x' + s u_i) - L(x' - s u_i)) u_i / (2 s population),

with the pair differences standardised (fitness shaping: invariant to the objective's scale). Steps use
momentum, are normalised (L2) or signed (Linf), have length lr * eps, and are projected onto the ball;
an image condition's probes and iterates are clipped to [0, 1] (only valid images are queried).
The search starts at a random point of the ball (`random_start`): objectives that are symmetric around
the clean condition, such as ||G(x') - G(x)||, have antithetic differences of exactly zero there.
The best point seen is returned. Every candidate evaluation counts as one query.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.attacks.base import Attack, Victim
from smoothgen_exp.attacks.budget import Budget, project, random_in_ball
from smoothgen_exp.config import configured


@configured
class NES(Attack):
    name = "nes"

    def __init__(self, queries: int, population: int, fd_scale: float, lr: float,
                 momentum: float, random_start: bool, **kwargs):
        super().__init__(**kwargs)
        self.queries, self.population, self.random_start = int(queries), int(population), bool(random_start)
        self.fd_scale, self.lr, self.momentum = float(fd_scale), float(lr), float(momentum)

    @torch.no_grad()
    def search(self, victim: Victim, budget: Budget) -> torch.Tensor:
        x = victim.x.reshape(-1)
        d = x.numel()
        gen = victim.ctx.generator("attack/nes")
        s = self.fd_scale * budget.eps / math.sqrt(d)
        velocity = torch.zeros_like(x)
        best_delta, best_value = torch.zeros_like(x), float(victim.objective(x[None]))
        delta = random_in_ball((1, d), budget, gen, x)[0] if self.random_start else torch.zeros_like(x)
        delta = victim.inside(x + delta) - x
        while victim.queries + 2 * self.population + 1 <= self.queries:
            u = torch.randn((self.population, d), generator=gen, device=x.device, dtype=x.dtype)
            values = victim.objective(victim.inside(torch.cat([x + delta + s * u, x + delta - s * u])))
            diff = values[: self.population] - values[self.population:]
            diff = diff / diff.std().clamp_min(1e-12) if self.population > 1 else diff.sign()
            grad = (diff[:, None] * u).sum(0) / (2 * self.population)
            velocity = self.momentum * velocity + (1 - self.momentum) * grad
            step = velocity.sign() if budget.norm == "linf" else velocity / velocity.norm().clamp_min(1e-12)
            delta = victim.inside(x + project((delta + self.lr * budget.eps * step)[None], budget)[0]) - x
            value = float(victim.objective((x + delta)[None]))
            if value > best_value:
                best_delta, best_value = delta.clone(), value
        return (x + best_delta).reshape(victim.x.shape)
