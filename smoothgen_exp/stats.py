"""Confidence bounds and certified radii. Pure numpy/scipy (no torch), vectorised over inputs.

Conventions (SPEC section 4, C1):
- `alpha` is the one-sided miss probability of a bound: P(p < cp_lower(K, n, alpha)) <= alpha.
- `cp_lower`/`cp_upper` are the one-sided Clopper-Pearson bounds, equal to the two ends of
  `statsmodels.stats.proportion.proportion_confint(k, n, alpha=2*alpha, method="beta")`.
- Radii are in the norm of the noised space (L2 for isotropic Gaussian noise).

Scalars in give Python floats out; arrays in give arrays out.

Over 300 lines: every bound behind a printed certificate lives here, next to its derivation, so that a
soundness review reads the mathematics of SPEC 4 in one torch-free file and tests it in one place.
"""

from __future__ import annotations

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

__all__ = [
    "cp_lower", "cp_upper", "cohen_radius", "oracle_corrected_lower", "binom_pvalue",
    # scaling laws (RS-for-VLM paper, section 5)
    "z_two_sided", "expected_radius", "expected_radius_shore", "shore_ppf", "scaling_ratio", "scaling_in_range",
    "radius_drop", "accuracy_drop_bound",
    # output, distribution and feature certificates (SPEC C2-C4)
    "tv_bound", "wp_bound", "harm_upper", "fcsb", "fcsb_radius", "output_tv_bound", "output_lipschitz_bound",
    "mcdiarmid_mean_bound", "coordinate_interval", "hoeffding_lower", "hoeffding_upper", "empirical_bernstein_lower",
    "betting_stakes", "betting_lower", "betting_max_lower", "MEAN_BOUNDS", "mean_lower", "max_mean_lower",
    "order_statistic_rank",
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
        b = _sp.betaincinv(k, n - k + 1, alpha)        # = scipy.stats.beta.ppf, without its overhead
    return _out(np.where(k == 0, 0.0, b))


def cp_upper(k, n, alpha):
    """One-sided Clopper-Pearson upper bound: Beta quantile(1 - alpha; k + 1, n - k); 1 when k = n."""
    k, n, alpha = _check_counts(k, n, alpha)
    with np.errstate(invalid="ignore"):
        b = _sp.betaincinv(k + 1, n - k, 1.0 - alpha)
    return _out(np.where(k == n, 1.0, b))


def cohen_radius(p_lower, sigma):
    """Certified L2 radius sigma * Phi^-1(p_lower) when p_lower > 1/2, else 0.0 (Cohen et al. Thm 1)."""
    p, sigma = np.asarray(p_lower, dtype=float), np.asarray(sigma, dtype=float)
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("p_lower must lie in [0, 1]")
    if np.any(sigma < 0):
        raise ValueError("sigma must be >= 0")
    with np.errstate(divide="ignore"):
        r = sigma * _sp.ndtri(np.maximum(p, 0.5))          # = scipy.stats.norm.ppf
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
    """Two-sided binomial test of H0: p = 1/2 (Cohen et al.'s PREDICT). n = 0 gives 1.0.

    Bin(n, 1/2) is symmetric, so the outcomes at most as likely as k are those at least as far from n/2:
    p = 2 P(X >= max(k, n - k)), capped at 1 (scipy.stats.binomtest's two-sided p-value, which
    tests/test_stats.py compares; this closed form skips its generic search, ~50x faster).
    """
    k, n = int(k), int(n)
    if n == 0 or 2 * k == n:
        return 1.0
    return float(min(1.0, 2.0 * _sp.bdtrc(max(k, n - k) - 1, n, 0.5)))


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


def hoeffding_upper(mean, n, alpha):
    """Upper confidence bound for the mean of [0,1]-valued variables (Hoeffding)."""
    return float(min(1.0, mean + np.sqrt(np.log(1.0 / alpha) / (2.0 * n))))


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
    """C4: <F(x+delta), u> >= 2 Phi(Phi^-1(s_lower) - eps/sigma) - 1: an inner-product bound, and a cosine
    bound only where it is positive (||F|| <= 1); a value <= 0 says nothing about the cosine."""
    s = np.clip(np.asarray(s_lower, dtype=float), 0.0, 1.0)
    return _out(2.0 * _st.norm.cdf(_st.norm.ppf(s) - np.asarray(eps, dtype=float) / np.asarray(sigma, dtype=float)) - 1.0)


def fcsb_radius(s_lower, sigma, cos_min=0.5):
    """Largest eps with fcsb(s_lower, eps, sigma) >= cos_min: sigma (Phi^-1(s_lower) - Phi^-1((1 + cos_min)/2)).

    A radius for the cosine: cos_min must lie in [0, 1), since the FCSB bounds <F, u>, which bounds
    cos(F, u) only where it is positive (F = -0.4 u has <F, u> = -0.4 and cosine -1).
    """
    if not 0.0 <= float(cos_min) < 1.0:
        raise ValueError(f"cos_min={cos_min} must lie in [0, 1)")
    s = np.clip(np.asarray(s_lower, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        r = np.asarray(sigma, dtype=float) * (_st.norm.ppf(s) - _st.norm.ppf((1.0 + cos_min) / 2.0))
    return _out(np.maximum(r, 0.0))


# ------------------------------------------------------------------ betting bound (Waudby-Smith & Ramdas)
BETTING_C = 0.75     # the stake on a candidate mean m is capped at c/m, so every factor is >= 1 - c > 0


def betting_stakes(values, alpha) -> np.ndarray:
    """Predictable plug-in stakes lam_t of Waudby-Smith & Ramdas (2023, eqs. 26-27), tuned for a fixed n.

    mu_t = (1/2 + sum_{i<=t} X_i) / (t + 1),  s2_t = (1/4 + sum_{i<=t} (X_i - mu_i)^2) / (t + 1),
    lam_t = sqrt(2 ln(1/alpha) / (n s2_{t-1})) with s2_0 = 1/4: lam_t uses X_1..X_{t-1} only, and not
    the candidate mean (`betting_lower` caps it at c/m). `values` is [n] or [n, k] (k independent
    columns); the result has its shape.
    """
    x = np.asarray(values, dtype=float)
    n = x.shape[0]
    t = np.arange(1, n + 1, dtype=float).reshape((n,) + (1,) * (x.ndim - 1))
    mu = (0.5 + np.cumsum(x, axis=0)) / (t + 1.0)
    s2 = (0.25 + np.cumsum((x - mu) ** 2, axis=0)) / (t + 1.0)
    s2_prev = np.concatenate([np.full((1,) + x.shape[1:], 0.25), s2[:-1]], axis=0)
    return np.sqrt(2.0 * np.log(1.0 / alpha) / (n * s2_prev))


def betting_lower(values, alpha, c: float = BETTING_C, tol: float = 1e-10):
    """Betting lower confidence bound for the mean of [0, 1]-valued i.i.d. variables (Waudby-Smith &
    Ramdas 2023, "Estimating means of bounded random variables by betting", JRSS-B; fixed-n form).

    `values`: the n observations in the order they were drawn, a 1-D array (float out), or [n, k] for k
    independent means at once (array of k out). With probability >= 1 - alpha, mean >= the result.

    Derivation. For a candidate mean m in (0, 1] the capital K_t(m) = prod_{i<=t} (1 + b_i(m) (X_i - m))
    bets on "the mean is above m" with the stake b_i(m) = min(lam_i, c/m), c < 1, where lam_i >= 0
    depends on X_1..X_{i-1} only (`betting_stakes`). Then:
    - every factor is >= 1 - b_i(m) m >= 1 - c > 0 (X_i >= 0), so K_t(m) > 0;
    - at the true mean mu, b_i(mu) is fixed given X_<i and E[1 + b_i(mu) (X_i - mu) | X_<i] = 1, so
      K_t(mu) is a nonnegative martingale with K_0 = 1, and Ville's inequality gives
      P(max_{t<=n} K_t(mu) >= 1/alpha) <= alpha;
    - each factor f(m) = 1 + min(lam, c/m) (x - m) is continuous and non-increasing in m for x >= 0:
      it is 1 + lam (x - m) for m <= c/lam and 1 + c x/m - c beyond, both non-increasing and equal at
      m = c/lam. A product of positive non-increasing functions is non-increasing, so are K_t(m) and
      max_t K_t(m).
    The rejected set R = {m : max_{t<=n} K_t(m) >= 1/alpha} is therefore a down-set [0, L] (closed, by
    continuity), and mu lies outside R, i.e. mu > L, with probability >= 1 - alpha.
    L is found by bisection on the monotone max_t log K_t(m) to `tol`; the returned value is the
    bisection's lower end, a point of R (so never above L), with the threshold raised by 1e-9 to absorb
    rounding in the sum of logs. The bound is then capped at the sample mean and floored at 0, which
    only lowers it. The stakes are the paper's predictable plug-in with its regularised running mean and
    variance, and the cap c/m is its truncation (c = 1/2 or 3/4 in the paper; 3/4 here).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim not in (1, 2) or x.shape[0] < 1:
        raise ValueError("values must be a non-empty [n] or [n, k] array")
    if not np.all(np.isfinite(x)) or np.any((x < -1e-9) | (x > 1.0 + 1e-9)):
        raise ValueError("values must lie in [0, 1]")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    if not 0.0 < c < 1.0:
        raise ValueError("the stake cap c must lie in (0, 1)")
    x = np.clip(x, 0.0, 1.0)
    cols = x.reshape(x.shape[0], -1)
    lam = betting_stakes(cols, alpha)
    threshold = np.log(1.0 / alpha) + 1e-9

    def rejected(m):                 # m: [k] in (0, 1]; True where max_t K_t(m) >= 1/alpha
        stake = np.minimum(lam, c / m)
        return np.max(np.cumsum(np.log1p(stake * (cols - m)), axis=0), axis=0) >= threshold

    mean = cols.mean(axis=0)
    out = np.zeros_like(mean)
    live = mean > 0.0                # a zero mean gives the bound 0
    if np.any(live):
        cols, lam, mean_l = cols[:, live], lam[:, live], mean[live]
        hi = mean_l.copy()
        top = rejected(hi)           # all of [0, mean] rejected: the cap at the mean binds
        lo = np.where(top, hi, 0.0)
        active = ~top
        while np.any(active & (hi - lo > tol)):
            mid = (lo + hi) / 2.0
            rej = rejected(np.maximum(mid, 1e-300))
            lo = np.where(active & rej, mid, lo)
            hi = np.where(active & ~rej, mid, hi)
        out[live] = lo
    out = np.clip(np.minimum(out, mean), 0.0, 1.0)
    return float(out[0]) if x.ndim == 1 else out


def betting_max_lower(n, alpha, c: float = BETTING_C) -> float:
    """The largest value `betting_lower` can return from n observations (a ceiling, known before sampling).

    Every factor is at most 1 + (c/m)(1 - m), so no m above c / (c + (1/alpha)^(1/n) - 1) is ever
    rejected; n observations all equal to 1 come close once the stakes reach c/m.
    """
    return float(c / (c + np.expm1(np.log(1.0 / alpha) / n)))


MEAN_BOUNDS = ("betting", "bernstein", "hoeffding")


def mean_lower(values, alpha, bound: str):
    """Lower confidence bound (level alpha) on the mean of [0, 1]-valued i.i.d. `values` by `bound`
    (MEAN_BOUNDS): [n] in, a float out; [n, k] in (k independent means), an array of k out."""
    x = np.asarray(values, dtype=float)
    if bound == "betting":
        return betting_lower(x, alpha)
    if bound not in MEAN_BOUNDS:
        raise ValueError(f"unknown bound {bound!r} ({' | '.join(MEAN_BOUNDS)})")
    cols = x.reshape(x.shape[0], -1)
    n = cols.shape[0]
    var = cols.var(axis=0, ddof=1) if n > 1 else np.zeros(cols.shape[1])
    out = np.array([empirical_bernstein_lower(m, v, n, alpha) if bound == "bernstein" else hoeffding_lower(m, n, alpha)
                    for m, v in zip(cols.mean(axis=0), var, strict=True)])
    return float(out[0]) if x.ndim == 1 else out


def max_mean_lower(n: int, alpha: float, bound: str) -> float:
    """The largest value `mean_lower` can give from n values (a ceiling known before sampling)."""
    if bound == "betting":
        return betting_max_lower(n, alpha)
    if bound == "bernstein":
        return empirical_bernstein_lower(1.0, 0.0, n, alpha)
    return hoeffding_lower(1.0, n, alpha)


def order_statistic_rank(n: int, q: float, alpha: float) -> int | None:
    """Smallest k with P(Binom(n, q) >= k) <= alpha, or None when no k <= n has it.

    The k-th smallest of n i.i.d. draws D_(k) is then an upper confidence bound on the q-quantile
    Q = inf{r : P(D <= r) >= q}: D_(k) < Q needs at least k draws below Q, and their number is
    Binom(n, P(D < Q)) with P(D < Q) <= q, so P(D_(k) < Q) <= P(Binom(n, q) >= k) <= alpha. This holds
    with ties and atoms (no continuity assumed), and with probability >= 1 - alpha, P(D <= D_(k)) >= q.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must lie in [0, 1]")
    sf = _st.binom.sf(np.arange(n), n, q)          # sf[k - 1] = P(Binom(n, q) >= k), k = 1..n
    ok = np.flatnonzero(sf <= alpha)
    return int(ok[0]) + 1 if ok.size else None
