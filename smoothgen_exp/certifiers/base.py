"""What every certifier shares: sample sizes, confidence level, and how its columns are summarised.

A certifier's `certify(ctx)` returns the columns of the item's smoothed row. Those that certify a class
(`classifies = True`) fill prediction / radius / certified and the run summary reports certified
accuracy; the others fill `bound_*` columns, summarised by their means.
"""

from __future__ import annotations

import math
import time

import pandas as pd

from smoothgen_exp.batching import start_size

DEFAULT_EPS_GRID = (0.1, 0.25, 0.5, 1.0)


def eps_col(prefix: str, eps: float) -> str:
    """Column name of a bound evaluated at input distance eps, e.g. bound_tv_eps0.25."""
    return f"{prefix}_eps{eps:g}"


class Certifier:
    name = "certifier"
    classifies = True

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str):
        # batch_size: noise draws per batch; `auto` starts at batching.AUTO_START and the model's
        # OOMGuard backs off on out-of-memory (see smoothgen_exp.batching)
        self.n0, self.n, self.alpha = int(n0), int(n), float(alpha)
        self.batch_size = start_size(batch_size)

    def certify(self, ctx) -> dict:
        t0 = time.perf_counter()
        row = {"certifier": self.name, "n0": self.n0, "n": self.n, "alpha": self.alpha,
               **self._certify(ctx)}
        row["time_certify_s"] = time.perf_counter() - t0
        return row

    def _certify(self, ctx) -> dict:
        raise NotImplementedError

    def summarize(self, smoothed: pd.DataFrame) -> dict:
        """Means of the bound_* columns over items (NaN where a bound was not available)."""
        out = {}
        for col in smoothed.columns:
            if col.startswith("bound_") and pd.api.types.is_numeric_dtype(smoothed[col]) \
                    and not pd.api.types.is_bool_dtype(smoothed[col]):
                vals = smoothed[col].astype(float)
                out[f"mean_{col}"] = float(vals.mean()) if vals.notna().any() else math.nan
        return out


class BoundCertifier(Certifier):
    """A certifier whose result is a set of bounds evaluated at the input distances `eps_grid`."""

    classifies = False

    def __init__(self, n0: int = 0, n: int = 1000, alpha: float = 0.001, batch_size: int | str = 1000,
                 eps_grid: tuple = DEFAULT_EPS_GRID):
        super().__init__(n0, n, alpha, batch_size)
        self.eps_grid = tuple(float(e) for e in eps_grid)
