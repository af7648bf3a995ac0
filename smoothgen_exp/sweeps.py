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
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    swept = [f"{key}={value}" for key, value in params.items()] + [a for a, ov in zip(plain, overrides, strict=True)
                                                                     if ov.is_sweep_override()]
    axes: dict[str, list[str]] = {}
    for ov in parser.parse_overrides(swept):            # the command line's replace the experiment's
        if ov.key_or_group.startswith("hydra"):
            continue
        try:
            axes[ov.get_key_element()] = [str(v) for v in ov.sweep_string_iterator()]
        except Exception:  # glob(), interval() and friends: Hydra (or its sweeper) expands those itself
            continue
    axes = {key: values for key, values in axes.items() if values}
    fixed = [a for a, ov in zip(plain, overrides, strict=True) if not ov.is_sweep_override()]
    for job in _sweep_jobs(axes):
        _check_job(compose_overrides, fixed, job)


def _sweep_jobs(axes: dict[str, list[str]]):
    """The combinations to check: all of them up to MAX_SWEEP_CHECKS, else each value once."""
    if math.prod(len(v) for v in axes.values()) <= MAX_SWEEP_CHECKS:
        yield from (dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values()))
        return
    first = {key: values[0] for key, values in axes.items()}
    yield first
    for key, values in axes.items():
        yield from ({**first, key: value} for value in values[1:])


def _check_job(compose, fixed: list[str], job: dict[str, str]) -> None:
    """One job's config through the checks that need no weights; exit 2 with one line if it fails."""
    from hydra.utils import instantiate

    from smoothgen_exp.config import validate

    swept = [f"{key}={value}" for key, value in job.items()]
    try:
        cfg = compose([*fixed, *swept], hydra_config=True)
    except Exception:  # Hydra reports what it cannot compose at that job
        return
    try:
        validate(cfg)
        check_before_loading(cfg)
        check_certifiable(instantiate(cfg.certifier))
    except Exception as err:
        if (cause := cause_of(err, SmoothgenError)) is None:
            raise
        print(f"error: {cause} (the sweep's job {' '.join(swept)}; no job has started)", file=sys.stderr)
        sys.exit(2)
