"""The statistics core against statsmodels/scipy and against simulation."""

import numpy as np
import pytest
from scipy import stats
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
    for n in (1, 2, 3, 10, 11, 100, 1001, 10_000):          # the closed form is scipy's two-sided test
        for k in sorted({0, 1, n // 2, (n + 1) // 2, n // 2 + 1, (3 * n) // 5, n - 1, n} & set(range(n + 1))):
            assert binom_pvalue(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-300)


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
    # Bonferroni over the K false-negative rates: each bound at alpha / K
    assert res["eps"] == pytest.approx(max(proportion_confint(r["false_neg"], r["positives"], 2 * 0.01 / 3,
                                                              method="beta")[1] for r in res["per_class"]))


def test_oracle_error_covers_the_false_positive_rate_of_any_class_mix():
    """The bounded model needs the rate at which non-c_A outputs are read as c_A under the generations'
    class mix. A pooled false-positive rate at the held-out frequencies understates it when the mix is one
    class: here 2% pooled into class 0, but 20% of class 1 is read as 0 (the premise review asked about).
    eps bounds class 1's false-negative rate, hence every mix."""
    from smoothgen_exp.oracles.error import oracle_error_bound

    labels = np.repeat(np.arange(10), 1000)
    pred = labels.copy()
    pred[1000:1200] = 0                                  # 20% of the ones are read as zeros
    res = oracle_error_bound(pred, labels, 10, alpha=0.001)
    pooled_fp_into_0 = np.mean(pred[labels != 0] == 0)
    assert pooled_fp_into_0 < 0.03 and res["eps"] >= np.mean(pred[labels == 1] == 0) == 0.2


# ------------------------------------------------------- betting bound (Waudby-Smith & Ramdas, issue 11.8)
from smoothgen_exp.stats import (  # noqa: E402
    BETTING_C,
    betting_lower,
    betting_max_lower,
    betting_stakes,
    empirical_bernstein_lower,
    hoeffding_lower,
)

BOUNDED_LAWS = {
    "bernoulli(0.6)": (lambda rng, size: (rng.random(size) < 0.6).astype(float), 0.6),
    "beta(2,5)": (lambda rng, size: rng.beta(2.0, 5.0, size), 2.0 / 7.0),
    "uniform": (lambda rng, size: rng.random(size), 0.5),
    "bernoulli(0.97)": (lambda rng, size: (rng.random(size) < 0.97).astype(float), 0.97),
}


def betting_miss_rate(law: str, n: int, alpha: float, trials: int, seed: int) -> float:
    """Fraction of `trials` samples of size n whose betting lower bound exceeds the true mean."""
    draw, mu = BOUNDED_LAWS[law]
    x = draw(np.random.default_rng(seed), (n, trials))          # one column per trial, bounded together
    return float(np.mean(betting_lower(x, alpha) > mu))


@pytest.mark.parametrize("law", ["bernoulli(0.6)", "beta(2,5)", "uniform"])
@pytest.mark.parametrize("n", [30, 100])
def test_betting_lower_coverage_by_simulation(law, n):
    alpha, trials = 0.05, 3000
    assert betting_miss_rate(law, n, alpha, trials, seed=n) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.slow
@pytest.mark.parametrize("law", list(BOUNDED_LAWS))
@pytest.mark.parametrize("n", [30, 100, 1000])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_betting_lower_coverage_high_resolution(law, n, alpha):
    trials = 100_000 if n < 1000 else 20_000
    miss = sum(betting_miss_rate(law, n, alpha, trials // 10, seed=1000 * n + s) for s in range(10)) / 10
    assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def test_betting_capital_is_non_increasing_in_the_candidate_mean():
    """The derivation's key step: with stakes min(lam, c/m), max_t K_t(m) is non-increasing in m."""
    rng = np.random.default_rng(3)
    for x in (rng.random(50), (rng.random(50) < 0.8).astype(float), rng.beta(0.3, 0.3, 50)):
        lam = betting_stakes(x, 0.01)
        m = np.linspace(1e-6, 1.0, 2001)[:, None]
        log_k = np.cumsum(np.log1p(np.minimum(lam, BETTING_C / m) * (x - m)), axis=1).max(axis=1)
        assert np.all(np.diff(log_k) <= 1e-12)
        assert np.all(1.0 + np.minimum(lam, BETTING_C / m) * (x - m) >= 1.0 - BETTING_C - 1e-12)


def test_betting_stakes_are_predictable():
    x = np.random.default_rng(4).random(40)
    lam = betting_stakes(x, 0.01)
    for t in (0, 1, 17, 39):                                  # lam_t ignores X_t and everything after it
        y = x.copy()
        y[t:] = 1.0 - y[t:]
        assert lam[t] == betting_stakes(y, 0.01)[t]


def test_betting_tighter_than_hoeffding_and_empirical_bernstein():
    alpha, n, trials = 0.001, 100, 400
    x = (np.random.default_rng(5).random((n, trials)) < 0.6).astype(float)
    mean, var = x.mean(0), x.var(0, ddof=1)
    bet = betting_lower(x, alpha)
    hoef = np.array([hoeffding_lower(m, n, alpha) for m in mean])
    bern = np.array([empirical_bernstein_lower(m, v, n, alpha) for m, v in zip(mean, var, strict=True)])
    assert np.mean(mean - bet) < np.mean(mean - hoef) < np.mean(mean - bern)


def test_betting_never_above_the_mean_nor_below_zero():
    rng = np.random.default_rng(6)
    for x in (rng.random((20, 300)), (rng.random((5, 300)) < 0.5).astype(float), rng.beta(0.2, 3, (200, 50))):
        b = betting_lower(x, 0.05)
        assert np.all(b <= x.mean(0)) and np.all(b >= 0)
    assert betting_lower(np.zeros(50), 0.01) == 0.0
    assert betting_lower(np.array([1.0]), 0.5) <= 1.0


def test_betting_known_answers():
    alpha, n = 0.001, 100
    ones = betting_lower(np.ones(n), alpha)
    # the ceiling c / (c + (1/alpha)^(1/n) - 1) is below Clopper-Pearson's alpha^(1/n) for c < 1
    assert betting_max_lower(n, alpha) <= alpha ** (1 / n)
    assert ones <= betting_max_lower(n, alpha) and ones == pytest.approx(betting_max_lower(n, alpha), abs=1e-3)
    assert ones > 0.9
    flat = betting_lower(np.full(n, 0.7), alpha)
    assert 0.6 < flat < 0.7
    assert isinstance(ones, float)


def test_betting_columns_are_independent_bounds():
    x = np.random.default_rng(7).random((60, 4))
    together = betting_lower(x, 0.01)
    assert together.shape == (4,)
    for j in range(4):
        assert together[j] == pytest.approx(betting_lower(x[:, j], 0.01), abs=1e-9)


def test_betting_rejects_bad_input():
    for bad in (np.array([0.5, 1.2]), np.array([-0.1, 0.5]), np.array([np.nan]), np.array([])):
        with pytest.raises(ValueError):
            betting_lower(bad, 0.05)
    with pytest.raises(ValueError):
        betting_lower(np.ones(3), 1.5)
