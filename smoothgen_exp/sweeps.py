"""A sweep's jobs checked before the first one starts (`check_swept_values`, called by `__main__`).

A multirun that fails at its last job has spent everything before it: each job's config goes through the
checks a run makes before any weights load (the schema, then `checks.checked_certifier`), so a bad value
fails in one line at once.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from smoothgen_exp.checks import checked_certifier
from smoothgen_exp.errors import SmoothgenError, cause_of

MAX_SWEEP_CHECKS = 16      # a sweep's jobs checked in full up to here; beyond, jobs until each value is seen


def check_swept_values(argv: list[str]) -> None:
    """A multirun's jobs checked before the first one starts (schema, components that fit, an n that can
    certify), so that a bad value fails in one line, not when its job comes up hours later. The jobs are
    formed by Hydra's basic sweeper from an experiment's `hydra.sweeper.params` and the command line; a
    sweep whose jobs are not known here (glob, interval) is left to Hydra and its sweeper. Up to
    MAX_SWEEP_CHECKS jobs are checked in full; beyond, the first job and each job that brings a value
    not yet checked. Every config checked is one of the sweep's jobs, so a refusal is never spurious."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    from smoothgen_exp.config import compose_overrides, without_sweeps

    space = [a for a in argv if a.startswith("hydra.sweeper.params=")]
    try:
        base = compose_overrides([a for a in without_sweeps(argv) if a not in space], hydra_config=True)
    except Exception:  # a malformed override or one that does not compose: Hydra reports it itself
        return
    _check_search_space(space, base)
    if not ("-m" in argv or "--multirun" in argv or base.hydra.mode == RunMode.MULTIRUN) or base.get("dry_run"):
        return
    params = base.hydra.sweeper.get("params")
    params = [f"{k}={v}" for k, v in (OmegaConf.to_container(params, resolve=False) if params else {}).items()]
    try:                                       # as the basic sweeper: the experiment's params, then the command line
        overrides = OverridesParser.create().parse_overrides([*params, *(a for a in argv if not a.startswith("-"))])
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
    except Exception:  # glob(), interval(): the jobs are not known here; left to Hydra and its sweeper
        return
    shared = set.intersection(*map(set, jobs))
    for job in _jobs_to_check(jobs):
        _check_job(job, " ".join(arg for arg in job if arg not in shared))


def _check_search_space(space: list[str], base) -> None:
    """`hydra.sweeper.params={...}` merges into the search space a config declares (an experiment's): it
    can change a declared range but not add a key, which Hydra refuses with a struct error (a traceback
    under optuna, whose default space is null): one line that says what to write instead."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    declared = set(base.hydra.sweeper.get("params") or {})
    for arg in space:
        try:
            value = OverridesParser.create().parse_overrides([arg])[0].value()
        except Exception:  # malformed: Hydra reports it itself
            return
        added = sorted(set(value) - declared) if isinstance(value, dict) else []
        if added:
            verb = "is" if len(added) == 1 else "are"
            print(f"error: hydra.sweeper.params: {', '.join(added)} {verb} not in this config's search space (an override "
                  f"changes the ranges an experiment declares, it cannot add one); sweep it as a plain override: "
                  f"'{added[0]}=interval(low,high)' (optuna) or '{added[0]}=a,b,c'", file=sys.stderr)
            sys.exit(2)


def _jobs_to_check(jobs: list[list[str]]) -> list[list[str]]:
    """All the jobs up to MAX_SWEEP_CHECKS; beyond, each job that brings an override not yet checked."""
    if len(jobs) <= MAX_SWEEP_CHECKS:
        return jobs
    seen: set[str] = set()
    chosen = []
    for job in jobs:
        if not seen.issuperset(job):
            chosen.append(job)
            seen.update(job)
    return chosen


def _check_job(job: list[str], label: str) -> None:
    """One job's config through the checks that need no weights; exit 2 with one line if one fails (an
    error that is not the project's own is left to the job itself)."""
    from smoothgen_exp.config import compose_overrides, validate

    try:
        cfg = compose_overrides(job, hydra_config=True)
        validate(cfg)
        checked_certifier(cfg)
    except Exception as err:
        if (cause := cause_of(err, SmoothgenError)) is None:
            return
        print(f"error: {cause} (the sweep's {f'job {label}' if label else 'only job'}; no job has started)",
              file=sys.stderr)
        sys.exit(2)
