"""A sweep's jobs checked before the first one starts (`check_swept_values`, called by `__main__`).

A multirun that fails at its last job has spent everything before it: each job's config goes through the
checks a run makes before any weights load (`checks.check_before_loading`, `checks.check_certifiable`
and the schema), so a bad value fails in one line at once.
"""

from __future__ import annotations

import itertools
import math
import sys

from omegaconf import OmegaConf

from smoothgen_exp.checks import check_before_loading, check_certifiable
from smoothgen_exp.errors import SmoothgenError, cause_of

MAX_SWEEP_CHECKS = 16      # a sweep's combinations checked in full up to here; beyond, each value once (0.1-0.3 s each)


def check_swept_values(argv: list[str]) -> None:
    """A multirun's jobs checked before the first one starts (schema, components that fit, an n that can
    certify), so that a bad value fails in one line, not when its job comes up hours later. The swept
    values are those of the command line and of `hydra.sweeper.params` (an experiment's own sweep), as
    the basic sweeper combines them; values Hydra expands itself (glob, interval) are left to it. Up to
    MAX_SWEEP_CHECKS combinations are checked in full; beyond, each value with the other keys at their
    first value. Every config checked is one of the sweep's jobs, so a refusal is never spurious."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    from smoothgen_exp.config import compose_overrides

    parser = OverridesParser.create()
    plain = [a for a in argv if not a.startswith("-")]
    try:
        overrides = parser.parse_overrides(plain)
        base = compose_overrides([a for a, ov in zip(plain, overrides, strict=True) if not ov.is_sweep_override()],
                                 hydra_config=True)
    except Exception:  # a malformed override or one that does not compose: Hydra reports it itself
        return
    if not ("-m" in argv or "--multirun" in argv or base.hydra.mode == RunMode.MULTIRUN) or base.get("dry_run"):
        return
    params = base.hydra.sweeper.get("params")
    params = [f"{k}={v}" for k, v in (OmegaConf.to_container(params, resolve=False) if params else {}).items()]
    # the jobs as Hydra's basic sweeper forms them: the experiment's params, then the command line, one
    # entry per key (a later override of a key replaces an earlier one, sweep or not)
    axes: dict[str, list[str]] = {}
    for arg, ov in zip([*params, *plain], parser.parse_overrides([*params, *plain]), strict=True):
        key = ov.get_key_element()
        if not ov.is_sweep_override():
            axes[key] = [arg]
            continue
        try:
            axes[key] = [f"{key}={value}" for value in ov.sweep_string_iterator()]
        except Exception:  # glob(), interval(): the jobs are not known here; left to Hydra and its sweeper
            return
    swept = {arg for values in axes.values() if len(values) > 1 for arg in values}
    for job in _sweep_jobs(axes):
        _check_job(compose_overrides, job, " ".join(arg for arg in job if arg in swept))


def _sweep_jobs(axes: dict[str, list[str]]):
    """The combinations to check: all of them up to MAX_SWEEP_CHECKS, else each value once."""
    if math.prod(len(v) for v in axes.values()) <= MAX_SWEEP_CHECKS:
        yield from (list(combo) for combo in itertools.product(*axes.values()))
        return
    first = {key: values[0] for key, values in axes.items()}
    yield list(first.values())
    for key, values in axes.items():
        yield from (list({**first, key: value}.values()) for value in values[1:])


def _check_job(compose, job: list[str], label: str) -> None:
    """One job's config through the checks that need no weights; exit 2 with one line if one fails (an
    error that is not the project's own is left to the job itself)."""
    from hydra.utils import instantiate

    from smoothgen_exp.config import validate

    try:
        cfg = compose(job, hydra_config=True)
        validate(cfg)
        check_before_loading(cfg)
        check_certifiable(instantiate(cfg.certifier))
    except Exception as err:
        if (cause := cause_of(err, SmoothgenError)) is None:
            return
        print(f"error: {cause} (the sweep's job {label}; no job has started)", file=sys.stderr)
        sys.exit(2)
