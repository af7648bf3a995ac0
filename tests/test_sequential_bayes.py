"""certifier=sequential_bayes: the level of its table against brute force and simulation, monotone in p_A,
and the runner's rows (no batch dependence)."""

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from smoothgen_exp.certifiers import sequential_bayes as B
from smoothgen_exp.certifiers.sequential_bayes import BayesSequentialCertifier

from .conftest import drive


def test_looks_grow_by_the_larger_of_the_least_request_and_a_share_of_the_samples_so_far():
    ts = B.looks(10_000)
    assert ts[:3].tolist() == [8, 16, 24] and ts[-1] == 10_000 and (np.diff(ts) > 0).all()
    assert np.diff(ts).max() <= 10_000 // 64 + 1 and len(ts) < 300


def test_the_level_is_the_certify_probability_of_the_program_itself_over_every_outcome():
    """Brute force over the misses at each look (with their binomial weights), driving the certifier's own
    estimation loop (`_test`): the design's exact level at p*, and no more below p*. A table that certified
    one more miss at a look where it could would exceed alpha, so the level is also nearly spent."""
    p_star, n, alpha = 0.7, 32, 0.05
    cert = BayesSequentialCertifier(n0=10, n=n, alpha=alpha, batch_size=8, target_radius=1.0, worth=3.0)
    plan = B.design(p_star, n, alpha, 3.0)
    gaps = np.diff(plan.ts, prepend=0)
    assert plan.level <= alpha and plan.level > 0.5 * alpha

    def brute(p: float) -> float:
        total = 0.0
        for misses in itertools.product(*(range(d + 1) for d in gaps)):
            votes = torch.cat([torch.tensor([0] * j + [1] * (d - j)) for j, d in zip(misses, gaps, strict=True)])
            (decision, used, hits), drawn = drive(cert._test(plan, 1), votes)
            assert drawn == used and hits == int(votes[:used].sum())
            if decision.startswith("certified"):
                total += math.prod(binom.pmf(j, d, 1 - p) for j, d in zip(misses, gaps, strict=True))
        return total

    assert brute(p_star) == pytest.approx(plan.level, rel=1e-9, abs=1e-15)
    assert brute(p_star - 0.1) <= plan.level
    levels = B.outcomes(plan.table, np.array([0.3, 0.5, 0.6, 0.65, p_star]))[0]
    assert (np.diff(levels) >= 0).all() and levels[-1] == pytest.approx(plan.level)
    raised = 0
    for k in range(len(plan.ts)):               # one more certifying miss count where it continued: over alpha
        c = plan.certify_max.copy()
        c[k] += 1
        if c[k] < plan.give_up_min[k] and c[k] <= plan.ts[k]:
            raised += 1
            assert B.outcomes((plan.ts, c, plan.give_up_min, plan.m_max), np.array([p_star]))[0][0] > alpha
    assert raised >= len(plan.ts) - 1


def test_simulated_false_certify_rate_at_p_star_matches_the_level():
    """Votes drawn at p_A = p*, each path through the table: the rate is the computed level (<= alpha)."""
    p_star, n, alpha = float(norm.cdf(1.0)), 400, 0.05
    plan = B.design(p_star, n, alpha, 3.0)
    rng = np.random.default_rng(0)
    runs = 100_000
    misses = np.cumsum(rng.random((runs, n)) >= p_star, axis=1, dtype=np.int16)[:, plan.ts - 1]   # at each look
    alive = np.ones(runs, dtype=bool)
    certified = np.zeros(runs, dtype=bool)
    for k in range(len(plan.ts)):
        now = alive & (misses[:, k] <= plan.certify_max[k])
        certified |= now
        alive &= ~now & (misses[:, k] < plan.give_up_min[k])
    rate, sd = certified.mean(), math.sqrt(plan.level * (1 - plan.level) / runs)
    assert plan.level <= alpha and abs(rate - plan.level) < 4 * sd


def test_it_certifies_a_sure_class_early_and_gives_up_on_a_coin_flip_early():
    cert = BayesSequentialCertifier(n0=100, n=2_000, alpha=0.001, batch_size=100, target_radius=0.5, worth=3.0)
    p_star = float(norm.cdf(2.0))
    sure, drawn = drive(cert._test(cert.design(p_star), 1), torch.ones(2_000, dtype=torch.long))
    assert sure[0] == "certified" and drawn < 600
    flips = torch.tensor([1, 0] * 1_000)
    coin, drawn = drive(cert._test(cert.design(p_star), 1), flips)
    assert coin[0].startswith("gave up") and drawn <= 24


