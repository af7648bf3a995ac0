"""attack=pgd: projected gradient ascent (Madry et al. 2018) in the noised space, L2 or Linf.

Random start in the eps-ball, `steps` steps of size `step_size * eps` (default 2.5/steps), projection
after each, `restarts` independent starts (the last iterate of the best one is returned). Against the smoothed
generator the gradient is that of the expectation-over-transformation soft objective (m noise draws
per step, Salman et al. 2019): the adaptive attack on randomized smoothing.
"""

from __future__ import annotations

import torch

from smoothgen_exp.attacks.base import Attack, Victim
from smoothgen_exp.attacks.budget import Budget, project, random_in_ball
from smoothgen_exp.config import configured


@configured
class PGD(Attack):
    name = "pgd"
    white_box = True          # needs gradients through the generator and the oracle

    def __init__(self, steps: int, restarts: int, step_size: float | None,
                 random_start: bool, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.restarts, self.random_start = int(steps), int(restarts), bool(random_start)
        self.step_size = float(step_size) if step_size is not None else 2.5 / self.steps

    @torch.enable_grad()
    def search(self, victim: Victim, budget: Budget) -> torch.Tensor:
        """The last iterate of each restart; with several restarts, the one whose objective is highest,
        all evaluated in one call (the smoothed objective's m noise draws shared: common random numbers).
        Never the clean point: against the smoothed variant a comparison with it is decided by Monte Carlo
        noise, and the attacked point inside the ball is what the certificate check must see."""
        x = victim.x
        gen = victim.ctx.generator("attack/pgd/start")
        finals = []
        for _ in range(self.restarts):
            delta = random_in_ball((1, x.numel()), budget, gen, x).reshape(x.shape) if self.random_start \
                else torch.zeros_like(x)
            delta = victim.inside(x + delta) - x
            for _ in range(self.steps):
                delta = delta.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(victim.objective((x + delta)[None]).sum(), delta)
                if budget.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / grad.norm().clamp_min(1e-12)
                delta = project((delta + self.step_size * budget.eps * step).reshape(1, -1), budget)
                delta = victim.inside(x + delta.reshape(x.shape)) - x          # a valid condition
            finals.append((x + delta).detach())
        if len(finals) == 1:
            return finals[0]
        with torch.no_grad():
            values = victim.objective(torch.stack(finals))
        return finals[int(values.argmax())]
