"""smoothing=adaptive: sigma(x) = sigma_base * f(x), f from the generator's sensitivity at x (SmoothGen 2.4.1).

f(x) = clip(s_ref / s(x), min_scale, max_scale), where s(x) = ||J(x)||_F is estimated by random probes and
s_ref is its mean over the calibration split: less noise where the output is sensitive.

Input-dependent noise voids the certificates (Sukenik et al. 2022): the smoothed classifier at x' uses a
different noise law than at x, and the Lipschitz argument no longer holds. Every row this option
produces carries `certificate_valid=false`, and the summary reports its radii as nominal only. It stays
available as an empirical defense (attacks measure it).

The items that set s_ref are recorded as for `calibrated`: `calibration_ids`, and the row columns
`noise_calibration_items` / `noise_calibration_hash`.
"""

from __future__ import annotations

import math

from smoothgen_exp.config import configured
from smoothgen_exp.smoothing.calibrated import calibration_columns, calibration_set
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.smoothing.sensitivity import jtj_estimate


class InputDependentGaussian(GaussianNoise):
    """The isotropic law AdaptiveNoise picks for one input: its rows can certify nothing."""

    name = "adaptive"
    certificate_valid = False


@configured
class AdaptiveNoise:
    norm = "l2"
    requires = {"model": "gradients through the generator (its Jacobian)"}     # checks.py
    certificate_valid = False
    scale_before_setup = True      # l2_scale (sigma * max_scale) needs no fitting: checks.check_target_radius

    def __init__(self, sigma: float, min_scale: float, max_scale: float,
                 calibration_items: int, probes: int, seed: int):
        self.sigma, self.min_scale, self.max_scale = float(sigma), float(min_scale), float(max_scale)
        self.calibration_items, self.probes, self.seed = int(calibration_items), int(probes), int(seed)
        self.reference: float | None = None
        self.calibration_ids: list[str] | None = None      # the items that set s_ref (after setup)

    def sensitivity(self, model, z) -> float:
        return math.sqrt(float(jtj_estimate(model, z, self.seed, self.probes, draws=2).trace()))

    def setup(self, model, dataset) -> None:
        self.calibration_ids, conditions = calibration_set(dataset, self.calibration_items)
        z = model.encode(conditions)
        self.reference = sum(self.sensitivity(model, zi) for zi in z) / len(z)

    def at(self, x, model) -> GaussianNoise:
        scale = min(self.max_scale, max(self.min_scale, self.reference / max(self.sensitivity(model, x), 1e-12)))
        law = InputDependentGaussian(self.sigma * scale)
        law.extra = {"sigma_base": self.sigma, **calibration_columns(self.calibration_ids)}
        return law

    @property
    def l2_scale(self) -> float:
        """The largest sigma an item's law can have: the ceiling of the (nominal) radii any item reaches."""
        return self.sigma * self.max_scale

    def columns(self) -> dict:
        return {"noise": "adaptive", "sigma": self.sigma, "certificate_valid": False,
                **calibration_columns(self.calibration_ids)}
