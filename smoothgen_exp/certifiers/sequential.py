"""certifier=sequential: certify a target radius r with as few samples as the evidence allows (SPEC 6).

After n0 selection samples choose c_A, the estimation samples X_i = 1[f(x + eta_i) = c_A] arrive in
requests sized to the evidence still needed (packed with other items' samples by the runner).
Certifying r needs p_A > p* = the probability whose radius is r (Phi(r/sigma) for isotropic noise).
The bet is Robbins' mixture martingale over a grid of alternatives: after t samples with h hits,

    K_t = (1/J) sum_j (q_j / p*)^h ((1 - q_j) / (1 - p*))^(t - h),   q_j = p* + (1 - p*)(j - 1/2)/J,

the likelihood ratio of Bern(q_j) against Bern(p*), averaged over J = GRID alternatives spread evenly
over (p*, 1). Each term is a product of factors with mean 1 + (q_j - p*)(p_A - p*)/(p*(1 - p*)) <= 1
when p_A <= p*, all positive (p* < q_j < 1), so each term and their fixed-weight mean is a non-negative
supermartingale, and by Ville's inequality P(exists t: K_t >= 1/alpha_bet) <= alpha_bet: certifying the
first time K_t >= 1/alpha_bet holds at level alpha_bet at any stopping time. It needs no stake to be
learned: the mixture follows the best q_j at a cost of log(1/w) nats, w the share of the alternatives
within the posterior's width (at most log J, paid in full when every vote is a hit).

At the budget. An item still undecided after all n estimation samples certifies if its hits S_n reach
k_n, the least count with

    P_{p*}(the bet crosses at some t <= n, or S_n >= k_n) <= alpha,

computed exactly (`budget_count`: dynamic programming over the hits of the paths that have not crossed,
under i.i.d. Bern(p*) votes). Both events grow with every vote (the wealth increases with the hits), so
their probability is largest at p_A = p* and the item's false-certify probability is at most alpha for
any p_A <= p*; the selection votes are disjoint, so this holds given c_A. Giving up only removes
certificates. The calculation takes the bet's crossings from a threshold SLACK below the bet's own (a
superset of its paths: it can only overstate the probability) and counts the paths it drops as
negligible (below TINY or 1e-12 alpha) as crossed. Ville's bound is loose over a known budget (the truncated bet
crosses with probability 0.00075 at alpha = 0.001, p* = Phi(2), n = 10^4), so even with the bet at the
full alpha (`budget_share` = 0) the test at the budget keeps what the bet leaves, and it gives back to
the items just above p* (which no bet can decide within n) most of what fixed n certifies, without a
union bound (`budget_share` = s runs the bet at (1 - s) alpha and leaves the test the rest).

Giving up needs no guarantee (abstaining is sound); it trades samples on hopeless items against abandoning
one that would have certified. `give_up=table` keeps the bet and the test at the budget as the certify
boundary, read at sequential_bayes's looks (a subset of the bet's crossings: same level), and gives up
(selection too) where, by backward induction under sequential_bayes's prior, drawing on costs more samples
than `worth` * n times the chance of a certificate brings (`sequential_bayes.mixture_design`, read by
`table_test.TableTest`). `give_up=predictive`: selection doubles from SELECT_FIRST up to n0 (stopping when
unanimous or hopeless), and the item gives up when the predictive chance that its hits reach the count it
needs (the lesser of k_n and the bet's crossing count at n; Beta-binomial under the Jeffreys posterior
of its votes) falls below give_up_alpha times the share of the budget left. `give_up=auto` (the default):
the table where it fits in MAX_TABLE entries (n up to about 4.5 x 10^4 at p* = Phi(2)), else predictive.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import torch
from scipy.special import betaln, gammaln

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.certifiers.table_test import SELECT_FIRST, TableTest
from smoothgen_exp.config import configured
from smoothgen_exp.core import ABSTAIN
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.packing import Draw, Program, class_counts

GRID = 64            # the mixture's alternatives q_j, evenly spread over (p*, 1)
MIN_REQUEST = 8      # the smallest request of estimation samples (packing fills the rest of a call)
GROWTH = 64          # a request asks for at least 1/GROWTH of the samples so far (few rounds on long runs)
SLACK = 1e-6         # the budget test's calculation counts a crossing from log-wealth threshold - SLACK
TINY = 1e-40         # hit counts less likely than this (or 1e-12 alpha) are dropped from it, counted as crossed
CROSSING_BLOCK = 4096  # crossing_counts bisects this many t at once (GRID x CROSSING_BLOCK float64 wealths)
log = logging.getLogger(__name__)
GIVE_UP_RULES = ("auto", "table", "predictive")   # a designed table (auto: where it fits), or the predictive chance


def alternatives(p_star: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log(q_j / p*) and log((1 - q_j) / (1 - p*)) for the GRID alternatives q_j = p* + (1 - p*) u_j,
    u_j = (j - 1/2) / GRID; computed from u_j, so exact however close p* is to 1."""
    u = (torch.arange(GRID, dtype=torch.float64) + 0.5) / GRID
    return torch.log1p((1.0 - p_star) / p_star * u), torch.log1p(-u)


