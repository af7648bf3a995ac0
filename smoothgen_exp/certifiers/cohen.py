"""certifier=cohen: Cohen et al.'s CERTIFY (and PREDICT) with the oracle on generations as base classifier.

    f(x) = O(G(x + eta)),   eta ~ N(0, sigma^2 I)   (SPEC C1)

n0 selection samples choose c_A, n fresh samples bound P(f = c_A) from below (one-sided
Clopper-Pearson at alpha); the radius is sigma * Phi^-1(p_lower) when p_lower > 1/2, else abstain.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from smoothgen_exp.core import Smooth


class CohenCertifier:
    def __init__(self, n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch_size: int = 1000,
                 predict_n: int = 100):
        self.n0, self.n, self.alpha = int(n0), int(n), float(alpha)
        self.batch_size, self.predict_n = int(batch_size), int(predict_n)

    def certify(self, x: torch.Tensor, base: Callable[[torch.Tensor], torch.Tensor], sigma: float,
                num_classes: int, seed: int) -> dict:
        """Certificate columns for one item (prediction is -1 when abstaining)."""
        t0 = time.perf_counter()
        cert = Smooth(base, sigma, num_classes).certify(x, self.n0, self.n, self.alpha, self.batch_size,
                                                         seed=seed)
        return {
            "certifier": "cohen", "n0": self.n0, "n": self.n, "alpha": self.alpha,
            "prediction": cert.prediction, "top_class": cert.top_class, "count": cert.count,
            "p_lower": cert.p_lower, "radius": cert.radius, "certified": not cert.abstained,
            "abstained": cert.abstained, "abstain_reason": "p_lower<=0.5" if cert.abstained else "",
            "samples_used": self.n0 + self.n, "time_certify_s": time.perf_counter() - t0,
        }

    def predict(self, x: torch.Tensor, base: Callable[[torch.Tensor], torch.Tensor], sigma: float,
                num_classes: int, seed: int) -> dict:
        """PREDICT columns: the smoothed prediction by a two-sided binomial test at alpha."""
        if self.predict_n == 0:
            return {}
        t0 = time.perf_counter()
        pred = Smooth(base, sigma, num_classes).predict(x, self.predict_n, self.alpha, self.batch_size,
                                                         seed=seed)
        return {"smoothed_prediction": pred.prediction, "predict_n": self.predict_n,
                "predict_count_a": pred.count_a, "predict_count_b": pred.count_b,
                "predict_pvalue": pred.p_value, "time_predict_s": time.perf_counter() - t0}
