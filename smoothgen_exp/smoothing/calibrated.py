"""smoothing=calibrated: one fixed covariance Sigma = lam (J^T J + reg I)^-1 (SmoothGen 2.4.2).

J^T J (scaled to mean eigenvalue 1, so `reg` is relative) is averaged over the dataset's calibration split (never the evaluation items), so Sigma does not
depend on the input being certified and every certificate stays valid. lam is set so that the mean
eigenvalue of Sigma is sigma^2: `sigma` keeps its meaning as the noise scale. Noise is eta = L xi with
L L^T = Sigma. Radii: Phi^-1(p_lower) in the Mahalanobis norm ||Sigma^-1/2 delta||, and
sqrt(lambda_min(Sigma)) Phi^-1(p_lower) in L2 (the `radius` column).

The items that calibrated Sigma are recorded: `calibration_ids` (the full list, for the run summary)
and, in every row, `noise_calibration_items` (their number) and `noise_calibration_hash` (a short
SHA-256 of the sorted ids).
"""

from __future__ import annotations

import hashlib
import logging

import torch
from scipy.stats import norm
from tqdm.auto import tqdm

from smoothgen_exp.config import configured
from smoothgen_exp.data.protocol import CalibrationSplit
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.smoothing.gaussian import float64_draw
from smoothgen_exp.smoothing.sensitivity import jtj_estimate
from smoothgen_exp.stats import cohen_radius

log = logging.getLogger(__name__)

MAX_COVARIANCE_BYTES = 4 * 2**30     # a d x d float64 covariance above this is refused (SD 1.5's: 26 GiB)


def calibration_set(dataset, k: int) -> tuple[list[str], list[str]]:
    """(ids, conditions) of the first k calibration items of `dataset` (disjoint from its evaluation
    items). A dataset with `calibration_conditions` only (no item ids) is identified by the conditions."""
    if isinstance(dataset, CalibrationSplit):
        items = dataset.calibration_items()[:k]
        ids, conditions = [it.item_id for it in items], [it.condition for it in items]
    else:
        conditions = list(dataset.calibration_conditions())[:k]
        ids = list(conditions)
    evaluation = getattr(dataset, "items", None) or []
    shared = {it.condition for it in evaluation} & set(conditions) | {it.item_id for it in evaluation} & set(ids)
    if shared:
        raise SmoothgenError(f"the dataset's calibration split shares {len(shared)} items with its evaluation "
                             f"items (e.g. {sorted(shared)[0]!r}): noise laws must be fitted on held-out data")
    return ids, conditions


def calibration_columns(ids: list[str] | None) -> dict:
    """Row columns naming the calibration set compactly: its size and a short hash of the sorted ids."""
    if ids is None:
        return {}
    digest = hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:12]
    return {"noise_calibration_items": len(ids), "noise_calibration_hash": digest}


@configured
class CalibratedNoise:
    norm = "mahalanobis"
    requires = {"model": "gradients through the generator (its Jacobian)"}     # checks.py
    certificate_valid = True

    def __init__(self, sigma: float, reg: float, calibration_items: int, probes: int,
                 seed: int):
        self.sigma, self.reg = float(sigma), float(reg)
        self.calibration_items, self.probes, self.seed = int(calibration_items), int(probes), int(seed)
        self.chol: torch.Tensor | None = None
        self.calibration_ids: list[str] | None = None      # the items that calibrated Sigma (after setup)

    def setup(self, model, dataset) -> None:
        """Estimate the mean J^T J over calibration conditions and fix Sigma (and its factor L)."""
        self.calibration_ids, conditions = calibration_set(dataset, self.calibration_items)
        z = model.encode(conditions)
        d = z[0].numel()
        if d * d * 8 > MAX_COVARIANCE_BYTES:
            raise SmoothgenError(f"smoothing=calibrated: the condition has {d} coordinates, and its {d}x{d} float64 "
                                 f"covariance would take {d * d * 8 / 2**30:.1f} GiB (at most "
                                 f"{MAX_COVARIANCE_BYTES / 2**30:g}); use smoothing=gaussian")
        jtj = sum(jtj_estimate(model, z[i], self.seed + 97 * i, self.probes)
                  for i in tqdm(range(len(z)), desc="calibrate noise", leave=False)) / len(z)
        jtj = jtj.double() / jtj.diagonal().mean()                 # scale-free: reg is relative
        precision = jtj + self.reg * torch.eye(len(jtj), dtype=jtj.dtype, device=jtj.device)
        cov = torch.linalg.inv(precision)
        cov = cov * (self.sigma ** 2 / cov.diagonal().mean())        # mean eigenvalue sigma^2
        cov = (cov + cov.T) / 2
        # float64 factor, and the eigenvalues of the law actually sampled (L L^T), not of cov before factoring
        self.chol = torch.linalg.cholesky(cov)
        eig = torch.linalg.eigvalsh(self.chol @ self.chol.T)
        self.lambda_min, self.lambda_max = float(eig[0]), float(eig[-1])
        log.info("calibrated noise: sigma_min %.4f, sigma_max %.4f (sqrt eigenvalues)",
                 self.lambda_min ** 0.5, self.lambda_max ** 0.5)

    @property
    def l2_scale(self) -> float:
        return self.lambda_min ** 0.5

    def at(self, x, model=None) -> CalibratedNoise:
        if self.chol is None:
            raise RuntimeError("CalibratedNoise.setup(model, dataset) must run first")
        return self

    def sample_(self, out, generator, add=None):
        """Fill `out` with L xi (plus `add`), xi ~ N(0, I) drawn in float64 (`gaussian.float64_draw`)."""
        chol_t = self.chol.T.to(device=out.device, dtype=torch.float64)

        def correlate(xi):
            return (xi.reshape(xi.shape[0], -1) @ chol_t).reshape(xi.shape)

        return float64_draw(out, generator, correlate, add)

    def radius(self, p_lower: float) -> float:
        return cohen_radius(p_lower, self.l2_scale)

    def radius_mahalanobis(self, p_lower: float) -> float:
        return cohen_radius(p_lower, 1.0)

    def whitened_norm(self, delta) -> float:
        """||Sigma^{-1/2} delta|| = ||L^{-1} delta|| (Sigma = L L^T): the norm `radius_mahalanobis` is in."""
        d = delta.reshape(-1, 1).to(device=self.chol.device, dtype=torch.float64)
        return float(torch.linalg.solve_triangular(self.chol, d, upper=False).norm())

    def radius_columns(self, p_lower: float, certified: bool) -> dict:
        if not certified:
            return {"radius": 0.0, "radius_mahalanobis": 0.0}
        return {"radius": self.radius(p_lower), "radius_mahalanobis": self.radius_mahalanobis(p_lower)}

    def required_p(self, radius: float) -> float:
        return float(norm.cdf(radius / self.l2_scale))

    def columns(self) -> dict:
        return {"noise": "calibrated", "sigma": self.sigma, "certificate_valid": True,
                "noise_sigma_min": self.l2_scale, "noise_sigma_max": self.lambda_max ** 0.5,
                **calibration_columns(self.calibration_ids)}
