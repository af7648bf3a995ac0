"""certifier=cohen: Cohen et al.'s CERTIFY with the oracle on generations as base classifier (SPEC C1).

    f(x) = O(G(x + eta)),   eta ~ the smoothing noise

n0 selection samples choose c_A; n fresh estimation samples bound the vote rate q from below
(one-sided Clopper-Pearson at alpha). With an oracle-error model (`oracle_error` eps), the bound on the
true-class probability is (q - eps)/(1 - eps) ("bounded", sound when each one-directional error rate
is at most eps) or the paper's (q - eps)/(1 - 2 eps) ("symmetric", only when both rates equal eps).
The radius is the noise law's radius at p_lower when p_lower > 1/2; else the item abstains.

`pilot` > 0 first draws that many samples, predicts the radius at the full n with the paper's Eq. 6,
and skips (abstains on) items predicted not to certify. Skipping only ever adds abstentions, so it
cannot make a certificate unsound.
"""

from __future__ import annotations

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.core import ABSTAIN
from smoothgen_exp.stats import expected_radius


class CohenCertifier(Certifier):
    name = "cohen"

    def __init__(self, n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch_size: int | str = 1000,
                 oracle_error: float | None = None, oracle_error_model: str = "bounded", pilot: int = 0):
        super().__init__(n0, n, alpha, batch_size)
        self.oracle_error, self.oracle_error_model, self.pilot = oracle_error, oracle_error_model, int(pilot)

    def _certify(self, ctx) -> dict:
        row = {"oracle_error": self.oracle_error, "oracle_error_model": self.oracle_error_model}
        if self.pilot:
            pilot = self._pilot(ctx)
            row.update(pilot)
            if pilot["pilot_skipped"]:
                return {**row, "prediction": ABSTAIN, "top_class": pilot["pilot_class"], "count": None,
                        "p_lower": None, "q_lower": None, "radius": 0.0, "certified": False,
                        "abstained": True, "abstain_reason": "pilot predicts no certificate",
                        "samples_used": self.pilot}
        cert = ctx.smooth("certify").certify(ctx.x, self.n0, self.n, self.alpha, self.batch_size,
                                             seed=ctx.seed("certify/noise"), oracle_error=self.oracle_error,
                                             oracle_error_model=self.oracle_error_model)
        return {**row, "prediction": cert.prediction, "top_class": cert.top_class, "count": cert.count,
                "q_lower": cert.q_lower, "p_lower": cert.p_lower,
                **ctx.noise.radius_columns(cert.p_lower, not cert.abstained),
                "certified": not cert.abstained, "abstained": cert.abstained,
                "abstain_reason": "p_lower<=0.5" if cert.abstained else "",
                "samples_used": self.pilot + self.n0 + self.n}

    def _pilot(self, ctx) -> dict:
        smooth = ctx.smooth("pilot")
        gen = ctx.generator("pilot/noise")
        counts = smooth.sample_counts(ctx.x, self.pilot, self.batch_size, gen)
        top = int(counts.argmax())
        p_hat = float(counts[top]) / self.pilot
        predicted = expected_radius(min(p_hat, 1 - 0.5 / self.pilot), ctx.noise.l2_scale, self.alpha, self.n)
        return {"pilot_n": self.pilot, "pilot_class": top, "pilot_p_hat": p_hat,
                "pilot_predicted_radius": predicted, "pilot_skipped": predicted <= 0.0}