def test_it_keeps_most_of_fixed_n_certificates_at_a_fraction_of_its_samples():
    """The point of the design, exactly (no simulation): at r = 0.5, sigma = 0.25, n = 10,000, against the
    Clopper-Pearson test of all n samples (fixed n), over p_A just above p* (where no test is cheap) to 1."""
    p_star, n, alpha = float(norm.cdf(2.0)), 10_000, 0.001
    plan = B.design(p_star, n, alpha, 3.0)
    p = np.array([0.983, 0.985, 0.99, 0.995, 0.999])
    certified, samples = B.outcomes(plan.table, p)
    k = int(binom.isf(alpha, n, p_star)) + 1                  # fixed n's least count: P_p*(S_n >= k) <= alpha
    assert binom.sf(k - 1, n, p_star) <= alpha < binom.sf(k - 2, n, p_star)
    fixed = binom.sf(k - 1, n, p)
    assert (certified >= 0.8 * fixed).all() and (samples <= 0.6 * n).all()
    far = p >= 0.99
    assert (certified[far] >= fixed[far] - 0.01).all() and (samples[far] <= 0.2 * n).all()


def test_out_of_range_settings_fail_in_one_line_and_an_unreachable_target_gives_up():
    """Review: p* rounding to 1 (target_radius / sigma >= 8.3), n = 0 and alpha >= 1 crashed or certified."""
    from smoothgen_exp.errors import SmoothgenError

    for bad in [(1.0, 100, 0.05), (0.9, 0, 0.05), (0.9, 100, 2.0)]:
        with pytest.raises(SmoothgenError, match="no table"):
            B.design(*bad, 3.0)
    with pytest.raises(SmoothgenError, match="alpha"):
        BayesSequentialCertifier(n0=10, n=100, alpha=2.0, batch_size=8, target_radius=1.0, worth=3.0)
    cert = BayesSequentialCertifier(n0=10, n=100, alpha=0.001, batch_size=8, target_radius=3.0, worth=3.0)
    noise = SimpleNamespace(required_p=lambda r: 1.0)
    row, drawn = drive(cert._program(SimpleNamespace(noise=noise, num_classes=2)), torch.ones(200, dtype=torch.long))
    assert row["sequential_decision"] == "gave up: target out of reach within n" and not row["certified"]
    assert drawn == row["samples_used"] == 10


def test_a_table_exists_at_a_tiny_alpha():
    """Review (2026-12-07): the penalty's search stopped at log(worth n) + 30, so alpha = 1e-20 found no
    table (a refusal, though fixed n's test alone has one). mu now reaches about 1/alpha."""
    p_star = float(norm.cdf(1.0))
    for alpha in (1e-20, 1e-60):
        plan = B.design(p_star, 2000, alpha, 3.0)
        assert 0.0 < plan.level <= alpha
        assert plan.level == pytest.approx(float(B.outcomes(plan.table, np.array([p_star]))[0][0]), rel=1e-12)
    # the wider search runs only where the old range found none: a table an earlier run used stays the same
    # (searching the whole range at once moved this one's give-up boundary; its level was 0.00099762)
    assert B.design(p_star, 2000, 0.001, 3.0).level == pytest.approx(0.0009979377464635975, rel=1e-12)


def test_selection_gives_up_on_hopeless_votes_and_bets_on_a_unanimous_class():
    """The selection's give-up rules: 5 of the first 10 votes give up there (10 samples, not n0); a weak
    whole selection (60 of 100) gives up before betting; 10 unanimous votes go on and certify on all hits."""
    cert = BayesSequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=100, target_radius=0.5, worth=3.0)
    ctx = SimpleNamespace(noise=SimpleNamespace(required_p=lambda r: float(norm.cdf(r / 0.25))), num_classes=3)
    split, drawn = drive(cert._program(ctx), torch.tensor([1, 2] * 5 + [1] * 10_000))
    assert split["sequential_decision"] == "gave up: selection votes below the target" and drawn == 10
    plan = cert.design(float(norm.cdf(2.0)))
    assert cert.worth_going_on(plan, 5, 10, 90) <= 0 < cert.worth_going_on(plan, 9, 10, 90)
    assert cert.worth_going_on(plan, 60, 100, 0) <= 0 < cert.worth_going_on(plan, 99, 100, 0)
    weak, drawn = drive(cert._program(ctx), torch.tensor([1] * 9 + [2] + [1, 1, 2] * 30 + [1] * 10_000))
    assert weak["sequential_decision"] == "gave up: selection votes below the target" and drawn == 100
    sure, drawn = drive(cert._program(ctx), torch.ones(11_000, dtype=torch.long))
    assert sure["certified"] and sure["selection_samples"] == 10 and drawn == sure["samples_used"] < 600


