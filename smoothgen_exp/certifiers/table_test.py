"""A sequential test read from a table of boundaries over looks (`sequential_bayes.Design`): after t_k
estimation samples with m misses (votes other than c_A), certify when m <= c_k, give up when m >= a_k,
else draw on to the next look at which some outcome could decide. Used by `certifier=sequential_bayes`
(whose table is Bayes-optimal for the budget) and by `certifier=sequential` at give_up=table or auto
(whose table keeps the mixture bet's certify boundary and designs only where to give up). Each supplies
`design(p_star)`, `uses_table(p_star)`, `max_lower_bound(n)`, `name`, `worth`, `n0`, `n`, `target_radius` and `_row`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp

from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.packing import Draw, Program, class_counts, votes_for

if TYPE_CHECKING:
    from smoothgen_exp.certifiers.sequential_bayes import Design

SELECT_FIRST = 10    # selection's first stage: it stops there when unanimous (sequential: else doubles up to n0)
# who designs a table, and what to use instead of one too large, by certifier name
REFUSALS = {"sequential": ("certifier.give_up=table", "certifier.give_up=auto or predictive"),
            "sequential_bayes": ("sequential_bayes", "certifier=sequential")}


def refuse_too_large(p_star: float, n: int, name: str) -> None:
    """One line, before any design, where certifier `name`'s table for (p*, n) would exceed MAX_TABLE entries."""
    from smoothgen_exp.certifiers.sequential_bayes import MAX_TABLE, table_entries

    if (entries := table_entries(p_star, n)) > MAX_TABLE:
        who, instead = REFUSALS[name]
        raise SmoothgenError(f"{who}: designing the table for n={n} at p*={p_star:.4g} takes {entries:,} entries, "
                             f"above {MAX_TABLE:,}; use a smaller certifier.n or {instead}")


class TableTest:
    """Selection with the table's give-up rules, then the look-by-look test (module docstring)."""

    def _table_program(self, ctx) -> Program:
        """Selection (with its give-up rules), then `_test` on c_A, for a table `self.design(p*)`: this
        certifier's own with `give_up=table` (`sequential_bayes.mixture_design`), or sequential_bayes's."""
        p_star = float(ctx.noise.required_p(self.target_radius))
        first = min(SELECT_FIRST, self.n0)
        counts = class_counts(ctx, (yield Draw("sequential", first)))
        if not p_star < self.max_lower_bound(self.n):         # not even n hits of n could certify
            return self._row(int(counts.argmax()), p_star, "gave up: target out of reach within n", first, 0, 0)
        plan = self.design(p_star)
        top, rest = int(counts.max()), self.n0 - first
        if top < first and rest > 0:
            if self.worth_going_on(plan, top, first, rest) <= 0:
                return self._row(int(counts.argmax()), p_star, "gave up: selection votes below the target", first, 0, 0)
            counts = counts + class_counts(ctx, (yield Draw("sequential", rest)))
        c_a, n_select = int(counts.argmax()), int(counts.sum())
        if self.worth_going_on(plan, int(counts[c_a]), n_select, 0) <= 0:
            return self._row(c_a, p_star, "gave up: selection votes below the target", n_select, 0, 0)
        decision, used, hits = yield from self._test(plan, c_a)
        return self._row(c_a, p_star, decision, n_select, used, hits)

    def check_table_fits(self, p_star: float) -> None:
        """One line where the table this certifier would design at p* is too large: before loading where the
        noise law fixes p* (`checks.check_target_radius`; `design` refuses it again)."""
        if p_star < self.max_lower_bound(self.n) and self.uses_table(p_star):
            refuse_too_large(p_star, self.n, self.name)

    def worth_going_on(self, plan: Design, top: int, votes: int, rest: int) -> float:
        """The design's expected worth of betting on the top class, in samples, given its `top` of `votes`
        selection votes (the prior's posterior), less the `rest` of the selection still to draw."""
        log_post = plan.prior_log_w + top * np.log(plan.prior_p) + (votes - top) * np.log1p(-plan.prior_p)
        post = np.exp(log_post - logsumexp(log_post))
        gain = self.worth * self.n * plan.prior_certified * (plan.prior_p > plan.p_star)
        return float(post @ (gain - plan.prior_samples)) - rest

    def _test(self, plan: Design, c_a: int) -> Program:
        """Draw to the next look at which the table can decide, then apply it; returns (decision, samples,
        c_A votes). Looks at which no outcome of the draw could decide are skipped: same decisions."""
        ts, c, a = plan.ts, plan.certify_max, plan.give_up_min
        used, misses, k = 0, 0, 0
        while k < len(ts):
            last = k
            while last < len(ts) - 1 and misses > c[last] and misses + int(ts[last]) - used < a[last]:
                last += 1
            drawn = int(ts[last]) - used
            misses += drawn - votes_for((yield Draw("sequential", drawn)), c_a)
            used, k = int(ts[last]), last + 1
            at_budget = last == len(ts) - 1
            if misses <= c[last]:
                return ("certified at the budget" if at_budget else "certified"), used, used - misses
            if misses >= a[last]:
                return ("gave up: budget spent" if at_budget else "gave up: unlikely to certify within n"), \
                    used, used - misses
        return "gave up: budget spent", used, used - misses     # defensive: the last look decides every count
