"""certifier=cohen: Cohen et al.'s CERTIFY with the oracle on generations as base classifier (SPEC C1).

    f(x) = O(G(x + eta)),   eta ~ the smoothing noise

n0 selection samples choose c_A; n fresh estimation samples bound the vote rate q from below
(one-sided Clopper-Pearson at alpha). With an oracle-error model (`oracle_error` eps), the bound on the
true-class probability is (q - eps)/(1 - eps) ("bounded", sound when each one-directional error rate
is at most eps) or the paper's (q - eps)/(1 - 2 eps) ("symmetric", only when both rates equal eps).
The radius is the noise law's radius at p_lower when p_lower > 1/2; else the item abstains.

eps is itself an estimate (scripts/oracle_error.py) that holds with probability 1 - oracle_error_alpha,
so a corrected certificate holds with probability 1 - alpha - oracle_error_alpha (union bound): the
`confidence` column. The symmetric model's premise (both error rates *equal* eps) is not what a measured
eps establishes (it bounds them), and it can certify a class the smoothed classifier does not predict:
its rows carry `certificate_valid=false` and are reported only as `nominal_*` (kept to reproduce the
paper's numbers).

`pilot` > 0 first draws that many samples, predicts the radius at the full n with the paper's Eq. 6,
and skips (abstains on) items predicted not to certify. Skipping only ever adds abstentions, so it
cannot make a certificate unsound.
"""

from __future__ import annotations

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.config import configured
from smoothgen_exp.core import ABSTAIN, certificate
from smoothgen_exp.errors import ConfigError
from smoothgen_exp.packing import Draw, Program, class_counts
from smoothgen_exp.stats import cp_lower, expected_radius, oracle_corrected_lower


class OracleErrorModel:
    """The oracle-error correction shared by the class and answer certificates (SPEC C1)."""

    def _init_oracle_error(self, oracle_error: float | None, oracle_error_model: str,
                           oracle_error_alpha: float | None) -> None:
        if oracle_error is not None and oracle_error_alpha is None:
            raise ConfigError("certifier.oracle_error_alpha=null: required with certifier.oracle_error "
                              "(the confidence of the eps estimate; scripts/oracle_error.py prints both)")
        self.oracle_error, self.oracle_error_model = oracle_error, oracle_error_model
        self.oracle_error_alpha = oracle_error_alpha if oracle_error is not None else None

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha - (self.oracle_error_alpha or 0.0)

    @property
    def oracle_error_valid(self) -> bool:
        """False under the symmetric model: its premise is not what a measured eps establishes."""
        return self.oracle_error is None or self.oracle_error_model == "bounded"

    def oracle_error_columns(self) -> dict:
        return {"oracle_error": self.oracle_error, "oracle_error_model": self.oracle_error_model,
                "oracle_error_alpha": self.oracle_error_alpha, "certificate_valid": self.oracle_error_valid}

    def max_lower_bound(self, n: int) -> float:
        """All n estimation samples agree: q_lower = alpha^(1/n), then the oracle-error correction."""
        return oracle_corrected_lower(cp_lower(n, n, self.alpha), self.oracle_error, self.oracle_error_model)


@configured
class CohenCertifier(OracleErrorModel, Certifier):
    name = "cohen"
    certifies = "class"

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 oracle_error: float | None, oracle_error_model: str,
                 oracle_error_alpha: float | None, pilot: int):
        super().__init__(n0, n, alpha, batch_size)
        self._init_oracle_error(oracle_error, oracle_error_model, oracle_error_alpha)
        self.pilot = int(pilot)

    def _program(self, ctx) -> Program:
        row = self.oracle_error_columns()
        if self.pilot:
            pilot = self._pilot(ctx, class_counts(ctx, (yield Draw("pilot", self.pilot))))
            row.update(pilot)
            if pilot["pilot_skipped"]:
                return {**row, "prediction": ABSTAIN, "top_class": pilot["pilot_class"], "count": None,
                        "p_lower": None, "q_lower": None, "radius": 0.0, "certified": False,
                        "abstained": True, "abstain_reason": "pilot predicts no certificate",
                        "samples_used": self.pilot}
        # the n0 selection samples, then n fresh ones: requested together (the n do not depend on c_A)
        selection, got = yield (Draw("certify", self.n0), Draw("certify", self.n, firsts=True))
        c_a = int(class_counts(ctx, selection).argmax())
        estimation = class_counts(ctx, got)
        # i.i.d. draws of f(x + eta) whatever c_A is: `majority` may run PREDICT on them (its docstring)
        ctx.evidence["estimation"] = (estimation, got.firsts)
        cert = certificate(c_a, int(estimation[c_a]), self.n, self.alpha, ctx.noise, self.oracle_error,
                           self.oracle_error_model)
        return {**row, "prediction": cert.prediction, "top_class": cert.top_class, "count": cert.count,
                "q_lower": cert.q_lower, "p_lower": cert.p_lower,
                **ctx.noise.radius_columns(cert.p_lower, not cert.abstained),
                "certified": not cert.abstained, "abstained": cert.abstained,
                "abstain_reason": "p_lower<=0.5" if cert.abstained else "",
                "samples_used": self.pilot + self.n0 + self.n}

    def _pilot(self, ctx, counts) -> dict:
        top = int(counts.argmax())
        p_hat = float(counts[top]) / self.pilot
        predicted = expected_radius(min(p_hat, 1 - 0.5 / self.pilot), ctx.noise.l2_scale, self.alpha, self.n)
        return {"pilot_n": self.pilot, "pilot_class": top, "pilot_p_hat": p_hat,
                "pilot_predicted_radius": predicted, "pilot_skipped": predicted <= 0.0}
