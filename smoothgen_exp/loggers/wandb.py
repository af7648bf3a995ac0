"""logger=wandb: Weights & Biases, offline unless an API key is set; never prompts."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from smoothgen_exp.config import configured

log = logging.getLogger(__name__)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


INIT_TIMEOUT_S = 30       # W&B's own default, 90 s, is how long a node without network waited before failing


@configured
class WandbLogger:
    """logger=wandb: config, rows (as a table) and summary. Offline unless an API key is set.

    W&B's run, cache, config and artifact dirs all live under `<run_dir>/wandb`, and it never prompts.
    """

    def __init__(self, project: str, entity: str | None, mode: str,
                 tags: list[str] | tuple, log_rows: bool):
        self.project, self.entity, self.mode = project, entity, mode
        self.tags, self.rows = list(tags), log_rows
        self.run = None

    def start(self, run_dir: Path, run_id: str, config: dict) -> None:
        # W&B writes its runs to <dir>/wandb/: <run_dir>/wandb/offline-run-..., beside its cache and config
        base = Path(run_dir).resolve()
        root = base / "wandb"
        for var, path in (("WANDB_DIR", base), ("WANDB_CACHE_DIR", root / "cache"),
                          ("WANDB_CONFIG_DIR", root / "config"), ("WANDB_DATA_DIR", root / "data"),
                          ("WANDB_ARTIFACT_DIR", root / "artifacts")):
            path.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(path)
        mode = self.mode
        if mode == "auto":
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        def init(mode: str):
            return wandb.init(project=self.project, entity=self.entity, mode=mode, dir=str(base), id=run_id,
                              resume="allow", config=config, tags=self.tags,
                              settings=wandb.Settings(console="off", quiet=True, init_timeout=INIT_TIMEOUT_S))

        try:
            self.run = init(mode)
        except Exception as err:           # a key but no network (a cluster node): the run goes on offline
            if mode != "online":
                raise
            log.warning("W&B online failed (%s: %s); logging offline instead (`wandb sync` uploads it later)",
                        type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
            wandb.teardown()                   # the failed run still holds its id in W&B's service
            self.run = init("offline")

    def log_rows(self, df: pd.DataFrame) -> None:
        if self.run is not None and self.rows and len(df):
            import wandb

            plain = df.reset_index(drop=True).astype(object)
            plain = plain.where(plain.notna(), None)      # W&B tables take None, not pandas' NA
            self.run.log({"records": wandb.Table(dataframe=plain)})

    def log_summary(self, summary: dict) -> None:
        if self.run is not None:
            flat = _flatten(summary)
            self.run.summary.update(flat)
            self.run.log({f"summary/{k}": v for k, v in flat.items() if isinstance(v, int | float)})

    def finish(self) -> None:
        if self.run is not None:
            offline, where = self.run.settings.mode == "offline", Path(self.run.dir).parent
            self.run.finish()
            self.run = None
            if offline:                       # WANDB_SILENT hides W&B's own message: say where it went
                log.info("W&B run saved offline in %s; `wandb sync %s` uploads it", where, where)
