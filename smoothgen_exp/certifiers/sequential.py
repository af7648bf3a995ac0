"""certifier=sequential: certify a target radius r with as few samples as the evidence allows (SPEC 6).

After n0 selection samples choose c_A, the estimation samples X_i = 1[f(x + eta_i) = c_A] arrive in
batches. Certifying r needs p_A > p* = the probability whose radius is r (Phi(r/sigma) for isotropic
noise). Two betting processes run side by side (Waudby-Smith & Ramdas 2023):

    K_t  = prod_i (1 + lam_i (X_i - p*)),  lam_i in [0, 1/p*)        (bets that p_A > p*)
    K'_t = prod_i (1 + mu_i (p* - X_i)),   mu_i in [0, 1/(1 - p*))    (bets that p_A < p*)

with bets fixed before each batch from the data seen so far (predictable). If p_A <= p*, K is a
non-negative supermartingale, so by Ville's inequality P(exists t: K_t >= 1/alpha) <= alpha: stopping
and certifying the first time K_t >= 1/alpha keeps the 1 - alpha guarantee at any stopping time. The
item gives up when K'_t >= 1/alpha (then p_A < p* is likely) or when n samples are spent. Giving up only
abstains, so it needs no guarantee. `samples_used` counts every generation drawn.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.core import ABSTAIN, noisy_batches

MAX_FRACTION = 0.9   # bet at most this fraction of the largest safe stake (avoids ruin on one miss)


def kelly_bet(p_hat: float, p_star: float, up: bool) -> float:
    """Clipped Kelly stake for a Bernoulli bet against p*: (p - p*)/(p*(1 - p*)) in the favoured direction."""
    if up:
        return min(max((p_hat - p_star) / (p_star * (1 - p_star)), 0.0), MAX_FRACTION / p_star)
    return min(max((p_star - p_hat) / (p_star * (1 - p_star)), 0.0), MAX_FRACTION / (1 - p_star))


class SequentialCertifier(Certifier):
    name = "sequential"

    def __init__(self, n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch_size: int = 100,
                 target_radius: float = 0.1):
        super().__init__(n0, n, alpha, batch_size)
        self.target_radius = float(target_radius)

    @torch.inference_mode()
    def _certify(self, ctx) -> dict:
        smooth = ctx.smooth("sequential")
        gen = ctx.generator("sequential/noise")
        selection = smooth.sample_counts(ctx.x, self.n0, self.batch_size, gen)
        c_a = int(selection.argmax())
        p_star = ctx.noise.required_p(self.target_radius)
        decision, used, hits = self._run(smooth, ctx.x, gen, c_a, p_star,
                                         prior=(int(selection[c_a]) + 0.5, self.n0 + 1.0))
        certified = decision == "certified"
        return {"prediction": c_a if certified else ABSTAIN, "top_class": c_a, "count": hits,
                "p_required": p_star, "target_radius": self.target_radius,
                "radius": self.target_radius if certified else 0.0, "certified": certified,
                "abstained": not certified, "abstain_reason": "" if certified else decision,
                "sequential_decision": decision, "samples_used": self.n0 + used}

    def _run(self, smooth, x, gen, c_a: int, p_star: float, prior: tuple[float, float]):
        """Feed batches to both betting processes; returns (decision, samples drawn, c_A votes)."""
        threshold = math.log(1.0 / self.alpha)
        log_k = log_k_down = 0.0
        hits_prior, n_prior = prior
        hits = used = 0
        for noisy in noisy_batches(x, self.n, self.batch_size, smooth.noise, gen):
            p_hat = (hits_prior + hits) / (n_prior + used)
            lam, mu = kelly_bet(p_hat, p_star, up=True), kelly_bet(p_hat, p_star, up=False)
            votes = (smooth.base(noisy) == c_a).double()
            path_up = log_k + torch.cumsum(torch.log1p(lam * (votes - p_star)), 0)
            path_down = log_k_down + torch.cumsum(torch.log1p(mu * (p_star - votes)), 0)
            crossed_up = torch.nonzero(path_up >= threshold)
            crossed_down = torch.nonzero(path_down >= threshold)
            used += len(votes)
            hits += int(votes.sum())
            if len(crossed_up):
                return "certified", used, hits
            if len(crossed_down):
                return "gave up: p_A below target", used, hits
            log_k, log_k_down = float(path_up[-1]), float(path_down[-1])
        return "gave up: budget spent", used, hits
