"""certifier=center: center smoothing (Kumar & Goldstein 2021) for generations under any metric.

The smoothed output is the centre of a small ball holding more than half of the law of G(x + eta).
For ||delta|| <= eps the centre moves at most eps_out in the output metric. Steps and parameters follow
the paper and its reference code:
1. centre: `n_centers` candidate generations; each one's median distance to n0 further samples; the
   candidate with the smallest median is the centre c, that median is r.
2. check (fresh n0 samples, alpha_1): delta_1 = sqrt(ln(2/alpha_1)/(2 n0)); the centre is kept when
   max(delta_1, 1/2 - (frac_within_r - delta_1)) <= delta, else the item abstains.
3. certificate (fresh n samples, alpha_2): q = Phi(Phi^-1(1/2 + delta) + eps/sigma); R = D_(k), the k-th
   smallest of the n distances D = d(c, G(x + eta)), with k the smallest rank such that
   P(Binom(n, q) >= k) <= alpha_2 (`stats.order_statistic_rank`). Then P(D <= R) >= q with probability
   >= 1 - alpha_2, with or without ties and atoms: R < Q_q (the q-quantile) needs k draws below Q_q, a
   Binom(n, P(D < Q_q)) count with P(D < Q_q) <= q. This exact binomial order statistic replaces the
   paper's Hoeffding slack (empirical (q + sqrt(ln(1/alpha_2)/(2n)))-quantile), which is valid but
   several times more conservative. eps_out = 3 R (3 = 1 + beta for the beta = 2 approximate centre);
   no certificate (inf) at eps when no rank k <= n qualifies (q^n > alpha_2).
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

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 eps_grid: tuple, n_centers: int, delta: float,
                 metric: str):
        super().__init__(n0, n, alpha, batch_size, eps_grid)
        self.n_centers = int(n_centers)
        self.delta, self.metric = float(delta), metric
        self.alpha_1 = self.alpha_2 = self.alpha / 2.0  # the paper splits alpha between steps 2 and 3

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
        medians = np.median(self.distances(ctx, candidates, "center/select", self.n0), axis=0)
        best = int(np.argmin(medians))
        center, r = candidates[best:best + 1], float(medians[best])
        frac = float(np.mean(self.distances(ctx, center, "center/check", self.n0)[:, 0] <= r))
        delta_1 = math.sqrt(math.log(2.0 / self.alpha_1) / (2.0 * self.n0))
        good = max(delta_1, 0.5 - (frac - delta_1)) <= self.delta
        baseline = self.embed(ctx, ctx.baseline_output()[None])
        row = {"bound_center_ok": good, "bound_center_radius": r, "bound_center_frac": frac,
               "bound_smoothing_error": float(torch.dist(center[0], baseline[0])),
               "certified": good, "abstained": not good,
               "abstain_reason": "" if good else "center check failed (max(delta_1, delta_2) > delta)",
               "samples_used": self.n_centers + 2 * self.n0 + (self.n if good else 0)}
        if not good:
            return {**row, **{eps_col("bound_eps_out", e): math.nan for e in self.eps_grid}}
        dist = self.distances(ctx, center, "center/certify", self.n)[:, 0]
        sigma = ctx.noise.l2_scale
        for eps in self.eps_grid:
            q = float(norm.cdf(norm.ppf(0.5 + self.delta) + eps / sigma))
            row[eps_col("bound_eps_out", eps)] = RADIUS_COEFF * quantile_upper(dist, q, self.alpha_2)
        return row
