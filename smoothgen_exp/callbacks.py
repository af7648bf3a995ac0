"""Hydra callbacks (conf/config.yaml `hydra.callbacks`): what runs before a run's directory exists
(`ValidateOnStart`), and what a search says after its last trial (`SearchOutcome`)."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from smoothgen_exp.checks import checked_certifier
from smoothgen_exp.config import (
    exit_on_user_error,
    print_config,
    refuse_busy_directory,
    refuse_existing_records,
    refuse_other_configuration,
    validate,
)
from smoothgen_exp.devices import resolve_device


class ValidateOnStart(Callback):
    """Validate (and answer dry_run) before Hydra creates the run directory: nothing is left behind, and a
    refused resume=false, or a directory of another configuration, leaves that run's .hydra/ as it was."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config)
            if not config.resume and not config.get("dry_run"):
                refuse_existing_records(config.hydra.run.dir)
            if not config.get("dry_run"):
                if int(os.environ.get("RANK", "0")) == 0:       # a run's own rank 0 may hold it already
                    refuse_busy_directory(config.hydra.run.dir)
                refuse_other_configuration(config.hydra.run.dir, config)
                resolve_device(config.device)        # device=cuda on a CPU machine: refused before the run dir
                checked_certifier(config)            # parts that do not fit, n that certifies nothing: as well
        except Exception as e:  # a user's error (SmoothgenError in its causes): one line; any other: raised
            exit_on_user_error(e)
            raise
        if config.get("dry_run"):
            print_config(config)
            sys.exit(0)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """dry_run on a sweep: the base config and the swept values, before any job directory exists."""
        if config.get("dry_run"):
            print_config(config)
            params = OmegaConf.select(config, "hydra.sweeper.params") or {}
            cli = [o for o in OmegaConf.select(config, "hydra.overrides.task") or [] if "," in str(o)]
            print("# sweep: " + "; ".join([f"{k}={v}" for k, v in params.items()] + list(map(str, cli))))
            sys.exit(0)


class SearchOutcome(Callback):
    """After a search (hydra-optuna-sweeper), a study none of whose trials met `objective_constraints`
    (each scored the worst value, -inf or +inf: `outcome.infeasible_value`) is said to be one: Optuna still names one of them in `optimization_results.yaml`
    as `best_params`, which is then no feasible setting. The file gains `feasible: false` and a warning is
    logged; a study with a finite best value is left as it is."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(OmegaConf.select(config, "hydra.sweep.dir") or ".")) / "optimization_results.yaml"
        if not path.is_file():
            return
        results = OmegaConf.load(path)
        best = results.get("best_value")
        if isinstance(best, int | float) and math.isfinite(best):
            return
        results.feasible = False
        OmegaConf.save(results, path)
        logging.getLogger(__name__).warning(
            "no trial met objective_constraints (best value %s): %s names best_params %s, but they are not "
            "feasible; widen the search or relax a constraint", best, path, OmegaConf.to_container(results.best_params))
