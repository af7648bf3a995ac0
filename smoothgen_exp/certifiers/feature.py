"""certifier=feature (SPEC C4): a certified cosine bound for a smoothed, unit-normalised encoder.

f = unit-normalised features of a generation (default: the digit oracle's penultimate layer; MiniLM for
text); F(x) = E[f(G(x + eta))]. The direction u is the normalised mean of f over the n0 selection
samples. The score s(x') = (1 + <F(x'), u>)/2 is a smoothed [0, 1]-valued function, so
Phi^-1(s) is (1/sigma)-Lipschitz; a lower bound s_lower from the n fresh per-sample scores (`bound`:
`betting`, Waudby-Smith & Ramdas, the default and the tightest; `bernstein`, Maurer & Pontil; or
`hoeffding`) gives, with probability >= 1 - alpha, for every ||delta|| <= eps

    <F(x + delta), u> >= b(eps) = 2 Phi(Phi^-1(s_lower) - eps/sigma) - 1.

b(eps) bounds an inner product. It bounds the cosine only where it is positive: since ||F|| <= 1,
b > 0 gives cos(F, u) = <F, u>/||F|| >= <F, u> >= b, while b <= 0 says nothing about the cosine (the
smoothed feature F = -0.4 u meets <F, u> >= -0.5 with cosine -1). So the cosine columns
`bound_cos_lower` (eps = 0) and `bound_fcsb_eps*` hold b where b > 0 and NaN ("no cosine certified at
this eps") elsewhere: clamping at 0 would print "cos >= 0", which nothing supports. `bound_s_lower`
keeps the inner-product information (b = 2 s_lower - 1 at eps = 0). `radius` is the largest eps for
which b >= cos_min, and cos_min must lie in [0, 1) for the same reason.
`diag_robustness_score` is a diagnostic, not a bound: the mean of (1 + cos(f(x + eta), f(x)))/2 over the
n estimation samples against the feature of the baseline generation (at the clean input): the Gaussian
robustness score S(x) that a Gaussian Smoothness Booster (booster=gsb) raises.
Only the n scalar scores are kept (float64), never the n features or outputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from smoothgen_exp.certifiers.base import BoundCertifier, eps_col
from smoothgen_exp.config import configured
from smoothgen_exp.context import batch_of_one
from smoothgen_exp.stats import MEAN_BOUNDS, fcsb, fcsb_radius, max_mean_lower, mean_lower


def cosine_or_nan(inner_lower: float) -> float:
    """A lower bound b on <F, u> (||F|| <= 1) as a cosine bound: b where b > 0, NaN (nothing certified) else."""
    return float(inner_lower) if inner_lower > 0 else math.nan


@configured
class FeatureCertifier(BoundCertifier):
    name = "feature"
    requires = {"oracle": "output features"}
    certifies = "cosine"

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 eps_grid: tuple, bound: str, cos_min: float):
        super().__init__(n0, n, alpha, batch_size, eps_grid)
        if bound not in MEAN_BOUNDS:
            raise ValueError(f"certifier.bound={bound!r} must be one of {', '.join(MEAN_BOUNDS)}")
        if not 0.0 <= float(cos_min) < 1.0:
            raise ValueError(f"certifier.cos_min={cos_min} must lie in [0, 1): the FCSB bounds <F, u>, which "
                             "bounds the cosine only where it is positive")
        self.bound, self.cos_min = bound, float(cos_min)
        self.required_lower = (1.0 + self.cos_min) / 2.0      # s_lower above this gives radius > 0

    def max_lower_bound(self, n: int) -> float:
        return max_mean_lower(n, self.alpha, self.bound)

    @staticmethod
    def features(ctx, outputs) -> torch.Tensor:
        return F.normalize(ctx.oracle.features(outputs).double(), dim=-1)

    @torch.inference_mode()
    def _certify(self, ctx) -> dict:
        direction = sum(self.features(ctx, out).sum(0) for out in ctx.outputs(self.n0, "select"))
        u = F.normalize(direction, dim=0)
        ctx.evidence["direction"] = u
        # diagnostic: the Gaussian robustness score S(x) = E[(1 + cos(f(x + eta), f(x)))/2] of the feature
        # samples against the feature of the baseline generation (at the clean input), on the same n samples
        clean = self.features(ctx, batch_of_one(ctx.baseline_output()))[0]
        scores, robustness = [], []
        for out in ctx.outputs(self.n, "estimate"):
            feats = self.features(ctx, out)
            scores.append(((1.0 + feats @ u) / 2.0).cpu().numpy())
            robustness.append(((1.0 + feats @ clean) / 2.0).cpu().numpy())
        scores = np.clip(np.concatenate(scores).astype(np.float64), 0.0, 1.0)   # |<f, u>| <= 1 up to rounding
        mean = float(scores.mean())
        s_lower = mean_lower(scores, self.alpha, self.bound)
        sigma = ctx.noise.l2_scale
        radius = fcsb_radius(s_lower, sigma, self.cos_min)
        row = {"diag_s_hat": mean, "diag_robustness_score": float(np.concatenate(robustness).mean()),
               "bound_s_lower": s_lower, "bound_cos_lower": cosine_or_nan(2 * s_lower - 1),
               "radius": radius, "certified": radius > 0, "abstained": radius <= 0,
               "abstain_reason": "" if radius > 0 else f"cosine bound below {self.cos_min}",
               "samples_used": self.n0 + len(scores)}
        for eps in self.eps_grid:
            row[eps_col("bound_fcsb", eps)] = cosine_or_nan(fcsb(s_lower, eps, sigma))
        return row
