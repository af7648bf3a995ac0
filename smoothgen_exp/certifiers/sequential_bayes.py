"""certifier=sequential_bayes: certify a target radius with a sequential test designed for the budget n.

`certifier=sequential` bets with an anytime-valid mixture martingale and adds an exact test at the budget.
This certifier selects c_A from SELECT_FIRST votes when they are unanimous, else from n0, and replaces
the bet, the test at the budget and the futility rule by one table of boundaries over the looks
t_1 < ... < t_K = n (MIN_REQUEST samples apart, or 1/GROWTH of those so far): after t_k estimation samples
with m misses (votes other than c_A), it certifies when m <= c_k, gives up when m >= a_k, and else draws
on. A request runs to the next look at which some outcome could decide (the same decisions, fewer calls).

Soundness. For a fixed table, P_p(certify) is nondecreasing in p_A = p: drive both from the same uniforms
(a vote misses when U_i >= p), so a larger p has at most the misses of a smaller one after every sample;
if the smaller one certifies at look k (m_k <= c_k, and c_j < m_j < a_j before), the larger one had not
given up before (m'_j <= m_j < a_j) and has certified by look k. So the false-certify probability for any
p_A <= p* is at most its value at p*, and `outcomes` computes that exactly: the law of the misses of the
undecided paths, carried from look to look by convolution with Binomial(t_k - t_(k-1), 1 - p*) in float64
(no path is dropped except by the table itself, and those beyond M misses give up). The table is used
only if its level is at most alpha (with a 1e-9 relative margin for rounding); the selection votes are
disjoint from the estimation votes, so this holds given c_A. Giving up never needs a guarantee.

Design (the table is only a choice; the guarantee above holds for any table whose level is <= alpha). The
table minimises, by backward induction over (look, misses),

    E_prior[samples] - worth * n * P_prior(certify and p_A > p*) + mu * P_p*(certify),

under a Jeffreys prior on p_A over (1/2, 1) (PRIOR_POINTS values, 1 - p_A spread log-evenly from 1/2 down
to LEAST_MISS_RATE), with mu raised by bisection until the level is at most alpha. `worth` is what a
certificate is worth in units of n samples: larger certifies more items just above p* and spends more
samples on them. Unlike a fixed boundary from Ville's inequality, the design spends alpha where it buys
the most certificates per sample (Wald's and Bayes-optimal sequential tests; here truncated at n).
Selection gives up after its first SELECT_FIRST votes when they are not unanimous and the design's
expected worth of going on (`worth_going_on`: under the prior's posterior given those votes) is below
the rest of the selection's cost; after the whole selection, when that worth is not positive.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binom

from smoothgen_exp.certifiers.sequential import GROWTH, MIN_REQUEST, SequentialCertifier
from smoothgen_exp.certifiers.table_test import refuse_too_large
from smoothgen_exp.config import configured
from smoothgen_exp.errors import SmoothgenError

PRIOR_POINTS = 64        # values of p_A in the design's prior
LEAST_MISS_RATE = 1e-5   # the prior's smallest 1 - p_A (or 1% of 1 - p*, where that is smaller)
LEVEL_MARGIN = 1e-9      # the table's computed level must be at most alpha (1 - LEVEL_MARGIN)
MAX_TABLE = 60_000_000   # float32 entries of the design's predictive tables (misses x next votes per look)


def looks(n: int) -> np.ndarray:
    """t_1 < ... < t_K = n: each look MIN_REQUEST samples after the last, or 1/GROWTH of those so far."""
    t, out = 0, []
    while t < n:
        t = min(n, t + max(MIN_REQUEST, t // GROWTH))
        out.append(t)
    return np.array(out, dtype=np.int64)


def max_misses(p_star: float, n: int) -> int:
    """M: paths with more misses give up (far above what p* itself gives at any t <= n)."""
    return int(min(n, math.ceil((1 - p_star) * n + 8 * math.sqrt(n * p_star * (1 - p_star)) + 16)))


def outcomes(table, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_p(certify), E_p[estimation samples]) of a table (looks, c, a, M) for each p in `p`, exactly:
    the law of the misses of the undecided paths, convolved look by look (direct sums, no FFT)."""
    ts, c, a, m_max = table
    p = np.atleast_1d(np.asarray(p, dtype=np.float64))
    dist = np.zeros((len(p), m_max + 1))
    dist[:, 0] = 1.0
    certified, samples, t = np.zeros(len(p)), np.zeros(len(p)), 0
    for k, t_k in enumerate(ts):
        d, t = int(t_k) - t, int(t_k)
        samples += d * dist.sum(1)
        pmf = _miss_pmf(d, tuple(p.tolist()))                                   # misses among d votes
        dist = np.stack([np.convolve(row, f)[:m_max + 1] for row, f in zip(dist, pmf, strict=True)])
        certified += dist[:, :c[k] + 1].sum(1)
        dist[:, :c[k] + 1] = 0.0
        dist[:, a[k]:] = 0.0
    return certified, samples


