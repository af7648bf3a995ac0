"""certifier=output_bound (SPEC C2): how far the smoothed mean output h(x) = E[G(x + eta)] can move.

Outputs lie in the box [a, b]^m (images: [0, 1]^m), hence in the ball of radius sqrt(m)(b - a)/2 around
its centre; a model whose outputs have a norm bound (`output_norm`, e.g. unit CLIP features) also lies in
the ball ||y|| <= output_norm around 0. rho is the smaller radius, with that ball's centre (`diag_rho`,
`diag_geometry` = box | norm). Every bound below holds for outputs in any rho-ball. For ||delta|| <= eps,
with sigma the noise law's L2 scale:
- TV form:        ||h(x) - h(x+delta)|| <= 2 rho (2 Phi(eps / (2 sigma)) - 1)
- Lipschitz form: ||h(x) - h(x+delta)|| <= rho sqrt(2/pi) eps / sigma        (never tighter)
- per coordinate (Salman et al. 2019): Phi^-1((h_j - a)/(b - a)) is (1/sigma)-Lipschitz, so a confidence
  interval for h_j(x) (Hoeffding, union bound over the m coordinates, level alpha) maps to a certified
  interval for h_j(x + delta); reported as the mean interval width.
- Monte Carlo: with prob. >= 1 - alpha, ||h_hat - h|| <= rho (1/sqrt(n) + sqrt(2 ln(1/alpha)/n)) (McDiarmid:
  E||h_hat - h|| <= sqrt(E||G - h||^2 / n) <= rho / sqrt(n), as h minimises E||G - c||^2 <= rho^2 over
  centres c; replacing one of the n draws moves h_hat, hence ||h_hat - h||, by at most the ball's diameter
  2 rho over n). `bound_mcdiarmid` is for the mean output the row shows: with `aggregator=mean` its n
  (`mcdiarmid_n`), else the certifier's; `bound_mcdiarmid_certifier` is for the certifier's own h_hat.
The first two need no sampling; h_hat is the running mean of n generations (never all held).
The row's sampled guarantees hold together with probability >= 1 - alpha (its `confidence`): alpha is
split equally (`alpha_per_bound`) between the coordinate intervals, the McDiarmid bound of the
certifier's h_hat and, where the row shows another mean (`aggregator=mean`), that mean's McDiarmid bound
(found by review: each had been taken at alpha, so the row held at 1 - 3 alpha).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from smoothgen_exp.aggregators.mean import Mean
from smoothgen_exp.certifiers.base import BoundCertifier, eps_col
from smoothgen_exp.config import configured
from smoothgen_exp.stats import (
    coordinate_interval,
    mcdiarmid_mean_bound,
    output_lipschitz_bound,
    output_tv_bound,
)


def output_geometry(model) -> tuple[float, float, int]:
    """(a, b, m): the box [a, b]^m the generator's outputs live in."""
    lo, hi = model.output_range
    return float(lo), float(hi), int(np.prod(model.output_shape))


class OutputBall(NamedTuple):
    """A ball holding every output: radius rho around `centre` (a scalar: every coordinate), and a bound on
    the diameter of the output set; `geometry` says which bound gave rho: the box or the norm ball."""

    rho: float
    diameter: float
    geometry: str
    centre: float


def output_ball(model) -> OutputBall:
    """The tighter of the box [a, b]^m (radius sqrt(m)(b - a)/2 around (a + b)/2, diameter sqrt(m)(b - a))
    and the model's norm bound `output_norm` R, if it declares one (radius R around 0, diameter 2R)."""
    a, b, m = output_geometry(model)
    box_rho = math.sqrt(m) * (b - a) / 2.0
    norm = getattr(model, "output_norm", None)
    if norm is not None and float(norm) < box_rho:
        return OutputBall(float(norm), 2.0 * float(norm), "norm", 0.0)
    return OutputBall(box_rho, 2.0 * box_rho, "box", (a + b) / 2.0)


@configured
class OutputBoundCertifier(BoundCertifier):
    name = "output_bound"
    requires = {"model": "tensor outputs (images or features)"}

    def _certify(self, ctx) -> dict:
        a, b, m = output_geometry(ctx.model)
        ball, sigma = output_ball(ctx.model), ctx.noise.l2_scale
        rho = ball.rho
        total = torch.zeros(m, dtype=torch.float64, device=ctx.device)
        for out in ctx.outputs(self.n, "mean"):
            total += out.reshape(len(out), -1).sum(0, dtype=torch.float64)
        h_hat = (total / self.n).cpu().numpy()
        u = (h_hat - a) / (b - a)
        # the mean output the row shows: the aggregator's (n draws of its own) where it is a mean
        shows_mean = isinstance(ctx.aggregator, Mean)
        shown_n = ctx.aggregator.n if shows_mean else self.n
        level = self.alpha / (3 if shows_mean else 2)                 # one share per sampled bound
        t = math.sqrt(math.log(2.0 * m / level) / (2.0 * self.n))
        mean_image = torch.as_tensor(h_hat, dtype=ctx.x.dtype, device=ctx.device).reshape(ctx.model.output_shape)
        with torch.inference_mode():
            mean_class = int(ctx.oracle.classify(mean_image[None])[0])
        row = {"prediction": mean_class, "top_class": mean_class, "diag_rho": rho,
               "diag_geometry": ball.geometry, "bound_mcdiarmid": mcdiarmid_mean_bound(rho, shown_n, level),
               "mcdiarmid_n": shown_n, "bound_mcdiarmid_certifier": mcdiarmid_mean_bound(rho, self.n, level),
               "alpha_per_bound": level,
               "bound_coordinate_halfwidth": t * (b - a), "samples_used": self.n}
        for eps in self.eps_grid:
            row[eps_col("bound_tv", eps)] = output_tv_bound(rho, eps, sigma)
            row[eps_col("bound_lip", eps)] = output_lipschitz_bound(rho, eps, sigma)
            lo, hi = coordinate_interval(u - t, u + t, eps, sigma)
            row[eps_col("bound_interval_width", eps)] = float(np.mean(hi - lo)) * (b - a)
        return row
