"""attack=random_search: the black-box baseline. Candidates on the boundary of the eps-ball (L2: uniform
directions; Linf: random corners), evaluated in batches until the query budget is spent; the best is
returned."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from smoothgen_exp.attacks.base import Attack, Victim
from smoothgen_exp.attacks.budget import Budget
from smoothgen_exp.config import configured


@configured
class RandomSearch(Attack):
    name = "random_search"

    def __init__(self, queries: int, batch: int, **kwargs):
        super().__init__(**kwargs)
        self.queries, self.batch = int(queries), int(batch)

    @torch.no_grad()
    def search(self, victim: Victim, budget: Budget) -> torch.Tensor:
        x = victim.x.reshape(-1)
        gen = victim.ctx.generator("attack/random_search")
        best_z, best_value = x, float(victim.objective(x[None]))
        while victim.queries < self.queries:
            b = min(self.batch, self.queries - victim.queries)
            u = torch.randn((b, x.numel()), generator=gen, device=x.device, dtype=x.dtype)
            step = u.sign() if budget.norm == "linf" else F.normalize(u, dim=1)
            candidates = victim.inside(x + budget.eps * step)
            values = victim.objective(candidates)
            i = int(values.argmax())
            if float(values[i]) > best_value:
                best_z, best_value = candidates[i], float(values[i])
        return best_z.reshape(victim.x.shape)