@functools.lru_cache(maxsize=512)
def _miss_pmf(d: int, p: tuple[float, ...]) -> np.ndarray:
    """Binomial(d, 1 - p) probabilities of 0..d misses, one row per p."""
    rows = binom.pmf(np.arange(d + 1)[None, :], d, 1.0 - np.array(p)[:, None])
    rows.flags.writeable = False
    return rows


def prior(p_star: float) -> tuple[np.ndarray, np.ndarray]:
    """The design's prior: values of p_A and their log-weights (Jeffreys' density over (1/2, 1))."""
    least = min(LEAST_MISS_RATE, (1.0 - p_star) / 100)
    u = math.log(0.5) + (math.log(least) - math.log(0.5)) * (np.arange(PRIOR_POINTS) + 0.5) / PRIOR_POINTS
    p = -np.expm1(u)
    log_w = 0.5 * u - 0.5 * np.log(p)        # density (p (1 - p))^-1/2 times the grid's dp = (1 - p) du
    return p, log_w - logsumexp(log_w)


@dataclass(frozen=True)
class Design:
    """A table of boundaries for (p*, n, alpha, worth), its exact level at p*, and what it does under
    each of its prior's values of p_A (for the selection's give-up rule)."""
    p_star: float
    ts: np.ndarray          # the looks
    certify_max: np.ndarray  # c_k: certify when the misses are at most this
    give_up_min: np.ndarray  # a_k: give up when the misses are at least this
    m_max: int
    level: float            # P_p*(certify), exact
    prior_p: np.ndarray
    prior_log_w: np.ndarray
    prior_certified: np.ndarray  # P_p(certify) at each prior value
    prior_samples: np.ndarray    # E_p[samples] at each prior value

    @property
    def table(self):
        """(looks, c, a, M): what `outcomes` reads."""
        return self.ts, self.certify_max, self.give_up_min, self.m_max


def table_entries(p_star: float, n: int) -> int:
    """The predictive entries `design` holds for (p*, n): misses x next votes over the looks."""
    return (max_misses(p_star, n) + 1) * (n + len(looks(n)))


