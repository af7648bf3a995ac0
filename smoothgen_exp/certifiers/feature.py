"""certifier=feature (SPEC C4): a certified cosine bound for a smoothed, unit-normalised encoder.

f = unit-normalised features of a generation (default: the digit oracle's penultimate layer; MiniLM for
text); F(x) = E[f(G(x + eta))]. The direction u is the normalised mean of f over the n0 selection
samples. The score s(x') = (1 + <F(x'), u>)/2 is a smoothed [0, 1]-valued function, so
Phi^-1(s) is (1/sigma)-Lipschitz; a lower bound s_lower from n fresh samples (empirical Bernstein,
Maurer & Pontil, or Hoeffding) gives for ||delta|| <= eps

    cos(F(x + delta), u) >= <F(x + delta), u> >= 2 Phi(Phi^-1(s_lower) - eps/sigma) - 1   (FCSB)

(the first step needs the right side to be positive, since ||F|| <= 1). `radius` is the largest eps
for which the bound is >= cos_min (0.5 by default).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from smoothgen_exp.certifiers.base import DEFAULT_EPS_GRID, BoundCertifier, eps_col
from smoothgen_exp.stats import empirical_bernstein_lower, fcsb, fcsb_radius, hoeffding_lower


class FeatureCertifier(BoundCertifier):
    name = "feature"

    def __init__(self, n0: int = 100, n: int = 1000, alpha: float = 0.001, batch_size: int | str = 1000,
                 eps_grid: tuple = DEFAULT_EPS_GRID, bound: str = "bernstein", cos_min: float = 0.5):
        super().__init__(n0, n, alpha, batch_size, eps_grid)
        self.bound, self.cos_min = bound, float(cos_min)

    @staticmethod
    def features(ctx, outputs) -> torch.Tensor:
        return F.normalize(ctx.oracle.features(outputs).double(), dim=-1)

    @torch.inference_mode()
    def _certify(self, ctx) -> dict:
        direction = sum(self.features(ctx, out).sum(0) for out in ctx.outputs(self.n0, "select"))
        u = F.normalize(direction, dim=0)
        s_sum = s_sq = 0.0
        for out in ctx.outputs(self.n, "estimate"):
            s = (1.0 + self.features(ctx, out) @ u) / 2.0
            s_sum += float(s.sum())
            s_sq += float((s * s).sum())
        mean = s_sum / self.n
        var = max(0.0, (s_sq - self.n * mean * mean) / max(1, self.n - 1))
        if self.bound == "bernstein":
            s_lower = empirical_bernstein_lower(mean, var, self.n, self.alpha)
        else:
            s_lower = hoeffding_lower(mean, self.n, self.alpha)
        sigma = ctx.noise.l2_scale
        radius = fcsb_radius(s_lower, sigma, self.cos_min)
        row = {"bound_s_hat": mean, "bound_s_lower": s_lower, "bound_cos_lower": 2 * s_lower - 1,
               "radius": radius, "certified": radius > 0, "abstained": radius <= 0,
               "abstain_reason": "" if radius > 0 else f"cosine bound below {self.cos_min}",
               "samples_used": self.n0 + self.n}
        for eps in self.eps_grid:
            row[eps_col("bound_fcsb", eps)] = fcsb(s_lower, eps, sigma)
        return row
