"""certifier=distribution (SPEC C3): how far the law of the generations can move, and a harm bound.

For any stochastic generator, P_x (the law of G(x + eta)) is a post-processing of N(x, sigma^2 I), so
for ||delta|| <= eps: TV(P_x, P_{x+delta}) <= 2 Phi(eps / (2 sigma)) - 1 and, outputs lying in a set of
diameter D, W_p(P_x, P_{x+delta}) <= D TV^(1/p). These need no sampling. D is the diameter of the tighter
of the output box and the model's norm ball (`output_bound.output_ball`: 2 for unit CLIP features).

Event A = "the oracle's class differs from the prompt's class" (a stand-in for "harmful output"):
n samples give p_upper = CP_upper(k_A, n, alpha), and P_{x+delta}(A) <= Phi(Phi^-1(p_upper) + eps/sigma)
is a certified bound on how far an attacker can raise it. An item without a label (-1) has no such event:
its event columns are NaN and `abstain_reason` says why; its TV and W_p bounds need no label and stay.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.certifiers.base import BoundCertifier, eps_col
from smoothgen_exp.certifiers.output_bound import output_ball
from smoothgen_exp.config import configured
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.stats import cp_upper, harm_upper, tv_bound, wp_bound


@configured
class DistributionCertifier(BoundCertifier):
    name = "distribution"

    def _certify(self, ctx) -> dict:
        # text has no metric to measure W_p in: TV and the harm bound only (W_p columns NaN)
        text = getattr(ctx.model, "output_kind", None) == "text"
        diameter, sigma = math.nan if text else output_ball(ctx.model).diameter, ctx.noise.l2_scale
        # the harm event (class != label) needs ground truth: a label, and an oracle whose classes are it
        label = int(ctx.item.label) if getattr(ctx.oracle, "has_classes", True) else -1
        if label >= ctx.num_classes:
            raise SmoothgenError(f"item {ctx.item.item_id}: label {label} is not a class of the oracle "
                                 f"(0..{ctx.num_classes - 1}; -1 for none)")
        smooth = ctx.smooth("event")
        counts = smooth.sample_counts(ctx.x, self.n, self.batch_size, ctx.generator("event/noise"))
        row = {"prediction": int(torch.argmax(counts)), "diag_diameter": diameter, "samples_used": self.n}
        if label < 0:        # no label, no event "class != label": never counts[-1], the last class
            row.update({"diag_event_count": None, "diag_event_p_hat": math.nan, "bound_event_p_upper": math.nan,
                        "abstain_reason": "no label, or an oracle without classes: the harm event (class != label) needs both"})
        else:
            k_event = int(counts.sum() - counts[label])
            row.update({"diag_event_count": k_event, "diag_event_p_hat": k_event / self.n,
                        "bound_event_p_upper": cp_upper(k_event, self.n, self.alpha), "abstain_reason": ""})
        # the shown text of a token-averaged decoder is a function of all its n draws (SPEC C5): its own TV
        # bound, beside bound_tv (the law of one generation G(x + eta))
        shift = getattr(ctx.aggregator, "tv_shift", None)
        factor = shift(ctx.model) if shift is not None else None
        for eps in self.eps_grid:
            row[eps_col("bound_tv", eps)] = tv_bound(eps, sigma)
            if factor is not None:
                row[eps_col("bound_tv_output", eps)] = tv_bound(factor * eps, sigma)
            row[eps_col("bound_w1", eps)] = math.nan if text else wp_bound(eps, sigma, diameter, 1)
            row[eps_col("bound_w2", eps)] = math.nan if text else wp_bound(eps, sigma, diameter, 2)
            row[eps_col("bound_harm", eps)] = harm_upper(row["bound_event_p_upper"], eps, sigma) \
                if label >= 0 else math.nan
        return row