@functools.lru_cache(maxsize=32)
def design(p_star: float, n: int, alpha: float, worth: float) -> Design:
    """The table of boundaries (module docstring); its level is at most alpha."""
    if not (n >= 1 and 0.0 < alpha < 1.0 and 0.5 <= p_star < 1.0 and worth > 0.0):
        raise SmoothgenError(f"sequential_bayes: no table for n={n}, alpha={alpha}, p*={p_star}, worth={worth} "
                             "(needs n >= 1, alpha in (0, 1), p* in [1/2, 1), worth > 0)")
    ts, m_max = looks(n), max_misses(p_star, n)
    refuse_too_large(p_star, n, "sequential_bayes")
    p, log_w, stages = _stages(p_star, ts, m_max)
    value = worth * n

    def backward(mu: float) -> tuple[np.ndarray, np.ndarray]:
        c, a = np.full(len(ts), -1), np.full(len(ts), m_max + 1)
        after = None
        for k in range(len(ts) - 1, -1, -1):
            p_good, ratio, pred, reachable = stages[k]
            stop = np.minimum(-value * p_good + mu * ratio, 0.0)
            certify = stop < 0
            if pred is None:
                cost, go_on = stop, np.zeros(m_max + 1, dtype=bool)
            else:
                cont = _continue_cost(pred, after)
                go_on = cont < stop
                cost = np.where(go_on, cont, stop)
            certify &= ~go_on & reachable
            # the table keeps the leading run of certify and the trailing run of give up (a certify or give-up
            # state outside them draws on); `cost` below stays the unconstrained value: it only guides the
            # design, whose level is computed on the table itself
            c[k] = int(np.argmin(certify)) - 1 if not certify.all() else m_max   # the leading run of certify
            a[k] = _give_up_from(~certify & ~go_on, c[k])
            after = cost
        return c, a

    # log mu by bisection; a table above alpha moves lo up. First over [log(value) - 20, log(value) + 30] (every
    # earlier run's tables), and only where no table is found there, above it up to about log(1/alpha) more:
    # mu reaches about 1/alpha at small alpha (1e-20 found no table: review), kept below float64's overflow
    best, top = None, math.log(value) + 30
    for lo, hi in ((math.log(value) - 20, top), (top, min(top - math.log(alpha), 700.0))):
        for _ in range(60):
            mid = (lo + hi) / 2
            c, a = backward(math.exp(mid))
            level = float(outcomes((ts, c, a, m_max), np.array([p_star]))[0][0])
            if level <= alpha * (1 - LEVEL_MARGIN):
                hi, best = mid, (c, a, level)
            else:
                lo = mid
            if hi - lo < 2e-3 and best is not None:
                break
        if best is not None:
            break
    if best is None:
        raise SmoothgenError(f"sequential_bayes: no table at level {alpha} for p*={p_star}, n={n}")
    c, a, level = best
    certified, samples = outcomes((ts, c, a, m_max), p)
    return Design(p_star, ts, c, a, m_max, level, p, log_w, certified, samples)


def _stages(p_star: float, ts: np.ndarray, m_max: int):
    """Per look: the prior's values of p_A, their log-weights, and for every count of misses the posterior
    probability that p_A > p*, the log-likelihood ratio of p* against the prior's marginal, the predictive
    law of the misses among the next look's votes (float32), and whether the count can occur."""
    p, log_w = prior(p_star)
    good = p > p_star
    gaps = np.diff(ts, prepend=0)
    m = np.arange(m_max + 1)
    pmfs = {int(d): _miss_pmf(int(d), tuple(p.tolist())) for d in set(gaps[1:].tolist())}
    stages = []
    for k, t in enumerate(ts):
        hits = t - m
        log_like = hits[None, :] * np.log(p)[:, None] + m[None, :] * np.log1p(-p)[:, None] + log_w[:, None]
        log_marginal = logsumexp(log_like, 0)
        post = np.exp(log_like - log_marginal)
        ratio = np.minimum(hits * math.log(p_star) + m * math.log1p(-p_star) - log_marginal, 700.0)
        pred = (post.T @ pmfs[int(gaps[k + 1])]).astype(np.float32) if k + 1 < len(ts) else None
        stages.append((post[good].sum(0), np.exp(ratio), pred, m <= t))
    return p, log_w, stages


def _give_up_from(quit_: np.ndarray, certify_max: int) -> int:
    """a_k: the first count of misses of the trailing run of give-up states in `quit_` (a give-up state
    before the run draws on), above the certifying counts; len(quit_) where the run is empty."""
    tail = np.flatnonzero(~quit_[::-1])
    return max(len(quit_) - (int(tail[0]) if len(tail) else len(quit_)), certify_max + 1)


