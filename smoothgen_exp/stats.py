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
    "cp_lower", "cp_upper", "cohen_radius", "oracle_corrected_lower", "binom_pvalue",
    # scaling laws (RS-for-VLM paper, section 5)
    "z_two_sided", "expected_radius", "expected_radius_shore", "shore_ppf", "scaling_ratio", "scaling_in_range",
    "radius_drop", "accuracy_drop_bound",
    # output, distribution and feature certificates (SPEC C2-C4)
    "tv_bound", "wp_bound", "harm_upper", "fcsb", "fcsb_radius", "output_tv_bound", "output_lipschitz_bound",
    "mcdiarmid_mean_bound", "coordinate_interval", "hoeffding_lower", "empirical_bernstein_lower",
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


# ------------------------------------------------------------------------- scaling laws (section 5)
# Notation of the RS-for-VLM paper: z = Phi^-1(1 - alpha/2); 1.64 is the paper's constant from
# averaging Eq. 6 over class probabilities spread near 1 (Thm 5.3).
SCALING_CONSTANT = 1.64


def z_two_sided(alpha):
    return _out(_st.norm.ppf(1.0 - np.asarray(alpha, dtype=float) / 2.0))


def _expected_p_lower(p_a, alpha, n):
    p_a, n = np.asarray(p_a, dtype=float), np.asarray(n, dtype=float)
    return p_a - z_two_sided(alpha) * np.sqrt(p_a * (1.0 - p_a) / n)


def expected_radius(p_a, sigma, alpha, n):
    """Eq. 6: R ~ sigma Phi^-1(p_A - z sqrt(p_A (1 - p_A) / n)); 0 where that is <= 1/2."""
    p = np.clip(_expected_p_lower(p_a, alpha, n), 0.0, 1.0)
    return cohen_radius(p, sigma)