def test_a_table_too_large_to_design_is_refused_before_the_run(caplog):
    """Review: the refusal came from the first item, mid-run. The preflight (checks.certified_ceiling) now
    designs the table, so a too-large one fails there, in one line that names the alternative."""
    from smoothgen_exp.checks import certified_ceiling
    from smoothgen_exp.errors import SmoothgenError
    from smoothgen_exp.smoothing.gaussian import GaussianNoise

    big = BayesSequentialCertifier(n0=10, n=20_000, alpha=0.001, batch_size=8, target_radius=0.1, worth=3.0)
    assert B.table_entries(float(norm.cdf(0.4)), 20_000) > B.MAX_TABLE
    with pytest.raises(SmoothgenError, match=r"above 60,000,000; use a smaller certifier.n or certifier=sequential"):
        certified_ceiling(big, GaussianNoise(0.25), [])
    small = BayesSequentialCertifier(n0=10, n=300, alpha=0.001, batch_size=8, target_radius=0.1, worth=3.0)
    assert certified_ceiling(small, GaussianNoise(0.25), []) > 0.1
    assert B.design.cache_info().currsize >= 1 and small.settings() == {"target_radius": 0.1, "worth": 3.0}


def test_sequentials_give_up_table_keeps_the_bets_certify_boundary_and_its_level():
    """certifier=sequential give_up=table: at every look the table certifies exactly where the mixture bet
    has crossed (its fewest crossing hits at t_k), and at n also from the exact test's k_n; its level at p*,
    brute force over every look outcome through the certifier's own loop, equals the computed one and is
    at most alpha. Only the give-up boundary is designed: below p* it gives up sooner than it certifies."""
    from smoothgen_exp.certifiers.sequential import SequentialCertifier, budget_count, crossing_counts

    p_star, n, alpha = 0.7, 32, 0.05
    cert = SequentialCertifier(n0=10, n=n, alpha=alpha, batch_size=8, target_radius=1.0, give_up="table")
    plan = cert.design(p_star)
    b = crossing_counts(p_star, n, cert.threshold)
    expected = np.minimum(plan.ts - b[plan.ts - 1], plan.m_max)
    k_n = budget_count(p_star, n, cert.threshold, alpha)
    assert (plan.certify_max[:-1] == expected[:-1]).all() and plan.certify_max[-1] == max(expected[-1], n - k_n)
    assert (plan.give_up_min > plan.certify_max).all() and plan.level <= alpha
    gaps = np.diff(plan.ts, prepend=0)

    def brute(p: float) -> float:
        total = 0.0
        for misses in itertools.product(*(range(d + 1) for d in gaps)):
            votes = torch.cat([torch.tensor([0] * j + [1] * (d - j)) for j, d in zip(misses, gaps, strict=True)])
            (decision, used, _), drawn = drive(cert._test(plan, 1), votes)
            assert drawn == used
            if decision.startswith("certified"):
                total += math.prod(binom.pmf(j, d, 1 - p) for j, d in zip(misses, gaps, strict=True))
        return total

    assert brute(p_star) == pytest.approx(plan.level, rel=1e-9, abs=1e-15)
    certified, samples = B.outcomes(plan.table, np.array([0.5, 0.99]))
    assert samples[0] < samples[1] and certified[0] < certified[1]


def test_sequentials_give_up_table_at_r_half_gives_up_on_a_coin_and_certifies_all_hits():
    """At r = 0.5, sigma = 0.25, alpha = 0.001, n = 10^4 (make bench's setting): all hits certify where the
    mixture bet crosses (396 samples), a coin flip gives up within the first looks, and an unknown option
    or a worth of 0 is refused in one line."""
    from smoothgen_exp.certifiers.sequential import SequentialCertifier
    from smoothgen_exp.errors import SmoothgenError

    p_star = float(norm.cdf(2.0))
    cert = SequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=50, target_radius=0.5, give_up="table")
    assert cert.settings() == {"target_radius": 0.5, "give_up": "table", "worth": 3.0}
    plan = cert.design(p_star)
    (decision, used, _), _ = drive(cert._test(plan, 1), torch.ones(2_000, dtype=torch.long))
    first = int(np.argmax(plan.certify_max >= 0))
    assert decision == "certified" and used == plan.ts[first] and used <= 400
    (decision, used, _), _ = drive(cert._test(plan, 1), torch.arange(2_000) % 2)
    assert decision.startswith("gave up") and used <= 16
    # with budget_share the bet runs at (1 - share) alpha and the test at the budget takes k_n at the full
    # alpha, as the predictive rule's counts_needed does (the table had taken it at the bet's alpha: sound,
    # but more hits than designed)
    from smoothgen_exp.certifiers.sequential import budget_count

    shared = SequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=50, target_radius=0.5, give_up="table",
                                 budget_share=0.5)
    k_n = shared.counts_needed(p_star)[0]
    assert k_n == budget_count(p_star, 10_000, shared.threshold, 0.001) < budget_count(p_star, 10_000, shared.threshold, 0.0005)
    assert shared.design(p_star).certify_max[-1] == 10_000 - k_n and shared.design(p_star).level <= 0.001
    for bad, message in (({"give_up": "upper"}, r"certifier.give_up='upper' must be one of auto, table, predictive"),
                         ({"worth": 0.0}, r"certifier.worth=0.0 must be > 0")):
        with pytest.raises(SmoothgenError, match=message):
            SequentialCertifier(n0=100, n=1000, alpha=0.001, batch_size=50, target_radius=0.5, **bad)


