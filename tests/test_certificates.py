"""Every certificate against a generator whose smoothed output is known in closed form.

The step generator G(z) = 1[w.z > 0] * I (I a fixed image) has, under eta ~ N(0, sigma^2 I),
h(x) = Phi(a) I with a = w.x / (sigma |w|). A shift delta along w by eps moves a by eps / sigma, which is
the worst case over ||delta|| <= eps. With I the all-ones image the C2 TV bound is attained exactly.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm

from smoothgen_exp.certifiers.center import CenterCertifier
from smoothgen_exp.certifiers.distribution import DistributionCertifier
from smoothgen_exp.certifiers.feature import FeatureCertifier
from smoothgen_exp.certifiers.output_bound import OutputBoundCertifier
from smoothgen_exp.certifiers.sequential import GRID, SequentialCertifier, mixture_log_wealth
from smoothgen_exp.context import ItemContext
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import (
    accuracy_drop_bound,
    cp_lower,
    expected_radius,
    expected_radius_shore,
    fcsb,
    harm_upper,
    output_tv_bound,
    radius_drop,
    scaling_in_range,
    scaling_ratio,
    tv_bound,
    wp_bound,
)

from .conftest import drive

D, M, SIGMA = 6, 16, 0.5
W = torch.zeros(D, dtype=torch.float64)
W[0] = 1.0
EPS = (0.1, 0.25, 0.5, 1.0)


class StepModel:
    """G(z) = 1[w.z > 0] * image, outputs in [0, 1]^M."""

    output_range = (0.0, 1.0)
    output_shape = (M,)

    def __init__(self, image=None):
        self.image = torch.ones(M, dtype=torch.float64) if image is None else image

    def generate(self, z, gen):
        return (z @ W > 0).to(torch.float64)[:, None] * self.image


class SumOracle:
    """Class 1 when the output is lit, class 0 when it is blank. Features: +u0 / -u0 (unit vectors)."""

    num_classes = 2

    def classify(self, out):
        return (out.reshape(len(out), -1).sum(1) > 0).long()

    def features(self, out):
        sign = 2.0 * self.classify(out).double() - 1.0
        return sign[:, None] * torch.tensor([1.0, 0.0], dtype=torch.float64)


def ctx_at(a: float, seed: int = 0, model=None, label: int = 0) -> ItemContext:
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = a * SIGMA
    item = SimpleNamespace(item_id=f"it{seed}", condition="", label=label)
    return ItemContext(item, x, model or StepModel(), SumOracle(), GaussianNoise(SIGMA), seed, 2000)


def test_scaling_law_reference_values():
    assert scaling_ratio(100, 1000, 0.001) == pytest.approx(0.555, abs=5e-4)
    assert scaling_ratio(100, 10000, 0.001) == pytest.approx(0.487, abs=5e-4)
    assert radius_drop(100, 0.001) == pytest.approx(1 - 1.64 * 3.2905 / 10, abs=1e-3)
    assert accuracy_drop_bound(100, 0.001) == pytest.approx(0.32905, abs=1e-4)
    assert not scaling_in_range(20, 0.001) and scaling_in_range(30, 0.001)
    assert scaling_ratio(20, 10000, 0.001) == 0.0           # clipped where Cor. 5.4 turns negative
    for p in (0.8, 0.95, 0.99):
        assert expected_radius_shore(p, 0.5, 0.001, 1000) == pytest.approx(expected_radius(p, 0.5, 0.001, 1000),
                                                                           rel=0.05)


@pytest.mark.parametrize("a", [-0.8, -0.1, 0.0, 0.3, 1.2])
def test_output_bound_holds_at_the_worst_shift_and_is_tight(a):
    cert = OutputBoundCertifier(n=4000, alpha=0.001, eps_grid=EPS)
    row = cert.certify(ctx_at(a))
    rho = math.sqrt(M) / 2
    assert row["diag_rho"] == pytest.approx(rho)
    for eps in EPS:
        true_shift = max(abs(norm.cdf(a) - norm.cdf(a + s * eps / SIGMA)) for s in (-1, 1)) * math.sqrt(M)
        bound = row[f"bound_tv_eps{eps:g}"]
        assert bound >= true_shift - 1e-12
        assert row[f"bound_lip_eps{eps:g}"] >= bound
    # at a = -eps/(2 sigma) the all-ones image attains the TV bound exactly
    eps = 0.5
    worst = abs(norm.cdf(-eps / (2 * SIGMA)) - norm.cdf(eps / (2 * SIGMA))) * math.sqrt(M)
    assert output_tv_bound(rho, eps, SIGMA) == pytest.approx(worst, rel=1e-12)


def test_output_bound_mcdiarmid_and_coordinate_intervals_cover_the_truth():
    a, misses = 0.4, 0
    for seed in range(20):
        ctx = ctx_at(a, seed)
        row = OutputBoundCertifier(n=1000, alpha=0.01, eps_grid=EPS).certify(ctx)
        h_hat = np.zeros(M)
        for out in ctx.outputs(1000, "mean"):       # same stream as the certifier: the same h_hat
            h_hat += out.sum(0).numpy()
        h_hat /= 1000
        misses += np.linalg.norm(h_hat - norm.cdf(a)) > row["bound_mcdiarmid"]
    assert misses == 0
    # certified per-pixel interval at eps contains the true h_j(x + delta) at both worst shifts
    from smoothgen_exp.stats import coordinate_interval

    t = row["bound_coordinate_halfwidth"]
    for eps in EPS:
        lo, hi = coordinate_interval(norm.cdf(a) - t, norm.cdf(a) + t, eps, SIGMA)
        for s in (-1, 1):
            assert lo <= norm.cdf(a + s * eps / SIGMA) <= hi


def test_distribution_bounds_hold_at_the_worst_shift():
    a = -1.0                                     # event A = "lit output" (class 1 != label 0)
    for seed in range(10):
        row = DistributionCertifier(n=3000, alpha=0.001, eps_grid=EPS).certify(ctx_at(a, seed))
        assert row["bound_event_p_upper"] >= norm.cdf(a)
        for eps in EPS:
            tv_true = abs(norm.cdf(a + eps / SIGMA) - norm.cdf(a))     # the laws are Bernoulli on {0, I}
            assert row[f"bound_tv_eps{eps:g}"] >= tv_true
            assert row[f"bound_w1_eps{eps:g}"] >= tv_true * math.sqrt(M)       # W1 = TV * ||I||
            assert row[f"bound_harm_eps{eps:g}"] >= norm.cdf(a + eps / SIGMA)
    # the closed forms themselves
    assert tv_bound(0.0, 1.0) == 0.0
    assert wp_bound(0.3, 0.5, 2.0, 2) == pytest.approx(2.0 * tv_bound(0.3, 0.5) ** 0.5)
    assert harm_upper(norm.cdf(-1.0), 0.5, 0.5) == pytest.approx(norm.cdf(0.0))


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0])
def test_feature_bound_holds_at_the_worst_shift(a):
    """F(x) = (2 Phi(a) - 1) u0 and s = Phi(a); the worst shift lowers a by eps/sigma."""
    for seed in range(5):
        row = FeatureCertifier(n0=100, n=3000, alpha=0.001, eps_grid=EPS).certify(ctx_at(a, seed))
        assert row["bound_s_lower"] <= norm.cdf(a)
        for eps in EPS:
            col = row[f"bound_fcsb_eps{eps:g}"]                     # NaN: no cosine certified (issue 11.2)
            assert math.isnan(col) or 0 < col <= 2 * norm.cdf(a - eps / SIGMA) - 1 + 1e-12
        # the certified radius for cosine >= 1/2 never exceeds the true one
        true_radius = SIGMA * (a - norm.ppf(0.75))
        assert row["radius"] <= max(true_radius, 0.0) + 1e-12
    assert fcsb(norm.cdf(1.0), 0.5, 0.5) == pytest.approx(2 * norm.cdf(0.0) - 1)


@pytest.mark.parametrize("give_up", ["auto", "predictive"])
def test_sequential_keeps_alpha_at_the_boundary_and_stops_early_when_easy(give_up):
    alpha, trials = 0.05, 400
    a = 0.8                                       # true radius sigma * a: target exactly that (null)
    wins = 0
    for seed in range(trials):                    # n0 = 100: selection in stages (predictive 10, 20, 40, 80, 100; table 10, 100)
        row = SequentialCertifier(n0=100, n=2000, alpha=alpha, batch_size=50, target_radius=SIGMA * a,
                                  give_up=give_up).certify(ctx_at(a, seed, label=1))
        wins += row["certified"]
    assert wins / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    easy = SequentialCertifier(n0=20, n=10_000, alpha=0.001, batch_size=50, target_radius=SIGMA * 1.0,
                               give_up=give_up).certify(ctx_at(4.0, 0, label=1))
    assert easy["certified"] and easy["samples_used"] <= 1000
    hopeless = SequentialCertifier(n0=20, n=10_000, alpha=0.001, batch_size=50, target_radius=SIGMA * 2.0,
                                   give_up=give_up).certify(ctx_at(0.5, 0, label=1))
    assert not hopeless["certified"] and hopeless["samples_used"] < 10_000


def test_the_mixture_wealth_is_a_test_supermartingale_with_the_hand_computed_value():
    """K_t is the mean over q_j = p* + (1 - p*)(j - 1/2)/GRID of the likelihood ratio of Bern(q_j) against
    Bern(p*). Its expectation, summed exactly over the binomial law of the hits, is 1 at p_A = p* and below
    1 for p_A < p* (the second fails for any alternative q_j < p*): Ville's inequality then applies."""
    from scipy.stats import binom

    p_star, h, t = 0.9, 37, 40
    q = p_star + (1 - p_star) * (np.arange(GRID) + 0.5) / GRID
    expected = np.log(np.mean((q / p_star) ** h * ((1 - q) / (1 - p_star)) ** (t - h)))
    assert float(mixture_log_wealth(torch.tensor(h), torch.tensor(t), p_star)) == pytest.approx(expected, rel=1e-12)
    for t in (1, 10, 200):
        hits = torch.arange(t + 1)
        wealth = torch.exp(mixture_log_wealth(hits, torch.full_like(hits, t), p_star)).numpy()
        for p, relation in ((p_star, "equal"), (p_star - 0.02, "below")):
            mean = float((binom.pmf(hits.numpy(), t, p) * wealth).sum())
            assert mean == pytest.approx(1.0, abs=1e-9) if relation == "equal" else mean < 1.0
    # exact near p* = 1 (the alternatives are computed from their offsets, not as 1 - q)
    assert float(mixture_log_wealth(torch.tensor(0), torch.tensor(1), 1 - 1e-12)) == pytest.approx(
        math.log(np.mean(1 - (np.arange(GRID) + 0.5) / GRID)), rel=1e-9)


