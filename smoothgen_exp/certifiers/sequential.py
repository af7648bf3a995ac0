"""certifier=sequential: certify a target radius r with as few samples as the evidence allows (SPEC 6).

After n0 selection samples choose c_A, the estimation samples X_i = 1[f(x + eta_i) = c_A] arrive in
batches. Certifying r needs p_A > p* = the probability whose radius is r (Phi(r/sigma) for isotropic
noise). A betting process (Waudby-Smith & Ramdas 2023)

    K_t = prod_i (1 + lam_i (X_i - p*)),  lam_i in [0, 1/p*)   (bets that p_A > p*)

uses stakes fixed before each batch from the data seen so far (predictable; clipped Kelly). If
p_A <= p*, K is a non-negative supermartingale, so by Ville's inequality P(exists t: K_t >= 1/alpha)
<= alpha: certifying the first time K_t >= 1/alpha keeps the 1 - alpha guarantee at any stopping time.

The item gives up (abstains) when certifying within the budget n has become implausible: even at an
optimistic value of p_A, its upper confidence bound p_up at level give_up_alpha, the best growth rate
any bet can have, KL(p_up || p*) per sample, cannot lift log K_t to log(1/alpha) in the samples left.
Abstaining is always sound, so this futility rule needs no guarantee; give_up_alpha only trades
samples on hopeless items against the chance of abandoning one that would have certified.
`samples_used` counts every generation drawn.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.config import configured
from smoothgen_exp.core import ABSTAIN
from smoothgen_exp.packing import Draw, Program, class_counts
from smoothgen_exp.stats import cp_upper

MAX_FRACTION = 0.9   # bet at most this fraction of the largest safe stake (avoids ruin on one miss)


def kelly_bet(p_hat: float, p_star: float) -> float:
    """Clipped Kelly stake for betting that a Bernoulli mean exceeds p*: (p - p*) / (p* (1 - p*))."""
    return min(max((p_hat - p_star) / (p_star * (1 - p_star)), 0.0), MAX_FRACTION / p_star)


def kl_bernoulli(p: float, q: float) -> float:
    """KL(Bern(p) || Bern(q)): the largest expected log-growth per sample of a bet against q."""
    terms = [a * math.log(a / b) for a, b in ((p, q), (1 - p, 1 - q)) if a > 0]
    return sum(terms)


@configured
class SequentialCertifier(Certifier):
    name = "sequential"
    certifies = "class"

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 target_radius: float, give_up_alpha: float):
        super().__init__(n0, n, alpha, batch_size)
        self.target_radius, self.give_up_alpha = float(target_radius), float(give_up_alpha)

    def max_lower_bound(self, n: int) -> float:
        """The largest p* that n estimation samples can certify: every one a hit, each at the largest
        stake MAX_FRACTION / p*, so log K_n = n log(1 + MAX_FRACTION (1 - p*) / p*) must reach log(1/alpha).
        (Optimistic: the stakes of the first batches are smaller. A ceiling, not a prediction.)"""
        g = (self.alpha ** (-1.0 / n) - 1.0) / MAX_FRACTION
        return 1.0 / (1.0 + g)

    def _program(self, ctx) -> Program:
        selection = class_counts(ctx, (yield Draw("sequential", self.n0)))
        c_a = int(selection.argmax())
        p_star = ctx.noise.required_p(self.target_radius)
        decision, used, hits = yield from self._bet(c_a, p_star, prior=(int(selection[c_a]) + 0.5, self.n0 + 1.0))
        certified = decision == "certified"
        return {"prediction": c_a if certified else ABSTAIN, "top_class": c_a, "count": hits,
                "p_required": p_star, "target_radius": self.target_radius,
                "radius": self.target_radius if certified else 0.0, "certified": certified,
                "abstained": not certified, "abstain_reason": "" if certified else decision,
                "sequential_decision": decision, "samples_used": self.n0 + used}

    def _bet(self, c_a: int, p_star: float, prior: tuple[float, float]) -> Program:
        """Bet request by request; returns (decision, samples drawn, c_A votes)."""
        threshold = math.log(1.0 / self.alpha)
        log_k = 0.0
        hits_prior, n_prior = prior
        hits = used = 0
        while used < self.n:
            lam = kelly_bet((hits_prior + hits) / (n_prior + used), p_star)
            k = min(self.batch_size, self.n - used)
            votes = ((yield Draw("sequential", k)).labels == c_a).double()
            path = log_k + torch.cumsum(torch.log1p(lam * (votes - p_star)), 0)
            used += len(votes)
            hits += int(votes.sum())
            if bool((path >= threshold).any()):
                return "certified", used, hits
            log_k = float(path[-1])
            p_up = cp_upper(hits, used, self.give_up_alpha)
            if p_up <= p_star or log_k + (self.n - used) * kl_bernoulli(p_up, p_star) < threshold:
                return "gave up: target out of reach within n", used, hits
        return "gave up: budget spent", used, hits
