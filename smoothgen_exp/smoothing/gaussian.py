"""Isotropic Gaussian noise on the condition: eta ~ N(0, sigma^2 I). Radii are L2 in that space.

The protocol every noise law follows (see also `calibrated`, `adaptive`):
- `at(x, model)`: the law used for the item with condition x (input-independent laws return self);
- `sample_(out, generator)`: fill `out` with noise in place and return it;
- `l2_scale`: the sigma that turns Phi^-1(p) into a sound L2 radius;
- `radius(p_lower)`, `required_p(radius)`, and `columns()` for the records.
"""

from __future__ import annotations

from scipy.stats import norm

from smoothgen_exp.stats import cohen_radius


class GaussianNoise:
    norm = "l2"

    def __init__(self, sigma: float, certificate_valid: bool = True, name: str = "gaussian",
                 extra: dict | None = None):
        if sigma < 0:
            raise ValueError("sigma must be >= 0")
        self.sigma = float(sigma)
        # False when sigma was chosen from the input itself (SPEC 4: Sukenik et al. 2022)
        self.certificate_valid = certificate_valid
        self.name, self.extra = name, extra or {}

    @property
    def l2_scale(self) -> float:
        return self.sigma

    def at(self, x, model=None) -> GaussianNoise:
        return self

    def sample_(self, out, generator):
        return out.normal_(0.0, 1.0, generator=generator).mul_(self.sigma)

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