def _continue_cost(pred: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The expected cost of drawing to the next look, from every count of misses: its votes, plus the
    next look's cost at the misses they bring (`after`; beyond M misses: 0, given up)."""
    d = pred.shape[1] - 1
    m = np.arange(len(after))
    padded = np.concatenate([after, np.zeros(d)])
    return d + (pred * padded[m[:, None] + np.arange(d + 1)[None, :]]).sum(1)


@functools.lru_cache(maxsize=32)
def mixture_design(p_star: float, n: int, threshold: float, alpha: float, worth: float) -> Design:
    """`certifier=sequential give_up=table` (and auto where it fits): the table whose certify boundary is
    the sequential certifier's own, fixed, and whose give-up boundary is designed. At look t_k it
    certifies when the mixture bet has crossed its threshold at t_k (misses <= t_k - b_(t_k),
    `sequential.crossing_counts`), and at n also when the hits reach the exact test's k_n
    (`sequential.budget_count`); it gives up where, by backward induction over (look, misses) under the
    prior, drawing on costs more samples than worth * n times the chance of a certificate above p* brings. Certifying at looks only is a subset of the bet's
    crossings, so the test at the budget keeps its level; giving up only removes certificates. The
    table's level at p* is computed exactly all the same, and a table above alpha is refused."""
    from smoothgen_exp.certifiers.sequential import budget_count, crossing_counts

    ts, m_max = looks(n), max_misses(p_star, n)
    refuse_too_large(p_star, n, "sequential")
    b = crossing_counts(p_star, n, threshold)
    c = np.minimum(ts - b[ts - 1], m_max)                 # b_t = t + 1 where the bet cannot cross: c = -1
    k_n = budget_count(p_star, n, threshold, alpha)
    c[-1] = min(max(c[-1], n - k_n), m_max)
    p, log_w, stages = _stages(p_star, ts, m_max)
    a, value, after = np.full(len(ts), m_max + 1), worth * n, None
    for k in range(len(ts) - 1, -1, -1):
        p_good, _, pred, _ = stages[k]
        certify = np.arange(m_max + 1) <= c[k]
        if pred is None:                                  # the budget: certify or give up
            cost, a[k] = np.where(certify, -value * p_good, 0.0), c[k] + 1
        else:
            cont = _continue_cost(pred, after)
            quit_ = ~certify & (cont >= 0.0)
            cost = np.where(certify, -value * p_good, np.where(quit_, 0.0, cont))
            a[k] = _give_up_from(quit_, c[k])
        after = cost
    table = (ts, c, a, m_max)
    level = float(outcomes(table, np.array([p_star]))[0][0])
    if level > alpha:                                     # cannot happen (the docstring above); checked all the same
        raise SmoothgenError(f"certifier.give_up=table: the table's level {level:.3g} exceeds alpha={alpha}")
    certified, samples = outcomes(table, p)
    return Design(p_star, ts, c, a, m_max, level, p, log_w, certified, samples)


@configured
class BayesSequentialCertifier(SequentialCertifier):
    """certifier=sequential_bayes (module docstring). It shares the parent's row, target-radius checks and
    ceiling; the parent's bet, test at the budget and give-up rule are not used."""
    name = "sequential_bayes"

    def uses_table(self, p_star: float) -> bool:
        """Always its own table (the parent's `_program` asks)."""
        return True

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str, target_radius: float, worth: float):
        if not (int(n) >= 1 and 0.0 < float(alpha) < 1.0):
            raise SmoothgenError(f"certifier.n={n} must be >= 1 and certifier.alpha={alpha} lie in (0, 1)")
        super().__init__(n0, n, alpha, batch_size, target_radius, give_up_alpha=0.05, budget_share=0.0,
                         give_up="predictive", worth=worth)     # the parent checks worth > 0

    def max_lower_bound(self, n: int) -> float:
        """The largest p* that n samples can certify at all: n hits of n has probability p*^n at p*."""
        return self.alpha ** (1.0 / n)

    def settings(self) -> dict:
        """The target radius and the worth the table was designed with (no give-up rule: the table's own)."""
        return {"target_radius": self.target_radius, "worth": self.worth}

    def prepare(self, smoothing) -> None:
        """The table designed before the run (cached; one too large fails in one line); per-input noise: per item."""
        if hasattr(smoothing, "required_p"):
            p_star = float(smoothing.required_p(self.target_radius))
            if p_star < self.max_lower_bound(self.n):
                self.design(p_star)

    def design(self, p_star: float) -> Design:
        """The table for this p* (module function `design`, cached)."""
        return design(float(p_star), self.n, self.alpha, self.worth)