def test_a_negative_target_radius_is_refused():
    """Review counterexample: target_radius = -1 at sigma = 1 gives p* = 0.16, and a class with p = 0.3
    (not the majority: 0.45 was) was returned as certified. A target must be >= 0."""
    with pytest.raises(SmoothgenError, match="target_radius"):
        SequentialCertifier(n0=20, n=500, alpha=0.01, batch_size=50, target_radius=-1.0)


@pytest.mark.parametrize(("share", "give_up"), [(0.5, "predictive"), (0.8, "auto")])
def test_sequential_with_the_budget_test_keeps_alpha_at_the_boundary(share, give_up):
    """The bet at (1 - share) alpha plus Clopper-Pearson on all n samples at share * alpha (union bound)."""
    alpha, trials, a = 0.05, 400, 0.8
    wins = sum(SequentialCertifier(n0=20, n=1000, alpha=alpha, batch_size=50, target_radius=SIGMA * a,
                                   budget_share=share, give_up=give_up).certify(ctx_at(a, seed, label=1))["certified"]
               for seed in range(trials))
    assert wins / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_the_budget_test_certifies_at_its_exact_count_between_fixed_n_and_the_union_bound():
    """p = Phi(0.8) = 0.788 against p* = Phi(0.7) = 0.758 at n = 2,000: a bet at alpha = 0.01 needs about
    log(100) / KL(p || p*) = 1,800 samples, so it often runs out of budget; the test at the budget then
    certifies the item exactly when its hits reach k_n. k_n is never below fixed n's count at alpha (the
    union event contains S_n >= k_n) and, with the bet at 0.2 alpha, never above the Clopper-Pearson count at
    0.8 alpha that a union bound would use; with the bet at the full alpha the test still has what Ville's
    bound leaves over (issue 13: the union bound needed a share of alpha taken from the bet)."""
    from scipy.stats import binom

    alpha, n = 0.01, 2000
    p_star = norm.cdf(0.7)
    counts = np.arange(n + 1)
    fixed = int(counts[binom.sf(counts - 1, n, p_star) <= alpha][0])
    union = int(counts[cp_lower(counts, n, 0.8 * alpha) > p_star][0])
    for share in (0.0, 0.8):
        cert = SequentialCertifier(n0=20, n=n, alpha=alpha, batch_size=50, target_radius=SIGMA * 0.7,
                                   budget_share=share)
        k_n = cert.counts_needed(p_star)[0]
        assert fixed < k_n <= n and (share == 0.0 or k_n <= union)
        at_budget, certified = 0, 0
        for seed in range(12):
            row = cert.certify(ctx_at(0.8, seed, label=1))
            certified += row["certified"]
            if row["sequential_decision"] == "certified at the budget":
                at_budget += 1
                assert row["samples_used"] - row["selection_samples"] == n and row["count"] >= k_n
            elif row["sequential_decision"] == "gave up: budget spent":
                assert row["count"] < k_n
        assert at_budget >= (0 if share == 0.0 else 5) and certified >= 7