def mixture_log_wealth(hits: torch.Tensor, t: torch.Tensor, p_star: float) -> torch.Tensor:
    """log K_t after t estimation samples with `hits` c_A votes (elementwise): the log of the mean
    likelihood ratio of Bern(q_j) against Bern(p*) over the GRID alternatives (module docstring)."""
    win, loss = alternatives(p_star)
    h, t = hits.double()[..., None], t.double()[..., None]
    return torch.logsumexp(h * win + (t - h) * loss, -1) - math.log(GRID)


def crossing_counts(p_star: float, n: int, threshold: float) -> np.ndarray:
    """For t = 1..n, b_t: the fewest hits among t samples at which log K_t >= threshold (t + 1: none).
    Every term of the mixture grows with a hit, so for each t the wealth is increasing in the hits: b_t
    is found by bisection over [0, t + 1], for all t at once, on mixture_log_wealth itself (the wealth
    the certifier bets with), in blocks of CROSSING_BLOCK values of t."""
    out = np.empty(n, dtype=np.int64)
    for first in range(1, n + 1, CROSSING_BLOCK):
        t = torch.arange(first, min(first + CROSSING_BLOCK, n + 1), dtype=torch.int64)
        out[first - 1:first - 1 + len(t)] = fewest_crossing_hits(t, p_star, threshold).numpy()
    return out


def fewest_crossing_hits(t: torch.Tensor, p_star: float, threshold: float) -> torch.Tensor:
    """For each count of samples in t: the fewest hits among them at which log K >= threshold (t + 1:
    none), by bisection over [0, t + 1] for all of them at once (the wealth grows with the hits)."""
    lo, hi = torch.zeros_like(t), t + 1                      # in [lo, hi]; hi = t + 1 means none yet
    while bool((open_ := lo < hi).any()):
        mid = (lo + hi) // 2                                 # <= t where open: a count of hits among t
        reached = mixture_log_wealth(mid, t, p_star) >= threshold
        hi, lo = torch.where(open_ & reached, mid, hi), torch.where(open_ & ~reached, mid + 1, lo)
    return lo


