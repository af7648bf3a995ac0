"""The statistics core against statsmodels/scipy and against simulation."""

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from smoothgen_exp.stats import binom_pvalue, cohen_radius, cp_lower, cp_upper, oracle_corrected_lower

GRID_N = [1, 2, 5, 10, 37, 100, 1000, 10_000]
GRID_ALPHA = [0.5e-3, 0.001, 0.01, 0.05, 0.2]


@pytest.mark.parametrize("n", GRID_N)
@pytest.mark.parametrize("alpha", GRID_ALPHA)
def test_clopper_pearson_equals_statsmodels(n, alpha):
    ks = np.unique(np.r_[0, 1, n // 3, n // 2, n - 1, n].clip(0, n))
    for k in ks:
        lo, hi = proportion_confint(int(k), n, alpha=2 * alpha, method="beta")
        assert cp_lower(int(k), n, alpha) == pytest.approx(lo, abs=1e-12)
        assert cp_upper(int(k), n, alpha) == pytest.approx(hi, abs=1e-12)


def test_edges_are_exact_and_finite():
    assert cp_lower(0, 10, 0.05) == 0.0
    assert cp_upper(10, 10, 0.05) == 1.0
    # k = n: lower bound alpha^(1/n); k = 0: upper bound 1 - alpha^(1/n)
    assert cp_lower(10, 10, 0.05) == pytest.approx(0.05 ** (1 / 10))
    assert cp_upper(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10))
    k = np.arange(0, 51)
    lo, hi = cp_lower(k, 50, 0.001), cp_upper(k, 50, 0.001)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    assert np.all(np.diff(lo) > 0) and np.all(np.diff(hi) > 0)
    assert np.all(lo < k / 50 + 1e-12) and np.all(hi > k / 50 - 1e-12)


def test_scalar_in_scalar_out_and_bad_inputs():
    assert isinstance(cp_lower(3, 10, 0.05), float)
    with pytest.raises(ValueError):
        cp_lower(11, 10, 0.05)
    with pytest.raises(ValueError):
        cp_lower(1, 0, 0.05)
    with pytest.raises(ValueError):
        cp_upper(1, 10, 1.5)


def miss_rate(bound, p: float, n: int, alpha: float, trials: int, seed: int) -> float:
    """Fraction of `trials` binomial experiments in which the lower bound exceeds the true p."""
    k = np.random.default_rng(seed).binomial(n, p, size=trials)
    return float(np.mean(bound(k, n, alpha) > p))


@pytest.mark.parametrize("p", [0.3, 0.6, 0.9, 0.99])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_cp_lower_coverage_by_simulation(p, alpha):
    trials, n = 40_000, 50
    tol = 4 * np.sqrt(alpha * (1 - alpha) / trials)
    assert miss_rate(cp_lower, p, n, alpha, trials, seed=1) <= alpha + tol
    # cp_upper is the mirror image: P(p > cp_upper) <= alpha
    k = np.random.default_rng(2).binomial(n, p, size=trials)
    assert np.mean(cp_upper(k, n, alpha) < p) <= alpha + tol


def test_coverage_harness_detects_a_too_optimistic_bound():
    """The harness above must be able to fail: a bound computed at 3 alpha is caught."""
    trials, n, alpha = 40_000, 50, 0.05
    tol = 4 * np.sqrt(alpha * (1 - alpha) / trials)
    rates = [miss_rate(lambda k, n, a: cp_lower(k, n, 3 * a), p, n, alpha, trials, seed=3)
             for p in (0.3, 0.6, 0.9)]
    assert max(rates) > alpha + tol


def test_cohen_radius():
    assert cohen_radius(0.5, 1.0) == 0.0
    assert cohen_radius(0.3, 1.0) == 0.0
    assert cohen_radius(norm.cdf(1.0), 0.25) == pytest.approx(0.25)
    assert cohen_radius(0.99, 0.5) == pytest.approx(0.5 * norm.ppf(0.99))
    r = cohen_radius(np.array([0.4, 0.5, 0.6, 0.9]), 2.0)
    assert r[0] == r[1] == 0.0 and r[2] == pytest.approx(2 * norm.ppf(0.6))
    with pytest.raises(ValueError):
        cohen_radius(1.2, 1.0)


def test_oracle_corrected_lower_formulas():
    assert oracle_corrected_lower(0.9, None) == 0.9
    assert oracle_corrected_lower(0.9, 0.1) == pytest.approx(0.8 / 0.9)
    assert oracle_corrected_lower(0.9, 0.1, "symmetric") == pytest.approx(0.8 / 0.8)
    assert oracle_corrected_lower(0.05, 0.1) == 0.0  # clipped
    assert oracle_corrected_lower(0.9, 0.0) == pytest.approx(0.9)
    for bad in (0.5, 0.7, -0.1):
        with pytest.raises(ValueError):
            oracle_corrected_lower(0.9, bad)
    with pytest.raises(ValueError):
        oracle_corrected_lower(0.9, 0.1, "optimistic")


def test_bounded_model_is_sound_where_the_symmetric_one_is_not():
    """One-directional oracle errors (false positives at rate eps, no false negatives).

    The agreement rate is q = p + (1 - p) eps. The bounded correction recovers p exactly; the paper's
    symmetric one claims more than the truth.
    """
    eps = 0.2
    for p in (0.55, 0.6, 0.8, 0.95):
        q = p + (1 - p) * eps
        assert oracle_corrected_lower(q, eps) == pytest.approx(p)
        assert oracle_corrected_lower(q, eps, "symmetric") > p + 1e-3
    # and the bounded one is never above the truth for any error pair within eps
    rng = np.random.default_rng(0)
    for _ in range(1000):
        p, e_fp, e_fn = rng.uniform(0, 1), rng.uniform(0, eps), rng.uniform(0, eps)
        q = p * (1 - e_fn) + (1 - p) * e_fp
        assert oracle_corrected_lower(q, eps) <= p + 1e-12


def test_binom_pvalue():
    assert binom_pvalue(0, 0) == 1.0
    assert binom_pvalue(50, 100) == pytest.approx(1.0)
    assert binom_pvalue(100, 100) < 1e-20


def test_oracle_error_bound_covers_known_error_rates():
    from smoothgen_exp.oracles.error import oracle_error_bound

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    pred = labels.copy()
    flip = rng.random(3000) < 0.05                       # 5% errors, all into class (label + 1) % 3
    pred[flip] = (labels[flip] + 1) % 3
    res = oracle_error_bound(pred, labels, 3, alpha=0.01)
    true_fn = max(np.mean(pred[labels == c] != c) for c in range(3))
    true_fp = max(np.mean(pred[labels != c] == c) for c in range(3))
    assert res["eps"] >= max(true_fn, true_fp)
    assert res["eps"] < 0.15 and len(res["per_class"]) == 3
    perfect = oracle_error_bound(labels, labels, 3, alpha=0.01)
    assert 0 < perfect["eps"] < 0.01