def test_the_budget_count_is_exact_against_every_path():
    """All 2^14 vote paths at p* = 0.6, alpha = 0.05, with the bet at a low threshold so that many paths
    cross: P(the bet crosses at some t, or S_n >= k) summed path by path. budget_count must be the least k
    with that <= alpha (the exact union, not a bound on it), and the bet's crossing count per t the least
    hits whose wealth reaches the threshold."""
    import itertools

    from smoothgen_exp.certifiers.sequential import SLACK, budget_count, crossing_counts

    n, p_star, alpha, threshold = 14, 0.6, 0.05, math.log(12.0)
    b = crossing_counts(p_star, n, threshold - SLACK)
    for t in range(1, n + 1):
        wealth = mixture_log_wealth(torch.arange(t + 1), torch.tensor(t), p_star).numpy()
        reach = np.flatnonzero(wealth >= threshold - SLACK)
        assert b[t - 1] == (reach[0] if len(reach) else t + 1)
    union = np.zeros(n + 2)                                # P(crossed, or S_n >= k) for k = 0..n+1
    for path in itertools.product((0, 1), repeat=n):
        hits = np.cumsum(path)
        prob = p_star ** hits[-1] * (1 - p_star) ** (n - hits[-1])
        crossed = bool((hits >= b).any())
        union += prob * ((np.arange(n + 2) <= hits[-1]) | crossed)
    expected = int(np.flatnonzero(union <= alpha)[0])
    assert 0.0 < union[n + 1] < alpha and union[expected - 1] > alpha      # the bet alone leaves some alpha
    assert budget_count(p_star, n, threshold, alpha) == expected