@functools.lru_cache(maxsize=64)
def budget_count(p_star: float, n: int, threshold: float, alpha: float) -> int:
    """k_n of the test at the budget (module docstring): the least count of hits among n samples with
    P_{p*}(log K_t >= threshold - SLACK at some t <= n, or S_n >= k_n) <= alpha; n + 1 when none.

    The law of the hits of the paths that have not crossed is carried forward one vote at a time; the
    mass that reaches the crossing count leaves it (and is counted), as does the lower tail below TINY or
    1e-12 alpha (counted as if it had crossed: the result can only be too large, which is sound)."""
    b = crossing_counts(p_star, n, threshold - SLACK)
    lo, dist, crossed, tiny = 0, np.ones(1), 0.0, min(TINY, 1e-12 * alpha)   # dist[i] = P(not crossed, S_t = lo + i)
    for t in range(1, n + 1):
        new = np.empty(len(dist) + 1)
        new[0], new[-1] = dist[0] * (1.0 - p_star), dist[-1] * p_star
        new[1:-1] = dist[1:] * (1.0 - p_star) + dist[:-1] * p_star
        cut = max(int(b[t - 1]) - lo, 0)                    # the crossing count's index
        if cut < len(new):
            crossed += float(new[cut:].sum())
            new = new[:cut]
        first = 0
        while first < len(new) and new[first] <= tiny:
            first += 1
        crossed += float(new[:first].sum())
        dist, lo = new[first:], lo + first
    at_least = np.cumsum(dist[::-1])[::-1]                  # P(not crossed, S_n >= lo + i)
    ok = np.flatnonzero(crossed + at_least <= alpha * (1 - 1e-9))
    if len(ok):
        return lo + int(ok[0])
    return lo + len(dist) if crossed <= alpha * (1 - 1e-9) and lo + len(dist) <= n else n + 1


@functools.lru_cache(maxsize=64)
def bet_count(p_star: float, n: int, threshold: float) -> int:
    """The fewest hits among n samples with which log K_n >= threshold; n + 1 when none."""
    return int(fewest_crossing_hits(torch.tensor([n]), p_star, threshold)[0])


