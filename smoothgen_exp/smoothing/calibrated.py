"""smoothing=calibrated: one fixed covariance Sigma = lam (J^T J + reg I)^-1 (SmoothGen 2.4.2).

J^T J (scaled to mean eigenvalue 1, so `reg` is relative) is averaged over the dataset's calibration split (never the evaluation items), so Sigma does not
depend on the input being certified and every certificate stays valid. lam is set so that the mean
eigenvalue of Sigma is sigma^2: `sigma` keeps its meaning as the noise scale. Noise is eta = L xi with
L L^T = Sigma. Radii: Phi^-1(p_lower) in the Mahalanobis norm ||Sigma^-1/2 delta||, and
sqrt(lambda_min(Sigma)) Phi^-1(p_lower) in L2 (the `radius` column).
"""

from __future__ import annotations

import logging

import torch
from scipy.stats import norm
from tqdm.auto import tqdm

from smoothgen_exp.smoothing.sensitivity import jtj_estimate
from smoothgen_exp.stats import cohen_radius

log = logging.getLogger(__name__)


class CalibratedNoise:
    norm = "mahalanobis"
    certificate_valid = True

    def __init__(self, sigma: float, reg: float = 1.0, calibration_items: int = 50, probes: int = 32,
                 seed: int = 0):
        self.sigma, self.reg = float(sigma), float(reg)
        self.calibration_items, self.probes, self.seed = int(calibration_items), int(probes), int(seed)
        self.chol: torch.Tensor | None = None

    def setup(self, model, dataset) -> None:
        """Estimate the mean J^T J over calibration conditions and fix Sigma (and its factor L)."""
        conditions = dataset.calibration_conditions()[: self.calibration_items]
        z = model.encode(conditions)
        jtj = sum(jtj_estimate(model, z[i], self.seed + 97 * i, self.probes)
                  for i in tqdm(range(len(z)), desc="calibrate noise", leave=False)) / len(z)
        jtj = jtj / jtj.diagonal().mean()                          # scale-free: reg is relative
        precision = jtj + self.reg * torch.eye(len(jtj), dtype=jtj.dtype, device=jtj.device)
        cov = torch.linalg.inv(precision)
        cov = cov * (self.sigma ** 2 / cov.diagonal().mean())        # mean eigenvalue sigma^2
        cov = (cov + cov.T) / 2
        eig = torch.linalg.eigvalsh(cov)
        self.lambda_min, self.lambda_max = float(eig[0]), float(eig[-1])
        self.chol = torch.linalg.cholesky(cov).to(z.dtype)
        log.info("calibrated noise: sigma_min %.4f, sigma_max %.4f (sqrt eigenvalues)",
                 self.lambda_min ** 0.5, self.lambda_max ** 0.5)

    @property
    def l2_scale(self) -> float:
        return self.lambda_min ** 0.5

    def at(self, x, model=None) -> CalibratedNoise:
        if self.chol is None:
            raise RuntimeError("CalibratedNoise.setup(model, dataset) must run first")
        return self

    def sample_(self, out, generator):
        flat = out.reshape(out.shape[0], -1)
        xi = torch.randn(flat.shape, generator=generator, device=out.device, dtype=out.dtype)
        torch.matmul(xi, self.chol.T.to(out.device), out=flat)
        return out

    def radius(self, p_lower: float) -> float:
        return cohen_radius(p_lower, self.l2_scale)

    def radius_mahalanobis(self, p_lower: float) -> float:
        return cohen_radius(p_lower, 1.0)

    def radius_columns(self, p_lower: float, certified: bool) -> dict:
        if not certified:
            return {"radius": 0.0, "radius_mahalanobis": 0.0}
        return {"radius": self.radius(p_lower), "radius_mahalanobis": self.radius_mahalanobis(p_lower)}

    def required_p(self, radius: float) -> float:
        return float(norm.cdf(radius / self.l2_scale))

    def columns(self) -> dict:
        return {"noise": "calibrated", "sigma": self.sigma, "certificate_valid": True,
                "noise_sigma_min": self.l2_scale, "noise_sigma_max": self.lambda_max ** 0.5}
