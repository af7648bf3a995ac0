"""certifier=distribution (SPEC C3): how far the law of the generations can move, and a harm bound.

For any stochastic generator, P_x (the law of G(x + eta)) is a post-processing of N(x, sigma^2 I), so
for ||delta|| <= eps: TV(P_x, P_{x+delta}) <= 2 Phi(eps / (2 sigma)) - 1 and, outputs lying in a set of
diameter D, W_p(P_x, P_{x+delta}) <= D TV^(1/p). These need no sampling.

Event A = "the oracle's class differs from the prompt's class" (a stand-in for "harmful output"):
n samples give p_upper = CP_upper(k_A, n, alpha), and P_{x+delta}(A) <= Phi(Phi^-1(p_upper) + eps/sigma)
is a certified bound on how far an attacker can raise it.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.certifiers.base import BoundCertifier, eps_col
from smoothgen_exp.certifiers.output_bound import output_geometry
from smoothgen_exp.stats import cp_upper, harm_upper, tv_bound, wp_bound


class DistributionCertifier(BoundCertifier):
    name = "distribution"

    def _certify(self, ctx) -> dict:
        a, b, m = output_geometry(ctx.model)
        diameter, sigma = math.sqrt(m) * (b - a), ctx.noise.l2_scale
        smooth = ctx.smooth("event")
        counts = smooth.sample_counts(ctx.x, self.n, self.batch_size, ctx.generator("event/noise"))
        k_event = int(counts.sum() - counts[ctx.item.label])
        p_upper = cp_upper(k_event, self.n, self.alpha)
        row = {"prediction": int(torch.argmax(counts)), "bound_diameter": diameter,
               "bound_event_count": k_event, "bound_event_p_hat": k_event / self.n,
               "bound_event_p_upper": p_upper, "samples_used": self.n}
        for eps in self.eps_grid:
            row[eps_col("bound_tv", eps)] = tv_bound(eps, sigma)
            row[eps_col("bound_w1", eps)] = wp_bound(eps, sigma, diameter, 1)
            row[eps_col("bound_w2", eps)] = wp_bound(eps, sigma, diameter, 2)
            row[eps_col("bound_harm", eps)] = harm_upper(p_upper, eps, sigma)
        return row