def test_sequentials_default_give_up_is_the_table_where_it_fits_and_the_predictive_rule_beyond(caplog):
    """give_up=auto (the default): at p* = Phi(2) the table fits up to n of about 4.5 x 10^4 (MAX_TABLE
    entries), so n = 10^4 designs it before the run and decides by it; at n = 10^5 it would take 267
    million entries, so auto falls back to the predictive rule (and says so, in the log and in the
    settings), where give_up=table refuses in one line. At r = 0.75 (p* = Phi(3)) the table fits even at
    n = 10^5. Noise chosen per input (smoothing=adaptive, no `required_p`; review: prepare crashed on it)
    would need a table per item, so auto uses the predictive rule there."""
    import logging

    from smoothgen_exp.certifiers.sequential import SequentialCertifier
    from smoothgen_exp.errors import SmoothgenError
    from smoothgen_exp.smoothing.gaussian import GaussianNoise

    from .test_certificates import SIGMA, ctx_at

    noise, p_star = GaussianNoise(0.25), float(norm.cdf(2.0))
    small = SequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=50, target_radius=0.5)
    assert small.give_up == "auto" and small.uses_table(p_star)
    B.mixture_design.cache_clear()
    small.prepare(noise)
    assert B.mixture_design.cache_info().currsize == 1            # designed before the run
    assert small.settings() == {"target_radius": 0.5, "give_up": "auto (table)", "worth": 3.0} and small.uses_table(p_star)
    large = SequentialCertifier(n0=100, n=100_000, alpha=0.001, batch_size=50, target_radius=0.5)
    assert B.table_entries(p_star, 100_000) > B.MAX_TABLE and not large.uses_table(p_star)
    with caplog.at_level(logging.INFO, logger="smoothgen_exp.certifiers.sequential"):
        large.prepare(noise)
    assert "give_up=auto (predictive) at n=100000, p*=0.9772" in caplog.text
    assert large.settings() == {"target_radius": 0.5, "give_up": "auto (predictive)", "give_up_alpha": 0.05}
    assert not large.uses_table(p_star) and large.uses_table(float(norm.cdf(3.0))) is False   # resolved: one rule
    large.prepare(GaussianNoise(0.5 / 3.0))                                     # p* = Phi(3): resolved again
    assert large.settings()["give_up"] == "auto (table)"
    explicit = SequentialCertifier(n0=100, n=10_000, alpha=0.001, batch_size=50, target_radius=0.5, give_up="predictive")
    with caplog.at_level(logging.INFO, logger="smoothgen_exp.certifiers.sequential"):
        explicit.prepare(noise)                                                  # (new-user review: said nothing)
    assert "certifier.give_up=predictive at n=10000" in caplog.text
    # the setting the rule does not use is named as unused (it was accepted silently; new-user review)
    assert "p*=0.9772: set by certifier.give_up_alpha (certifier.worth unused)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="smoothgen_exp.certifiers.sequential"):
        small.prepare(noise)
    assert "give_up=auto (table) at n=10000, p*=0.9772: set by certifier.worth (certifier.give_up_alpha unused)" in caplog.text
    assert explicit.settings() == {"target_radius": 0.5, "give_up": "predictive", "give_up_alpha": 0.05}
    small.prepare(object())                                                      # per-input noise: no one p*
    assert small.settings()["give_up"] == "auto (predictive)" and not small.uses_table(p_star)
    with pytest.raises(SmoothgenError, match="certifier.give_up=table: designing the table for n=100000"):
        SequentialCertifier(n0=100, n=100_000, alpha=0.001, batch_size=50, target_radius=0.5, give_up="table").prepare(noise)
    # the two paths at one n (p* = Phi(2), p_A = Phi(3.5)), prepared as the runner does: auto's row equals
    # give_up=table's, and the predictive rule's differs
    rows = {}
    for give_up in ("auto", "table", "predictive"):
        cert = SequentialCertifier(n0=20, n=2_000, alpha=0.001, batch_size=50, target_radius=SIGMA * 2.0, give_up=give_up)
        cert.prepare(GaussianNoise(SIGMA))
        rows[give_up] = {k: v for k, v in cert.certify(ctx_at(3.5, 0, label=1)).items() if not k.startswith("time_")}
    assert rows["auto"] == rows["table"] and rows["auto"]["certified"] and rows["predictive"]["certified"]
    assert rows["auto"]["samples_used"] != rows["predictive"]["samples_used"]
