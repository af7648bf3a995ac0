"""Isotropic Gaussian noise on the condition: eta ~ N(0, sigma^2 I). Radii are L2 in that space.

The protocol every noise law follows (see also `calibrated`, `adaptive`):
- `at(x, model)`: the law used for the item with condition x (input-independent laws return self);
- `sample_(out, generator, add=None)`: fill `out` with eta (or `add` + eta) in place and return it;
- `l2_scale`: the sigma that turns Phi^-1(p) into a sound L2 radius;
- `radius(p_lower)`, `required_p(radius)`, and `columns()` for the records.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm

from smoothgen_exp.config import configured
from smoothgen_exp.stats import cohen_radius


@configured
class GaussianNoise:
    norm = "l2"
    name = "gaussian"
    # False when sigma was chosen from the input itself (SPEC 4: Sukenik et al. 2022; smoothing.adaptive)
    certificate_valid = True

    def __init__(self, sigma: float):
        if sigma < 0:
            raise ValueError("sigma must be >= 0")
        self.sigma = float(sigma)
        self.extra: dict = {}

    @property
    def l2_scale(self) -> float:
        return self.sigma

    def at(self, x, model=None) -> GaussianNoise:
        return self

    def sample_(self, out, generator, add=None):
        """Fill `out` with sigma * xi (plus `add`, broadcast), xi ~ N(0, I), and return it. See `float64_draw`."""
        return float64_draw(out, generator, lambda xi: xi.mul_(self.sigma), add)

    def radius(self, p_lower: float) -> float:
        return cohen_radius(p_lower, self.sigma)

    def radius_columns(self, p_lower: float, certified: bool) -> dict:
        return {"radius": self.radius(p_lower) if certified else 0.0}

    def required_p(self, radius: float) -> float:
        """The smallest p_A whose certified radius reaches `radius`."""
        return float(norm.cdf(radius / self.sigma)) if self.sigma > 0 else 1.0

    def columns(self) -> dict:
        return {"noise": self.name, "sigma": self.sigma, "certificate_valid": self.certificate_valid,
                **self.extra}


def float64_draw(out, generator, transform, add=None):
    """Draw standard normals in float64, apply `transform` (in place, float64), add `add` and round once
    into `out`'s dtype.

    Why float64 (issue 11.13; Voracek & Hein, "Sound randomized smoothing in floating-point arithmetic"):
    torch's float32 sampler runs Box-Muller on 24-bit uniforms, so every pair's r^2 is capped at
    48 ln 2 = 33.27 and the sampled law misses about d/2 * 2^-24 of N(0, I)'s mass, enough for a
    Clopper-Pearson bound on the sampled law to overstate the Gaussian's p. The float64 sampler's
    53-bit uniforms move the cap to r^2 = 106 ln 2 = 73.5 (missing mass d/2 * 2^-53). The sum x + eta
    is formed in float64 and rounded once, so the base classifier sees fl(x + eta): a fixed function of
    x + eta, which is what the Lipschitz argument needs.

    `generator` may also be a numpy Generator (what `core.NoiseStream` uses on the CPU): numpy's float64
    ziggurat has no such cap at all (its tail is sampled exactly, to |xi| of about 13 at 53-bit
    uniforms), draws one normal after another, and is faster than torch's float64 sampler on CPUs.
    """
    if isinstance(generator, np.random.Generator):          # core.NoiseStream on the CPU
        eta = transform(torch.from_numpy(generator.standard_normal(tuple(out.shape))).to(out.device))
    elif out.dtype == torch.float64:
        eta = transform(out.normal_(0.0, 1.0, generator=generator))
    else:
        eta = transform(torch.randn(out.shape, generator=generator, device=out.device, dtype=torch.float64))
    if add is not None:
        eta.add_(add)
    return out if eta is out else out.copy_(eta)