def test_the_budget_count_at_a_tiny_alpha_is_the_least_count_in_log_space():
    """Review (2026-12-07): below alpha of about 1e-40 the dropped lower tail (TINY, counted as crossed)
    alone exceeded alpha, so k_n was n + 1 and only the bet could certify. Checked against the union
    computed in log space (no underflow, nothing dropped): k_n meets alpha and k_n - 1 does not."""
    from scipy.special import logsumexp

    from smoothgen_exp.certifiers.sequential import budget_count, crossing_counts

    p_star, n, alpha = 0.5, 1200, 1e-300
    threshold = math.log(1 / alpha) + 1e-9
    b = crossing_counts(p_star, n, threshold)
    log_dist, crossed = np.full(n + 1, -np.inf), []
    log_dist[0] = 0.0
    for t in range(1, n + 1):
        new = log_dist + math.log1p(-p_star)
        new[1:] = np.logaddexp(new[1:], log_dist[:-1] + math.log(p_star))
        crossed.append(logsumexp(new[b[t - 1]:]))
        new[b[t - 1]:] = -np.inf
        log_dist = new

    def log_level(k: int) -> float:
        return float(np.logaddexp(logsumexp(crossed), logsumexp(log_dist[k:])))

    k_n = budget_count(p_star, n, threshold, alpha)
    assert k_n <= n and log_level(k_n) <= math.log(alpha) < log_level(k_n - 1)


