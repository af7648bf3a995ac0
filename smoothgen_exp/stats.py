"""Confidence bounds and certified radii. Pure numpy/scipy (no torch), vectorised over inputs.

Conventions (SPEC section 4, C1):
- `alpha` is the one-sided miss probability of a bound: P(p < cp_lower(K, n, alpha)) <= alpha.
- `cp_lower`/`cp_upper` are the one-sided Clopper-Pearson bounds, equal to the two ends of
  `statsmodels.stats.proportion.proportion_confint(k, n, alpha=2*alpha, method="beta")`.
- Radii are in the norm of the noised space (L2 for isotropic Gaussian noise).

Scalars in give Python floats out; arrays in give arrays out.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

__all__ = [
    "cp_lower",
    "cp_upper",
    "cohen_radius",
    "oracle_corrected_lower",
    "binom_pvalue",
]


def _out(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def _check_counts(k, n, alpha) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k, n, alpha = np.asarray(k), np.asarray(n), np.asarray(alpha, dtype=float)
    if np.any(n < 1):
        raise ValueError("n must be >= 1")
    if np.any((k < 0) | (k > n)):
        raise ValueError("k must lie in [0, n]")
    if np.any((alpha <= 0) | (alpha >= 1)):
        raise ValueError("alpha must lie in (0, 1)")
    return k.astype(float), n.astype(float), alpha


def cp_lower(k, n, alpha):
    """One-sided Clopper-Pearson lower bound: Beta quantile(alpha; k, n - k + 1); 0 when k = 0."""
    k, n, alpha = _check_counts(k, n, alpha)
    with np.errstate(invalid="ignore"):
        b = _st.beta.ppf(alpha, k, n - k + 1)
    return _out(np.where(k == 0, 0.0, b))


def cp_upper(k, n, alpha):
    """One-sided Clopper-Pearson upper bound: Beta quantile(1 - alpha; k + 1, n - k); 1 when k = n."""
    k, n, alpha = _check_counts(k, n, alpha)
    with np.errstate(invalid="ignore"):
        b = _st.beta.ppf(1.0 - alpha, k + 1, n - k)
    return _out(np.where(k == n, 1.0, b))


def cohen_radius(p_lower, sigma):
    """Certified L2 radius sigma * Phi^-1(p_lower) when p_lower > 1/2, else 0.0 (Cohen et al. Thm 1)."""
    p, sigma = np.asarray(p_lower, dtype=float), np.asarray(sigma, dtype=float)
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("p_lower must lie in [0, 1]")
    if np.any(sigma < 0):
        raise ValueError("sigma must be >= 0")
    with np.errstate(divide="ignore"):
        r = sigma * _st.norm.ppf(np.maximum(p, 0.5))
    return _out(np.where(p > 0.5, r, 0.0))


def oracle_corrected_lower(q_lower, eps, model: str = "bounded"):
    """Lower bound on the true-class probability p from a bound q_lower on the oracle's agreement rate.

    - eps=None: no oracle-error model; returns q_lower (the seed paper's Theorem 4.2 setting).
    - "bounded" (sound default): each one-directional error rate is at most eps, so
      q <= p + eps (1 - p), i.e. p >= (q - eps) / (1 - eps).
    - "symmetric": the paper's (q - eps) / (1 - 2 eps); valid only when both error rates equal eps.
    The result is clipped to [0, 1]; eps >= 1/2 is rejected.
    """
    q = np.asarray(q_lower, dtype=float)
    if eps is None:
        return _out(q)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"oracle error eps={eps} must lie in [0, 1/2)")
    if model == "bounded":
        p = (q - eps) / (1.0 - eps)
    elif model == "symmetric":
        p = (q - eps) / (1.0 - 2.0 * eps)
    else:
        raise ValueError(f"unknown oracle error model {model!r} (bounded | symmetric)")
    return _out(np.clip(p, 0.0, 1.0))


def binom_pvalue(k: int, n: int) -> float:
    """Two-sided binomial test of H0: p = 1/2 (Cohen et al.'s PREDICT). n = 0 gives 1.0."""
    if n == 0:
        return 1.0
    return float(_st.binomtest(int(k), int(n), 0.5).pvalue)
