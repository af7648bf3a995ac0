"""attack=photoguard: PhotoGuard's encoder attack (Salman et al. 2023, "Raising the cost of malicious
AI-powered image editing") on a VAE generator (model=tiny_vae, sd_vae).

L-inf projected sign steps on the input image that pull its latent E(x') towards the latent of a target
image, a flat grey image of level `target_grey` (objective `latent`):

    x_{k+1} = clip_[0,1]( x + clip_eps( x_k - x - a_k sign(grad ||E(x_k) - E(t)||^2) ) ),
    a_k = step_size * (1 - k / steps)  (decay=linear; constant: a_k = step_size)

from x itself (random_start=false, as PhotoGuard), `steps` = 200 and eps = 16/255 by default; step_size is
in [0, 1] pixel units (0.005 is PhotoGuard's 0.01 in Stable Diffusion's [-1, 1] units). Against the
smoothed VAE the objective is its expectation over m noise draws per step (EOT): the mean squared latent
distance of the noisy copies. `objective=reconstruction` runs the same schedule on the reconstruction
error ||out(x') - x||^2 instead (the SRL-VAE paper's attack on the reconstruction). The last iterate is
returned, always inside the ball and the image range.
"""

from __future__ import annotations

import logging

import torch

from smoothgen_exp.attacks.base import Attack, Victim
from smoothgen_exp.attacks.budget import Budget, random_in_ball
from smoothgen_exp.config import configured

log = logging.getLogger(__name__)


@configured
class PhotoGuard(Attack):
    name = "photoguard"
    white_box = True
    edits = "image"              # pixels in the image range (checks.check_attack_objective_fits_model)

    def __init__(self, steps: int, step_size: float, decay: str, target_grey: float, random_start: bool,
                 **kwargs):
        super().__init__(**kwargs)
        self.steps, self.step_size, self.decay = int(steps), float(step_size), decay
        self.target_grey, self.random_start = float(target_grey), bool(random_start)
        self._short = set()                # budgets the step schedule cannot reach, said once each

    def reach(self) -> float:
        """The farthest the schedule's steps can move a pixel from the start: sum_k a_k."""
        return sum(self.step_length(k) for k in range(self.steps))

    def step_length(self, k: int) -> float:
        return self.step_size * (1.0 - k / self.steps) if self.decay == "linear" else self.step_size

    @torch.enable_grad()
    def search(self, victim: Victim, budget: Budget) -> torch.Tensor:
        x = victim.x
        lo, hi = victim.ctx.model.output_range
        if self.reach() < budget.eps and budget.eps not in self._short:     # a table would label the budget
            self._short.add(budget.eps)
            log.warning("attack=photoguard: %d steps from step_size %g (%s decay) move a pixel at most %.4g, "
                        "less than attack.eps=%.4g: the attack cannot use its budget; raise attack.step_size or "
                        "attack.steps", self.steps, self.step_size, self.decay, self.reach(), budget.eps)
        if self.objective == "latent":
            victim.set_target_image(torch.full_like(x, self.target_grey))
        delta = torch.zeros_like(x)
        if self.random_start:
            delta = random_in_ball((1, x.numel()), budget, victim.ctx.generator("attack/photoguard/start"), x)
        delta = ((x + delta.reshape(x.shape)).clamp(lo, hi) - x).detach()
        for k in range(self.steps):
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(victim.objective((x + delta)[None]).sum(), delta)
            delta = (delta + self.step_length(k) * grad.sign()).clamp(-budget.eps, budget.eps)
            delta = ((x + delta).clamp(lo, hi) - x).detach()       # a valid image: inside the range
        return (x + delta).detach()
