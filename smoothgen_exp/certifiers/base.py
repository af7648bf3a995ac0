"""What every certifier shares: sample sizes, confidence level, and how its columns are summarised.

A certifier's `certify(ctx)` returns the columns of the item's smoothed row. Those that certify a class
(`classifies = True`) fill prediction / radius / certified and the run summary reports certified
accuracy; the others fill `bound_*` columns (guarantees) and `diag_*` ones (estimates and settings
beside them, never guarantees), summarised by their means.

Every row also carries `confidence` (the probability with which all of the row's guarantees hold
together: the certifier's, less the `claim_alpha` of an aggregator whose shown output has a guarantee of
its own, such as majority's PREDICT) and, where a certifier's assumptions fail, `certificate_valid=false`. `certifies` names what
an attacked point is checked against (`certifiers.check`). `max_lower_bound(n)` is the largest lower
bound n estimation samples can give (all of them agreeing), so `max_certifiable_radius` is the ceiling
of the configuration, known before any sample is drawn (issue 11, point 11).
"""

from __future__ import annotations

import math
import time

import pandas as pd
from scipy.stats import norm

from smoothgen_exp.batching import start_size
from smoothgen_exp.packing import Program, direct, run_one


def eps_col(prefix: str, eps: float) -> str:
    """Column name of a bound evaluated at input distance eps, e.g. bound_tv_eps0.25."""
    return f"{prefix}_eps{eps:g}"


def row_confidence(certifier, aggregator) -> float:
    """The probability with which every guarantee of a row holds together: the certifier's, less the
    alpha of an aggregator whose shown output carries a guarantee of its own (majority's PREDICT:
    `claim_alpha`), by the union bound."""
    return certifier.confidence - float(getattr(aggregator, "claim_alpha", 0.0))


class Certifier:
    name = "certifier"
    classifies = True
    certifies: str | None = None       # class | answer | cosine | sequence (certifiers.check), or None
    required_lower = 0.5               # the lower bound a radius > 0 needs

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str):
        # batch_size: noise draws per batch; `auto` starts at batching.AUTO_START and the model's
        # OOMGuard backs off on out-of-memory (see smoothgen_exp.batching)
        self.n0, self.n, self.alpha = int(n0), int(n), float(alpha)
        self.batch_size = start_size(batch_size)

    def certify(self, ctx) -> dict:
        """The certificate columns of one item, on its own (the runner packs `certify_program` instead)."""
        t0 = time.perf_counter()
        row = run_one(ctx, self.certify_program(ctx))
        row["time_certify_s"] = time.perf_counter() - t0
        return row

    def certify_program(self, ctx) -> Program:
        """A sampling program (smoothgen_exp.packing) that returns the certificate columns."""
        columns = yield from self._program(ctx)
        return {"certifier": self.name, **self.run_columns(),
                "confidence": row_confidence(self, getattr(ctx, "aggregator", None)), **columns}

    def _program(self, ctx) -> Program:
        """The certificate as a sampling program; by default `_certify` samples on its own (not packed)."""
        return (yield from direct(self._certify, ctx))

    def _certify(self, ctx) -> dict:
        raise NotImplementedError

    def run_columns(self) -> dict:
        """n0, n and alpha: run-level columns of every row of an item, the baseline's included (their owner)."""
        return {"n0": self.n0, "n": self.n, "alpha": self.alpha}

    @property
    def confidence(self) -> float:
        """With this probability every guarantee of a row holds (over the certifier's own sampling)."""
        return 1.0 - self.alpha

    def max_lower_bound(self, n: int) -> float | None:
        """The largest lower bound n estimation samples can give; None where no radius is certified."""
        return None

    def max_certifiable_radius(self, scale: float, n: int | None = None) -> float | None:
        """The largest radius any item can reach with n (default: this certifier's) estimation samples at
        this alpha, for noise of L2 scale `scale`; 0 where nothing can certify."""
        p = self.max_lower_bound(self.n if n is None else n)
        if p is None:
            return None
        if p <= self.required_lower:
            return 0.0
        return float(scale * (norm.ppf(p) - norm.ppf(self.required_lower)))

    def smallest_n(self, radius: float = 0.0, scale: float = 1.0, limit: int = 10**9) -> int | None:
        """The smallest n whose ceiling exceeds `radius` (reaches it, for radius > 0); None past `limit`."""
        def ok(n):
            if radius <= 0:
                return self.max_lower_bound(n) > self.required_lower
            return self.max_certifiable_radius(scale, n) >= radius
        hi = 1
        while not ok(hi):
            hi *= 2
            if hi > limit:
                return None
        lo = hi // 2            # fails (or 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        return hi

    def settings(self) -> dict:
        """Settings the run summary states whether or not its rows are valid (not `nominal_`-prefixed)."""
        return {}

    def summarize(self, smoothed: pd.DataFrame) -> dict:
        """Means of the bound_* (guarantees) and diag_* (diagnostics) columns over the items that have them
        (NaN where none has), with the count of those items (`mean_<col>_items`) where some have none; where items can abstain (center's check) and
        rows have no radius, `abstain_rate` beside them says how many did not."""
        out = {}
        if "abstained" in smoothed and "radius" not in smoothed and smoothed.abstained.notna().any():
            out["abstain_rate"] = float(smoothed.abstained.dropna().astype(float).mean())   # None: cannot abstain
        for col in smoothed.columns:
            if col.startswith(("bound_", "diag_")) and pd.api.types.is_numeric_dtype(smoothed[col]) \
                    and not pd.api.types.is_bool_dtype(smoothed[col]):
                vals = smoothed[col].astype(float)
                out[f"mean_{col}"] = float(vals.mean()) if vals.notna().any() else math.nan
                if vals.isna().any():
                    out[f"mean_{col}_items"] = int(vals.notna().sum())
        return out


class BoundCertifier(Certifier):
    """A certifier whose result is a set of bounds evaluated at the input distances `eps_grid`."""

    classifies = False

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str, eps_grid: tuple):
        super().__init__(n0, n, alpha, batch_size)
        self.eps_grid = tuple(float(e) for e in eps_grid)