def _bet_on(certifier: SequentialCertifier, hits: int, p_star: float) -> tuple[str, int, int]:
    """Drive the betting loop on n fixed votes for class 1: `hits` of them hits, evenly spread."""
    n = certifier.n
    votes = torch.tensor([int((i + 1) * hits // n) - int(i * hits // n) for i in range(n)])   # 1 = hit
    return drive(certifier._bet(1, p_star), votes)[0]


def _program_on(certifier: SequentialCertifier, votes: list[int], p_star: float) -> tuple[dict, int]:
    """Drive the whole program (selection, then the bet) on these class votes, then all hits for class 1.
    Returns (row, samples drawn)."""
    ctx = SimpleNamespace(num_classes=10, noise=SimpleNamespace(required_p=lambda r: p_star))
    return drive(certifier._program(ctx), torch.tensor(votes + [1] * (certifier.n0 + certifier.n)))


def test_selection_gives_up_after_its_first_votes_when_they_are_already_hopeless():
    """p* = Phi(2), n = 10,000, alpha = 0.001 (make bench's r = 0.5): 7 of the first 10 selection votes
    for class 1 leave a predictive chance of reaching k_n (about 1e-4) below give_up_alpha times what the
    other n0 - 10 selection samples cost (0.05 x 90 / 10,000): the item gives up after 10 samples (it drew
    all 100 before). 9 of 10 (chance 0.05) draw the whole selection; 10 of 10 end it there and bet."""
    from scipy.stats import norm

    cert = SequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=50, target_radius=0.5,
                               give_up_alpha=0.05, budget_share=0.0, give_up="predictive")
    p_star = float(norm.cdf(2.0))
    row, drawn = _program_on(cert, [1] * 7 + [2] * 3, p_star)
    assert row["sequential_decision"] == "gave up: selection votes below the target"
    assert drawn == row["samples_used"] == row["selection_samples"] == 10
    row, drawn = _program_on(cert, [1] * 9 + [2], p_star)
    assert row["selection_samples"] == 100 and row["certified"]
    row, drawn = _program_on(cert, [1] * 10, p_star)
    assert row["selection_samples"] == 10 and row["certified"] and drawn == row["samples_used"] < 1000


def test_selection_doubles_its_samples_and_gives_up_at_the_stage_that_makes_it_hopeless():
    """Selection draws 10, 20, 40, 80, then n0 = 100 samples, and checks the futility rule after each
    stage. 9 of the first 10 for class 1 go on (the test above); 16 of 20 (a chance of 1e-4, below
    0.05 x 80 / 10,000 = 4e-4) give up there, without the other 80 (before, 9 of 10 drew all 100); 17 of
    20 (0.0015) go on, and followed by hits only draw the whole selection and certify."""
    from scipy.stats import norm

    cert = SequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=50, target_radius=0.5,
                               give_up_alpha=0.05, budget_share=0.0, give_up="predictive")
    p_star = float(norm.cdf(2.0))
    need = min(cert.counts_needed(p_star))
    assert cert._chance(0, 0, need, (16, 4)) < 0.05 * 80 / 10_000 < cert._chance(0, 0, need, (17, 3))
    row, drawn = _program_on(cert, [1] * 9 + [2] + [1] * 7 + [2] * 3, p_star)
    assert row["sequential_decision"] == "gave up: selection votes below the target"
    assert drawn == row["samples_used"] == row["selection_samples"] == 20
    row, drawn = _program_on(cert, [1] * 9 + [2] + [1] * 8 + [2] * 2, p_star)
    assert row["selection_samples"] == 100 and row["certified"] and row["top_class"] == 1
    # review (2026-12-07): with n0 > n the rest of the selection cost more than the budget, and a chance of
    # 0.098 (8 of 10 at p* = 0.8) stopped it at 10 votes, though too high for the item to give up: it bet on
    # a class picked from 10 votes. The cost now counts at most one budget, so stopping early gives up.
    cert = SequentialCertifier(n0=1000, n=100, alpha=0.001, batch_size=50, target_radius=0.1,
                               give_up_alpha=0.05, budget_share=0.0, give_up="predictive")
    assert 0.05 < cert._chance(0, 0, min(cert.counts_needed(0.8)), (8, 2)) < 0.05 * 990 / 100
    row, drawn = _program_on(cert, [1] * 8 + [2] * 2 + ([1] * 4 + [2]) * 200, 0.8)
    assert row["selection_samples"] > 10


def test_the_bet_gives_up_as_soon_as_even_all_hits_cannot_certify():
    """At p* just above what 100 samples can certify (max_lower_bound: there the test at the budget, whose
    100 hits of 100 need p*^100 <= alpha), the bet gives up before drawing; just below it, all hits
    certify, and one miss among them does not."""
    cert = SequentialCertifier(n0=20, n=100, alpha=0.001, batch_size=50, target_radius=0.1)
    ceiling = cert.max_lower_bound(100)
    assert ceiling == pytest.approx(0.001 ** (1 / 100))
    assert _bet_on(cert, 100, ceiling + 1e-6) == ("gave up: target out of reach within n", 0, 0)
    assert _bet_on(cert, 100, ceiling - 1e-4) == ("certified at the budget", 100, 100)
    decision, used, hits = _bet_on(cert, 99, ceiling - 1e-4)
    assert decision.startswith("gave up") and hits == used - 1


def test_the_bet_reads_p_star_as_the_float_that_budget_count_reads(monkeypatch):
    """Review counterexample (2026-12-07): a numpy float32 p* = 0.6021008 moves the bet's log-wealth at
    t = 742 by 2e-6, more than SLACK, so the bet could cross on a path that budget_count's calculation (on
    float(p*)) did not count. The bet must compute its wealth at float(p*)."""
    import smoothgen_exp.certifiers.sequential as sequential

    seen, real = [], sequential.mixture_log_wealth
    monkeypatch.setattr(sequential, "mixture_log_wealth", lambda h, t, p: seen.append(type(p)) or real(h, t, p))
    cert = SequentialCertifier(n0=20, n=742, alpha=0.001, batch_size=50, target_radius=0.1)
    _bet_on(cert, 700, np.float32(0.6021008491516113))
    assert seen and set(seen) == {float}


def test_the_budget_test_certifies_at_k_n_and_the_futility_rule_gives_up_early(monkeypatch):
    """Hits spread evenly at p* = 0.94, n = 1,000, alpha = 0.01: the bet (about 2,300 samples at this
    margin) cannot cross, so k_n hits certify at the budget and k_n - 1 do not; far fewer hits make the
    futility rule give up before the end; the bet at (1 - share) alpha needs more unanimous votes."""
    cert = SequentialCertifier(n0=20, n=1000, alpha=0.01, batch_size=50, target_radius=0.1, budget_share=0.5)
    k_n = cert.counts_needed(0.94)[0]
    assert _bet_on(cert, k_n, 0.94) == ("certified at the budget", 1000, k_n)
    monkeypatch.setattr(cert, "_chance", lambda *args: 1.0)            # no futility: one hit short fails
    decision, used, hits = _bet_on(cert, k_n - 1, 0.94)                 # (once even all hits left cannot)
    assert decision == "gave up: target out of reach within n" and hits + 1000 - used == k_n - 1
    monkeypatch.undo()
    decision, used, _ = _bet_on(cert, k_n - 25, 0.94)
    assert decision == "gave up: unlikely to certify within n" and used < 1000
    bet_only = SequentialCertifier(n0=20, n=1000, alpha=0.01, batch_size=50, target_radius=0.1, budget_share=0.0)
    crossing, crossing_at_alpha = _bet_on(cert, 1000, 0.9), _bet_on(bet_only, 1000, 0.9)
    assert crossing[0] == crossing_at_alpha[0] == "certified" and crossing[1] > crossing_at_alpha[1]
    for share in (-0.1, 1.0):                                  # the bet's level must lie in (0, alpha]
        with pytest.raises(SmoothgenError, match="budget_share"):
            SequentialCertifier(n=1000, alpha=0.01, budget_share=share)


def test_center_smoothing_bounds_the_move_of_the_center():
    """G(z) = z (identity): the smoothed centre is x itself and moves by exactly eps."""

    class Identity:
        output_range = (-10.0, 10.0)
        output_shape = (D,)

        def generate(self, z, gen):
            return z.clone()

    ctx = ctx_at(0.3, model=Identity())
    row = CenterCertifier(n0=4000, n=4000, alpha=0.01, eps_grid=EPS).certify(ctx)
    assert row["bound_center_ok"]
    for eps in EPS:
        assert row[f"bound_eps_out_eps{eps:g}"] >= eps


def test_a_row_with_a_majority_vote_holds_at_its_confidence_not_the_certificates_alone():
    """The smoothed row claims both CERTIFY's bound (p_lower <= p_cA) and PREDICT's vote (never a class
    other than g(x)); with reuse they share the n estimation samples. Review's case: two classes at
    0.495 / 0.505, n0 = 1,000, n = 49, both alphas 0.05. One or the other fails in about 5.6% of runs:
    above the certificate's own 1 - alpha (the column before), within the row's confidence now
    (1 - alpha - aggregator.alpha). Simulated with the project's cp_lower and PREDICT on exact counts."""
    from smoothgen_exp.aggregators.majority import Majority
    from smoothgen_exp.certifiers.cohen import CohenCertifier
    from smoothgen_exp.core import ABSTAIN, prediction

    p1, n0, n, alpha, trials = 0.505, 1000, 49, 0.05, 400_000
    cert, vote = CohenCertifier(n0=n0, n=n, alpha=alpha), Majority(n=n, alpha=alpha, reuse=True)
    rng = np.random.default_rng(0)
    c_a = (rng.binomial(n0, p1, trials) > n0 // 2).astype(int)           # selection: argmax, ties to class 0
    k1 = rng.binomial(n, p1, trials)                                      # estimation votes for class 1
    k_a = np.where(c_a == 1, k1, n - k1)
    p_ca = np.where(c_a == 1, p1, 1 - p1)
    bound_fails = cp_lower(k_a, n, alpha) > p_ca
    predicted = np.array([prediction(torch.tensor([n - k, k]), vote.alpha).prediction for k in range(n + 1)])
    vote_fails = (predicted[k1] != ABSTAIN) & (predicted[k1] != 1)        # g(x) = 1
    joint = float(np.mean(bound_fails | vote_fails))
    tol = 4 * math.sqrt(0.06 * 0.94 / trials)
    assert joint > 1 - cert.confidence + tol                              # the certificate's level alone fails
    assert joint <= 1 - (cert.confidence - vote.claim_alpha)              # what certify_program records
