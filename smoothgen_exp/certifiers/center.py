"""certifier=center: center smoothing (Kumar & Goldstein 2021) for generations under any metric.

The smoothed output is the centre of a small ball holding more than half of the law of G(x + eta).
For ||delta|| <= eps the centre moves at most eps_out in the output metric. Steps and parameters follow
the paper and its reference code (`compute_center_hd`):
1. centre: `n_centers` candidate generations; each one's median distance to n0 further samples (the
   lower median, the ceil(n0/2)-th smallest); the candidate with the smallest median is the centre c,
   that median is r.
2. check (fresh n0 samples): delta_1 = sqrt(ln(2/alpha_1)/(2 n0)); the centre is kept when delta_1 <=
   delta and frac_within_r - delta_1 > 1/2 - delta, else the item abstains.
3. certificate (fresh n samples): q = Phi(Phi^-1(1/2 + delta) + eps/sigma); R = D_(k), the k-th smallest
   of the n distances D = d(c, G(x + eta)), with k the smallest rank such that P(Binom(n, q) >= k) <=
   alpha_2 / |eps_grid| (`stats.order_statistic_rank`). Then P(D <= R) >= q with probability >= 1 -
   alpha_2 / |eps_grid| for each eps, with or without ties and atoms: R < Q_q (the q-quantile) needs k
   draws below Q_q, a Binom(n, P(D < Q_q)) count with P(D < Q_q) <= q. This exact binomial order
   statistic replaces the paper's Hoeffding slack, which is valid but several times more conservative.
   eps_out = 3 R; no certificate (inf) at eps when no rank k <= n qualifies, and a row with no finite
   eps_out at all abstains (it is not `certified`, though its check passed: `bound_center_ok`).

Why eps_out holds, and what alpha pays for. Let x' be within eps of x and c' the centre the procedure
computes at x' (with its own draws) when it does not abstain. Unless one of these fails:
  (a) at x, some eps's R: probability <= alpha_2 (alpha_2 / |eps_grid| each, union bound);
  (b) at x', c''s check passes although its ball B(c', r') holds <= 1/2 - delta: <= alpha_1 / 2
      (one-sided Hoeffding with delta_1);
  (c) at x', no candidate lands in B(c, R), which holds >= 1/2 + delta at x' by (a) and the Gaussian
      shift (q is chosen so): <= (1/2 - delta)^n_centers;
  (d) at x', a candidate z lands in B(c, R) but fewer than half of the n0 selection samples lie within
      2R of z (B(z, 2R) contains B(c, R)): <= exp(-2 n0 delta^2) <= alpha_1 / 2, since the check
      passes only when delta_1 <= delta;
B(c, R) and B(c', r') hold more than 1 together at x', so they meet, and r' <= 2R (z's median):
d(c, c') <= R + r' <= 3R = eps_out. So alpha_1 = alpha_2 = (alpha - (1/2 - delta)^n_centers) / 2, and
n_centers must keep (1/2 - delta)^n_centers below alpha / 2 (reviewed: with 5 candidates at alpha = 0.01
a toy certified eps_out = 0 for a centre that moves by 10 in 1.3% of runs).
Steps (b)-(d) are probabilities over the draws at x', taken independent of x' (review): the runner seeds
every stream by (seed, item_id, stream), so an attacker who knows the seed and picks x' after seeing
those draws is outside the guarantee, as for any randomized certificate; the seed is part of the secret.
The smoothing error d(c, G(x)) is reported next to it. Only distances are kept, never the n outputs.
`metric`: `l2` in output space, or `feature` (L2 between the oracle's features).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from smoothgen_exp.certifiers.base import BoundCertifier, eps_col
from smoothgen_exp.certifiers.semantic import collect
from smoothgen_exp.config import configured
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.stats import order_statistic_rank

RADIUS_COEFF = 3.0


def quantile_upper(values: np.ndarray, q: float, alpha: float) -> float:
    """Upper confidence bound (level alpha) on the q-quantile of the law the i.i.d. `values` come from:
    their k-th smallest, k = `order_statistic_rank(n, q, alpha)`; inf when no rank qualifies."""
    k = order_statistic_rank(len(values), q, alpha)
    if k is None:
        return math.inf
    return float(np.partition(np.asarray(values, dtype=float), k - 1)[k - 1])


@configured
class CenterCertifier(BoundCertifier):
    name = "center"

    @staticmethod
    def requires(conf) -> dict:
        """What the metric measures distances between (checks.check_components_fit)."""
        return {"oracle": "output features"} if conf.metric == "feature" else {"model": "tensor outputs (images or features)"}

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 eps_grid: tuple, n_centers: int, delta: float,
                 metric: str):
        super().__init__(n0, n, alpha, batch_size, eps_grid)
        self.n_centers = int(n_centers)
        self.delta, self.metric = float(delta), metric
        self.alpha_miss = (0.5 - self.delta) ** self.n_centers      # (c): no candidate in the ball
        if self.alpha_miss >= self.alpha / 2:
            need = math.ceil(math.log(self.alpha / 2) / math.log(0.5 - self.delta) + 1e-9)
            raise SmoothgenError(f"certifier.n_centers={self.n_centers}: (1/2 - delta)^n_centers = {self.alpha_miss:.3g}, "
                                 f"the chance that no candidate centre is good, must stay below alpha/2 = "
                                 f"{self.alpha / 2:g}; use n_centers >= {need}")
        # the paper splits alpha between steps 2 and 3; the candidates' miss comes off first
        self.alpha_1 = self.alpha_2 = (self.alpha - self.alpha_miss) / 2.0
        self.delta_1 = math.sqrt(math.log(2.0 / self.alpha_1) / (2.0 * self.n0))      # the check's slack
        if self.delta_1 > self.delta:                                # the check could never pass
            need = math.ceil(math.log(2.0 / self.alpha_1) / (2.0 * self.delta ** 2))
            raise SmoothgenError(f"certifier.n0={self.n0}: the centre check needs delta_1 = sqrt(ln(2/alpha_1)/(2 n0)) "
                                 f"= {self.delta_1:.4g} <= delta = {self.delta:g}, so every item would abstain; use "
                                 f"certifier.n0 >= {need} or a larger certifier.delta")

    def eps_out(self, dist: np.ndarray, sigma: float) -> dict:
        """eps_out at every eps of the grid from the certificate distances, each quantile bound at
        alpha_2 / |eps_grid| so that all of them hold together with probability >= 1 - alpha_2."""
        level = self.alpha_2 / max(len(self.eps_grid), 1)
        out = {}
        for eps in self.eps_grid:
            if eps > 0 and sigma <= 0:       # no noise: nothing moves the centre's ball (no certificate)
                out[eps_col("bound_eps_out", eps)] = math.inf
                continue
            q = float(norm.cdf(norm.ppf(0.5 + self.delta) + (eps / sigma if eps > 0 else 0.0)))
            out[eps_col("bound_eps_out", eps)] = RADIUS_COEFF * quantile_upper(dist, q, level)
        return out

    def embed(self, ctx, outputs) -> torch.Tensor:
        if self.metric == "feature":
            return ctx.oracle.features(outputs).double()
        return outputs.reshape(len(outputs), -1).double()

    def distances(self, ctx, center: torch.Tensor, stream: str, num: int) -> np.ndarray:
        return torch.cat([torch.cdist(self.embed(ctx, out), center) for out in ctx.outputs(num, stream)]
                         ).cpu().numpy()

    @torch.inference_mode()
    def _certify(self, ctx) -> dict:
        candidates = self.embed(ctx, collect(ctx.outputs(self.n_centers, "center/candidates")))
        lower_median = math.ceil(self.n0 / 2) - 1            # (d) needs the ceil(n0/2)-th smallest
        medians = np.partition(self.distances(ctx, candidates, "center/select", self.n0), lower_median,
                               axis=0)[lower_median]
        best = int(np.argmin(medians))
        center, r = candidates[best:best + 1], float(medians[best])
        frac = float(np.mean(self.distances(ctx, center, "center/check", self.n0)[:, 0] <= r))
        # delta_1 <= delta holds by construction; strict: (b) must leave more than 1/2 - delta
        good = frac - self.delta_1 > 0.5 - self.delta
        baseline = self.embed(ctx, ctx.baseline_output()[None])
        row = {"bound_center_ok": good, "diag_center_radius": r, "diag_center_frac": frac,
               "diag_smoothing_error": float(torch.dist(center[0], baseline[0])),
               "certified": good, "abstained": not good,
               "abstain_reason": "" if good else "center check failed (the ball holds too little)",
               "samples_used": self.n_centers + 2 * self.n0 + (self.n if good else 0)}
        if not good:
            return {**row, **{eps_col("bound_eps_out", e): math.nan for e in self.eps_grid}}
        dist = self.distances(ctx, center, "center/certify", self.n)[:, 0]
        bounds = self.eps_out(dist, float(ctx.noise.l2_scale))
        if bounds and not any(math.isfinite(b) for b in bounds.values()):   # n too few for every quantile
            row.update(certified=False, abstained=True,
                       abstain_reason=f"no finite bound: certifier.n={self.n} is too few samples for the quantile")
        return {**row, **bounds}