def shore_ppf(p):
    """Shore's (1982) approximation of Phi^-1(p) for p >= 1/2: 5.5556 (1 - ((1 - p) / p)^0.1186)."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(5.5556 * (1.0 - ((1.0 - p) / p) ** 0.1186))


def expected_radius_shore(p_a, sigma, alpha, n):
    """Eq. 7: Eq. 6 with Phi^-1 replaced by Shore's closed form (the basis of the paper's ratios)."""
    p = np.clip(_expected_p_lower(p_a, alpha, n), 0.0, 1.0)
    r = np.asarray(sigma, dtype=float) * np.asarray(shore_ppf(np.maximum(p, 0.5)))
    return _out(np.where(p > 0.5, r, 0.0))


def scaling_in_range(n, alpha):
    """Where the CLT forms hold: n >= 30 (Lemma 5.1) and 1 - 1.64 z / sqrt(n) > 0."""
    n = np.asarray(n, dtype=float)
    ok = (n >= 30) & (n > (SCALING_CONSTANT * z_two_sided(alpha)) ** 2)
    return bool(ok) if ok.ndim == 0 else ok


def radius_drop(n, alpha):
    """Thm 5.3: average radius at n relative to n -> infinity, 1 - 1.64 z / sqrt(n), clipped at 0."""
    r = 1.0 - SCALING_CONSTANT * z_two_sided(alpha) / np.sqrt(np.asarray(n, dtype=float))
    return _out(np.maximum(r, 0.0))


def scaling_ratio(n, N, alpha):
    """Cor. 5.4: average radius at n over that at N, (1 - 1.64 z/sqrt(n)) / (1 - 1.64 z/sqrt(N)).

    Clipped to 0 below n = (1.64 z)^2 (about 29 at alpha = 0.001), where the formula turns negative;
    check `scaling_in_range(n, alpha)` before reading a value as a prediction.
    """
    return _out(np.asarray(radius_drop(n, alpha)) / np.asarray(radius_drop(N, alpha)))


def accuracy_drop_bound(n, alpha):
    """Thm 5.5: certified accuracy lost by using n samples is at most z / sqrt(n)."""
    return _out(z_two_sided(alpha) / np.sqrt(np.asarray(n, dtype=float)))


# --------------------------------------------------------- output and distribution certificates
def tv_bound(eps, sigma):
    """TV(P_x, P_{x+delta}) <= 2 Phi(||delta|| / (2 sigma)) - 1 for any post-processing of N(x, sigma^2 I)."""
    eps, sigma = np.asarray(eps, dtype=float), np.asarray(sigma, dtype=float)
    return _out(2.0 * _st.norm.cdf(eps / (2.0 * sigma)) - 1.0)


def wp_bound(eps, sigma, diameter, p):
    """W_p(P_x, P_{x+delta}) <= D * TV^(1/p) for outputs in a set of diameter D."""
    return _out(np.asarray(diameter, dtype=float) * np.asarray(tv_bound(eps, sigma)) ** (1.0 / p))


def harm_upper(p_upper, eps, sigma):
    """Certified P_{x+delta}(A) <= Phi(Phi^-1(p_upper) + ||delta|| / sigma) for any event A."""
    p = np.asarray(p_upper, dtype=float)
    return _out(_st.norm.cdf(_st.norm.ppf(p) + np.asarray(eps, dtype=float) / np.asarray(sigma, dtype=float)))


def output_tv_bound(rho, eps, sigma):
    """C2, TV form: ||h(x) - h(x+delta)|| <= 2 rho (2 Phi(||delta|| / (2 sigma)) - 1) for outputs in a rho-ball."""
    return _out(2.0 * np.asarray(rho, dtype=float) * np.asarray(tv_bound(eps, sigma)))


def output_lipschitz_bound(rho, eps, sigma):
    """C2, Lipschitz form: rho sqrt(2/pi) ||delta|| / sigma (never below the TV form)."""
    return _out(np.asarray(rho, dtype=float) * np.sqrt(2.0 / np.pi) * np.asarray(eps, dtype=float)
                / np.asarray(sigma, dtype=float))


def mcdiarmid_mean_bound(rho, n, alpha):
    """With prob. >= 1 - alpha, ||h_hat - h|| <= rho (1/sqrt(n) + sqrt(2 ln(1/alpha) / n)) (outputs in a rho-ball)."""
    return float(rho * (1.0 / np.sqrt(n) + np.sqrt(2.0 * np.log(1.0 / alpha) / n)))


def coordinate_interval(h_low, h_high, eps, sigma):
    """Salman et al.'s lemma per coordinate: Phi^-1(h_j) is (1/sigma)-Lipschitz for h_j in [0, 1].

    Given h_j(x) in [h_low, h_high], h_j(x + delta) lies in
    [Phi(Phi^-1(h_low) - eps/sigma), Phi(Phi^-1(h_high) + eps/sigma)] for ||delta|| <= eps.
    """
    shift = np.asarray(eps, dtype=float) / np.asarray(sigma, dtype=float)
    lo = _st.norm.cdf(_st.norm.ppf(np.clip(h_low, 0.0, 1.0)) - shift)
    hi = _st.norm.cdf(_st.norm.ppf(np.clip(h_high, 0.0, 1.0)) + shift)
    return lo, hi


def hoeffding_lower(mean, n, alpha):
    """Lower confidence bound for the mean of [0,1]-valued variables (Hoeffding)."""
    return float(max(0.0, mean - np.sqrt(np.log(1.0 / alpha) / (2.0 * n))))


def empirical_bernstein_lower(mean, var, n, alpha):
    """Maurer & Pontil (2009, Thm 4) lower bound for the mean of [0,1]-valued variables.

    `var` is the unbiased sample variance. With prob. >= 1 - alpha:
    E Z >= mean - sqrt(2 var ln(2/alpha) / n) - 7 ln(2/alpha) / (3 (n - 1)).
    """
    if n < 2:
        return 0.0
    log_term = np.log(2.0 / alpha)
    return float(max(0.0, mean - np.sqrt(2.0 * var * log_term / n) - 7.0 * log_term / (3.0 * (n - 1))))


# ------------------------------------------------------------------------------ feature certificate
def fcsb(s_lower, eps, sigma):
    """C4: <F(x+delta), u> >= 2 Phi(Phi^-1(s_lower) - eps/sigma) - 1 (a cosine bound where positive)."""
    s = np.clip(np.asarray(s_lower, dtype=float), 0.0, 1.0)
    return _out(2.0 * _st.norm.cdf(_st.norm.ppf(s) - np.asarray(eps, dtype=float) / np.asarray(sigma, dtype=float)) - 1.0)


def fcsb_radius(s_lower, sigma, cos_min=0.5):
    """Largest eps with fcsb(s_lower, eps, sigma) >= cos_min: sigma (Phi^-1(s_lower) - Phi^-1((1 + cos_min)/2))."""
    s = np.clip(np.asarray(s_lower, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        r = np.asarray(sigma, dtype=float) * (_st.norm.ppf(s) - _st.norm.ppf((1.0 + cos_min) / 2.0))
    return _out(np.maximum(r, 0.0))
