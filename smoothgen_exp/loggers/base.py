"""logger=none, and the protocol every logger follows: start, log_rows, log_summary, finish."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from smoothgen_exp.config import configured


@configured
class NullLogger:
    """logger=none: records and summary stay in the run directory."""

    def start(self, run_dir: Path, run_id: str, config: dict) -> None:
        pass

    def log_rows(self, df: pd.DataFrame) -> None:
        pass

    def log_summary(self, summary: dict) -> None:
        pass

    def finish(self) -> None:
        pass
