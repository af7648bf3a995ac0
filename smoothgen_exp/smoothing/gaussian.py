"""Isotropic Gaussian noise on the condition: eta ~ N(0, sigma^2 I). Radii are L2 in that space."""

from __future__ import annotations


class GaussianNoise:
    norm = "l2"
    certificate_valid = True   # the noise law does not depend on the input (SPEC 4, anisotropic note)

    def __init__(self, sigma: float):
        if sigma < 0:
            raise ValueError("sigma must be >= 0")
        self.sigma = float(sigma)

    def columns(self) -> dict:
        return {"noise": "gaussian", "sigma": self.sigma, "certificate_valid": self.certificate_valid}