@configured
class SequentialCertifier(TableTest, Certifier):
    name = "sequential"
    certifies = "class"

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 target_radius: float, give_up_alpha: float, budget_share: float,
                 give_up: str, worth: float):
        super().__init__(n0, n, alpha, batch_size)
        self.target_radius, self.give_up_alpha = float(target_radius), float(give_up_alpha)
        if give_up not in GIVE_UP_RULES:
            raise SmoothgenError(f"certifier.give_up={give_up!r} must be one of {', '.join(GIVE_UP_RULES)}")
        if not worth > 0.0:
            raise SmoothgenError(f"certifier.worth={worth} must be > 0")
        self.give_up, self.rule, self.worth = give_up, give_up, float(worth)    # rule: auto as `prepare` resolves it
        if not self.target_radius >= 0.0:        # p* < 1/2 would "certify" a class that is not the majority
            raise SmoothgenError(f"certifier.target_radius={target_radius} must be >= 0")
        if not 0.0 < self.give_up_alpha < 0.5:   # the futility rule reads a chance of 1/2 as on track
            raise SmoothgenError(f"certifier.give_up_alpha={give_up_alpha} must lie in (0, 0.5)")
        if not 0.0 <= budget_share < 1.0:        # outside [0, 1) the bet's level would not lie in (0, alpha]
            raise SmoothgenError(f"certifier.budget_share={budget_share} must lie in [0, 1)")
        self.alpha_bet = self.alpha * (1.0 - float(budget_share))     # the bet (Ville)
        self.threshold = math.log(1.0 / self.alpha_bet) + 1e-9        # log(1/alpha_bet), a margin for rounding

    def max_lower_bound(self, n: int) -> float:
        """The largest p* that n estimation samples can certify (a ceiling): every one a hit (the bet's
        largest wealth, decreasing in p*: bisection), or n hits of n at the budget (p*^n <= alpha)."""
        lo, hi, n_t = 0.0, 1.0, torch.tensor(float(n))
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float(mixture_log_wealth(n_t, n_t, mid)) >= self.threshold else (lo, mid)
        return max(lo, self.alpha ** (1.0 / n))

    def settings(self) -> dict:
        """The target radius, the only radius a row certifies (the curve's larger radii are 0 by design),
        and the give-up rule (auto: the one `prepare` chose) with what sets it."""
        rule = {"give_up_alpha": self.give_up_alpha} if self.rule in ("predictive", "auto (predictive)") else {"worth": self.worth}
        return {"target_radius": self.target_radius, "give_up": self.rule, **rule}

    def design(self, p_star: float):
        """The table: the bet's certify boundary at looks, a designed give-up one (mixture_design)."""
        from smoothgen_exp.certifiers.sequential_bayes import mixture_design

        return mixture_design(float(p_star), self.n, self.threshold, self.alpha, self.worth)   # k_n at alpha, as counts_needed

    def uses_table(self, p_star: float) -> bool:
        """Whether items at this p* are decided by a table (`design`, TableTest): auto as `prepare`
        resolved it, or before that where the table fits in MAX_TABLE entries."""
        from smoothgen_exp.certifiers.sequential_bayes import MAX_TABLE, table_entries

        return table_entries(p_star, self.n) <= MAX_TABLE if self.rule == "auto" else self.rule in ("table", "auto (table)")

    def prepare(self, smoothing) -> None:
        """Before the run: auto resolved, and the table designed (cached; one too large fails in one line).
        Noise chosen per input (smoothing=adaptive) would need a table per item: auto then predicts."""
        fixed, self.rule = hasattr(smoothing, "required_p"), self.give_up       # auto: resolved again below
        p_star = float(smoothing.required_p(self.target_radius)) if fixed else None
        if self.give_up == "auto":
            self.rule = "auto (table)" if fixed and self.uses_table(p_star) else "auto (predictive)"
        used, unused = ("worth", "give_up_alpha") if "worth" in self.settings() else ("give_up_alpha", "worth")
        log.info("certifier.give_up=%s at n=%d, %s: set by certifier.%s (certifier.%s unused)", self.rule, self.n,
                 fixed and f"p*={p_star:.4g}" or "per-input noise", used, unused)
        if fixed and self.uses_table(p_star) and p_star < self.max_lower_bound(self.n):
            self.design(p_star)

    def counts_needed(self, p_star: float) -> tuple[int, int]:
        """(k_n, the hits the test at the budget needs; the fewest with which the bet crosses at n); n + 1: none."""
        p_star = float(p_star)
        return budget_count(p_star, self.n, self.threshold, self.alpha), bet_count(p_star, self.n, self.threshold)

    def _program(self, ctx) -> Program:
        p_star = float(ctx.noise.required_p(self.target_radius))   # the bet and budget_count alike
        if self.uses_table(p_star):
            return (yield from self._table_program(ctx))
        need = min(self.counts_needed(p_star))
        selection = yield from self._select(ctx, need)
        c_a, n_select = int(selection.argmax()), int(selection.sum())
        prior = (int(selection[c_a]), n_select - int(selection[c_a]))
        if need <= self.n and self._chance(0, 0, need, prior) < self.give_up_alpha:
            decision, used, hits = "gave up: selection votes below the target", 0, 0
        else:
            decision, used, hits = yield from self._bet(c_a, p_star, prior)
        return self._row(c_a, p_star, decision, n_select, used, hits)

    def _row(self, c_a: int, p_star: float, decision: str, n_select: int, used: int, hits: int) -> dict:
        """The row's columns: c_A certified at the target radius, or the reason it was not."""
        certified = decision.startswith("certified")
        return {"prediction": c_a if certified else ABSTAIN, "top_class": c_a, "count": hits,
                "p_required": p_star, "target_radius": self.target_radius,
                "radius": self.target_radius if certified else 0.0, "certified": certified,
                "abstained": not certified, "abstain_reason": "" if certified else decision,
                "sequential_decision": decision, "selection_samples": n_select, "samples_used": n_select + used}

    def _select(self, ctx, need: int) -> Program:
        """Class counts of the selection samples, in stages (SELECT_FIRST, then doubling up to n0), ending when
        unanimous or when even the top class is hopeless against what the rest of n0 would cost (the item then
        gives up). c_A may be any function of these samples (disjoint from the bet's); giving up is sound."""
        drawn, counts = 0, 0
        while True:
            stage = min(max(SELECT_FIRST, 2 * drawn), self.n0)
            counts = counts + class_counts(ctx, (yield Draw("sequential", stage - drawn)))
            drawn, top = stage, int(counts.max())
            rest = self.n0 - drawn         # what selection would still cost, against the budget's share rule
            share = min(rest, self.n) / self.n    # at most 1 (n0 > n): stopping early always gives up
            if top == drawn or not rest or self._chance(0, 0, need, (top, drawn - top)) < self.give_up_alpha * share:
                return counts

    def _chance(self, hits: int, used: int, needed: int, prior: tuple[int, int]) -> float:
        """The predictive probability that the item's hits among n reach `needed` (min of counts_needed),
        from `hits` of `used`: the rest Beta-binomial under the Jeffreys posterior of p_A, given these votes and the
        selection's `prior` (hits, misses) of c_A. Where the posterior mean rate already meets the rate it
        needs, 0.5 stands for it (the futility rule never gives up there: give_up_alpha < 1/2)."""
        need, left = needed - hits, self.n - used
        if need <= 0 or need > left:
            return float(need <= 0)
        a, b = prior[0] + hits + 0.5, prior[1] + used - hits + 0.5
        if a / (a + b) >= need / left:      # on track: about an even chance or better
            return 0.5
        x = np.arange(need, left + 1)                       # P(future hits >= need), Beta-binomial
        log_pmf = gammaln(left + 1) - gammaln(x + 1) - gammaln(left - x + 1) + betaln(x + a, left - x + b) - betaln(a, b)
        return min(float(np.exp(log_pmf).sum()), 1.0)

    def _bet(self, c_a: int, p_star: float, prior: tuple[int, int] = (0, 0)) -> Program:
        """Bet on the votes for c_A; returns (decision, samples drawn, c_A votes).

        The wealth after each sample depends only on the hits and samples so far, so it is the same however
        samples are grouped into requests. A request asks for what the evidence still needs: at least the
        samples that even all hits need to reach the threshold (each hit multiplies K by at most
        q_J / p*), at least MIN_REQUEST, and 1/GROWTH of the samples so far (few rounds on long runs: at
        most about 1/GROWTH drawn past the crossing). Requests do not depend on `batch_size`, so neither
        do the rows.
        """
        p_star = float(p_star)          # as budget_count reads it (a float32 p* moves the wealth by > SLACK)
        threshold, (k_n, k_bet) = self.threshold, self.counts_needed(p_star)
        need_at_budget = min(k_n, k_bet)
        best_step = float(alternatives(p_star)[0][-1])          # log-growth of K from a hit, at most
        log_k, hits, used = 0.0, 0, 0
        while used < self.n:
            if need_at_budget - hits > self.n - used:
                return "gave up: target out of reach within n", used, hits   # not even all hits would do
            if used and self._chance(hits, used, need_at_budget, prior) < self.give_up_alpha * (self.n - used) / self.n:
                return "gave up: unlikely to certify within n", used, hits
            k = min(self.n - used, max(math.ceil((threshold - log_k) / best_step), MIN_REQUEST, used // GROWTH))
            votes = ((yield Draw("sequential", k, votes=True)).labels == c_a).long()
            path = mixture_log_wealth(hits + torch.cumsum(votes, 0), used + torch.arange(1, k + 1), p_star)
            used += k
            hits += int(votes.sum())
            if bool((path >= threshold).any()):
                return "certified", used, hits
            log_k = float(path[-1])
        if hits >= k_n:
            return "certified at the budget", used, hits                    # the exact test at the budget
        return "gave up: budget spent", used, hits
