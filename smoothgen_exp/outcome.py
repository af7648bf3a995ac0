"""What a finished run returns, and what its end says.

- `set_level_quality`: the metrics' summary, and after a resume how many items its FID covers;
- `objective_value`: the summary key a Hydra sweeper optimises, under minimum constraints;
- `completed_summary`: a finished run's summary, shown again when its command is rerun;
- `warn_violations`: the loud warning of a run whose attacks broke a certificate.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)


def set_level_quality(metrics, records, new_items: int, resumed_items: int) -> dict:
    """The metrics' summary. Set-level numbers (FID) accumulate in memory, over the items this process
    generated: after a resume they cover `quality_items` of the run's items only, and the log says so."""
    if not metrics.enabled or not new_items:
        return {}
    quality = metrics.summary(records)
    if resumed_items:
        log.warning("set-level metrics (FID) cover the %d items generated since the resume, not the %d recorded "
                    "before it: compare them only with runs of the same size, or rerun under a new run_id",
                    new_items, resumed_items)
        quality["quality_items"] = new_items
    return quality


def summary_value(summary: dict, key: str):
    """A summary value by key; `a/b` reads nested keys (`certified_accuracy/0.25`), as the tables do."""
    if key in summary:
        return summary[key]
    value = summary
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def objective_value(summary: dict | None, objective: str, constraints) -> float | None:
    """summary[objective] for a sweeper; the worst value (`infeasible_value`: -inf, or +inf where the
    sweeper minimises) when a constraint (summary key: minimum) is missed, NaN
    (with a warning) when the summary has no such key (e.g. only `nominal_*` keys); None off rank 0."""
    if summary is None:
        return None
    value = summary_value(summary, objective)
    if value is None and objective not in summary and searching():
        from smoothgen_exp.errors import ConfigError

        # every trial of the search would score NaN: stop at the first (its records and summary are kept)
        raise ConfigError(f"objective={objective}: no such key in this run's summary (keys like it: "
                          f"{keys_like(summary, objective)}); the search stops at its first trial")
    if not isinstance(value, int | float):
        from smoothgen_exp.config import RunConf

        # the default objective is missing from every run without class certificates: a note where a sweeper
        # reads it (a debug line in a plain run: nothing asked for it); one the user chose: a warning
        level = logging.WARNING if objective != RunConf.objective else \
            logging.INFO if sweeper_reads() else logging.DEBUG
        log.log(level, "objective %s is not a number in the summary (keys like it: %s): returning NaN", objective,
                keys_like(summary, objective))
        return math.nan
    constraints = dict(constraints or {})
    # a typo? (a key present with null is a constraint not met); all keys checked before any is evaluated
    missing = [k for k in constraints if summary_value(summary, k) is None and k not in summary
               and k.split("/")[0] not in summary]
    if missing and searching():              # every trial would score -inf
        from smoothgen_exp.errors import ConfigError

        raise ConfigError(f"objective_constraints: {missing[0]} is no key of this run's summary (keys like it: "
                          f"{keys_like(summary, missing[0])}); the search stops at its first trial")
    worst = infeasible_value()
    for key in missing:
        log.warning("constraint %s is not in the summary (keys like it: %s): objective %s", key,
                    keys_like(summary, key), worst)
    if missing:
        return worst
    for key, minimum in constraints.items():
        got = summary_value(summary, key)
        if not isinstance(got, int | float) or not got >= minimum:     # NaN: not met
            log.info("constraint %s >= %s not met (%s): objective %s", key, minimum, got, worst)
            return worst
    return float(value)


def infeasible_value() -> float:
    """What a trial that misses a constraint scores: the worst value for the sweeper's direction, -inf
    where it maximises (the default) and +inf where it minimises (-inf was the best trial there)."""
    hydra = _reading_sweep()
    direction = str(hydra.sweeper.get("direction", "maximize")) if hydra is not None else "maximize"
    return math.inf if direction.lower().startswith("min") else -math.inf


def _reading_sweep():
    """Hydra's config where this job belongs to a sweep whose sweeper reads what a job returns
    (hydra/sweeper=optuna, ...; the basic sweeper ignores it), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except Exception:  # not under Hydra (the library API, tests)
        return None
    reads = hydra.mode == RunMode.MULTIRUN and "BasicSweeper" not in str(hydra.sweeper.get("_target_", ""))
    return hydra if reads else None


def sweeper_reads() -> bool:
    """Whether a sweeper reads this job's objective."""
    return _reading_sweep() is not None


def searching() -> bool:
    """Whether this job is the first trial of a search that reads its objective. Only the first stops the
    search: a key a later trial lacks for a reason of its own (a drawn option without it) scores NaN or
    -inf there, as before."""
    hydra = _reading_sweep()
    return hydra is not None and int(hydra.job.get("num", 0) or 0) == 0


def keys_like(summary: dict, key: str) -> str:
    """Summary keys that contain `key`'s stem or are spelt like it (difflib), for a missing key's message."""
    import difflib

    keys = list(summary)
    like = [k for k in keys if key.split("/")[0] in k] or difflib.get_close_matches(key.split("/")[0], keys, 3, 0.75)
    return ", ".join(like) or "none"


def warn_violations(count: int, run_dir: Path) -> None:
    from rich.console import Console

    msg = (f"CERTIFICATE VIOLATIONS: at {count} attacked item(s) a fresh upper confidence bound fell below "
           f"what the certificate promises within its radius. That is a bug or a probability-alpha event; "
           f"inspect rows with certificate_violation=true in {run_dir / 'records'}.")
    log.warning(msg)
    Console(stderr=True).print(f"[bold red]{msg}[/]")


def completed_summary(run_dir: Path, chash: str, run_id: str, cfg=None) -> dict | None:
    """The summary of this very configuration if its job finished (summary.json is written last), printed
    again on rank 0 so that rerunning a command shows its results, and given to `cfg.logger` (logger is not
    part of the configuration: W&B added to a finished run's command logs that run, once); None if it did not
    finish. A summary written by other code than this (provenance.json's git_sha) follows that code's
    rules: say so."""
    from smoothgen_exp.provenance import completed, git_state
    from smoothgen_exp.records import read_records
    from smoothgen_exp.report import print_summary

    if (summary := completed(run_dir, chash)) is None:
        return None
    if int(os.environ.get("RANK", "0")) == 0:
        log.info("run %s already complete in %s", run_id, run_dir)
        provenance = run_dir / "provenance.json"
        then = json.loads(provenance.read_text()).get("git_sha", "unknown") if provenance.exists() else "unknown"
        now = git_state()[0]
        if "unknown" not in (then, now) and then != now:
            log.warning("run %s was summarised by the code at %s, not this code (%s): its summary follows that "
                        "code's rules; rerun under a new run_id to recompute it", run_id, then[:12], now[:12])
        records = read_records(run_dir)
        print_summary(summary, title=f"{run_id}, already complete", records=records, run_dir=run_dir)
        logged = list((run_dir / "wandb").glob(f"*run-*-{run_id}"))      # once: a rerun does not log it again
        if cfg is not None and not logged:          # logger=none's calls do nothing
            from hydra.utils import instantiate
            from omegaconf import OmegaConf

            logger = instantiate(cfg.logger)
            logger.start(run_dir, run_id, OmegaConf.to_container(cfg, resolve=True))
            logger.log_rows(records)
            logger.log_summary(summary)
            logger.finish()
    return summary
