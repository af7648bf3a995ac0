"""What a configuration can do, decided before any weights load, and what a finished run returns.

- `check_before_loading`: the five checks below, before any weights load; `checked_certifier` adds
  `check_certifiable` and returns the configured certifier;
- `check_attack_fits_model`: white-box attacks need gradients through the generator;
- `check_oracle_fits_certifier`: a class certificate needs an oracle that tells classes apart;
- `check_booster_fits_model`: a booster sits around a feature encoder;
- `check_components_fit`: what an aggregator, certifier or metrics class `requires` of the model or oracle;
- `check_labels_fit_oracle`: a dataset's labels must index the oracle's classes;
- `check_certifiable`: a configuration that can certify no radius fails in one line, naming the n that would;
- `certified_ceiling`, `ceiling_summary`: the largest radius any item can reach (`max_certifiable_radius`);
- `oracle_naming_every_missing_weight`: the oracle, or one line naming its and the model's missing weights;
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

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from smoothgen_exp.errors import ConfigError, WeightsNotFound, cause_of

log = logging.getLogger(__name__)


def check_certifiable(certifier) -> None:
    """Fail in one line when no item could certify any radius: even with all n estimation samples
    agreeing the lower bound stays at or below what a radius needs (alpha^(1/n) <= 1/2 for CERTIFY)."""
    best = certifier.max_lower_bound(certifier.n)
    if best is None or best > certifier.required_lower:
        return
    need = certifier.smallest_n()
    raise ConfigError(f"certifier.n={certifier.n}: at alpha={certifier.alpha:g} no item can certify any radius "
                      f"(all {certifier.n} samples agreeing give a lower bound of {best:.4g} <= "
                      f"{certifier.required_lower:g}); use certifier.n >= {need}")


def certified_ceiling(certifier, smoothing, summary_radii) -> float | None:
    """The largest radius any item can reach (`max_certifiable_radius`). A sequential target above it
    fails in one line; summary radii above it are noted (their certified accuracy is 0 by arithmetic)."""
    scale = smoothing.l2_scale
    ceiling = certifier.max_certifiable_radius(scale)
    if ceiling is None:
        return None
    log.info("largest certifiable radius at n=%d, alpha=%g: %.4g (all samples agreeing)%s", certifier.n,
             certifier.alpha, ceiling, "" if ceiling_is_certified(certifier, smoothing) else
             ", NOMINAL: this configuration's certificates rest on assumptions that fail (SPEC 4)")
    target = getattr(certifier, "target_radius", None)
    if target is not None and target > ceiling:
        need = certifier.smallest_n(target, scale)
        fix = f"use certifier.n >= {need}" if need is not None else "raise the noise (no n up to 1e9 reaches it)"
        raise ConfigError(f"certifier.target_radius={target:g}: above the largest radius n={certifier.n} samples "
                          f"can certify at alpha={certifier.alpha:g} and noise scale {scale:g} ({ceiling:.4g}); "
                          f"lower it or {fix}")
    above = [r for r in summary_radii if r > ceiling]
    if above:          # a note, not a warning: the default radii run past a small n's ceiling
        log.info("summary_radii %s lie above the largest certifiable radius %.4g (n=%d, alpha=%g): their "
                 "certified accuracy is 0 by arithmetic", above, ceiling, certifier.n, certifier.alpha)
    return ceiling


def ceiling_is_certified(certifier, smoothing) -> bool:
    """False where every row of the configuration is nominal (input-dependent noise, the symmetric
    oracle-error model: SPEC 4), and so is its ceiling."""
    return bool(smoothing.certificate_valid and getattr(certifier, "oracle_error_valid", True))


def ceiling_summary(certifier, smoothing, ceiling: float | None) -> dict:
    """The summary's `max_certifiable_radius`, `nominal_`-prefixed where the configuration is nominal (the
    symmetric model's all-agreeing votes give p_lower = 1, an infinite radius that is no certificate)."""
    nominal = "" if ceiling_is_certified(certifier, smoothing) else "nominal_"
    return {f"{nominal}max_certifiable_radius": ceiling}


def oracle_naming_every_missing_weight(load_oracle, load_model):
    """The oracle (it loads first: the default model trains against it). When its weights are missing,
    the model is tried as well, so that one line names every missing weight (model=sd15 named the CLIP
    oracle's, and the SD weights only on the next try)."""
    try:
        return load_oracle()
    except Exception as err:
        if (oracle := cause_of(err, WeightsNotFound)) is None:
            raise
        try:
            load_model()
        except Exception as also:
            if (model := cause_of(also, WeightsNotFound)) is not None:
                raise WeightsNotFound(f"{model}; and {oracle}") from None
        raise


def check_before_loading(cfg: DictConfig) -> None:
    check_attack_fits_model(cfg)
    check_oracle_fits_certifier(cfg)
    check_booster_fits_model(cfg)
    check_components_fit(cfg)
    check_labels_fit_oracle(cfg)


def check_labels_fit_oracle(cfg: DictConfig) -> None:
    """An item's label is an index into the oracle's classes: accuracy, attack objectives and harm events
    compare the two. Refuse a dataset whose labels name other classes (dataset=robot_commands with
    oracle=actions: "move forward" is the dataset's class 0 and the vocabulary's class 2)."""
    dataset, oracle = get_class(cfg.dataset._target_), get_class(cfg.oracle._target_)
    if not getattr(oracle, "has_classes", True):
        return
    labels, classes = (names(cfg[group]) if callable(names) else names
                       for group, names in (("dataset", getattr(dataset, "class_names", None)),
                                            ("oracle", getattr(oracle, "class_names", None))))
    if labels is None or classes is None:
        return
    if [n.strip().lower() for n in labels] != [n.strip().lower() for n in classes[:len(labels)]]:
        def shown(names):
            return ", ".join(list(names)[:4]) + (f", ... {len(names)} in all" if len(names) > 4 else "")
        raise ConfigError(f"dataset={hydra_choice(cfg, 'dataset') or dataset.__name__}: its labels index the classes "
                          f"({shown(labels)}), and oracle={hydra_choice(cfg, 'oracle') or oracle.__name__} classifies "
                          f"into ({shown(classes)}), so accuracy would compare unrelated classes; choose an oracle "
                          "whose classes begin with the dataset's, in its order, or a dataset without labels")


# what a component may ask of the class chosen in another group (its class attribute `requires`)
CAPABILITIES = {
    "tensor outputs (images or features)": lambda cls: getattr(cls, "output_kind", "image") != "text",
    "text outputs": lambda cls: getattr(cls, "output_kind", "image") == "text",
    "token-averaged decoding (a language model)": lambda cls: hasattr(cls, "token_average"),
    "output features": lambda cls: hasattr(cls, "features"),
}


def check_components_fit(cfg: DictConfig) -> None:
    """Each chosen class's `requires` ({group: capability}) against the class chosen in that group, so
    that e.g. `aggregator=mean` on a language model fails in one line, not with an AttributeError later."""
    for group in ("aggregator", "certifier", "metrics"):
        cls = get_class(cfg[group]._target_)
        requires = getattr(cls, "requires", {})                 # or a function of the group's config
        for other, capability in (requires(cfg[group]) if callable(requires) else requires).items():
            target = get_class(cfg[other]._target_)
            if not CAPABILITIES[capability](target):
                article = "an" if other[0] in "aeiou" else "a"
                chosen = hydra_choice(cfg, other) or target.__name__
                named = chosen if chosen == target.__name__ else f"{chosen} ({target.__name__})"
                option = hydra_choice(cfg, group) or getattr(cls, "name", cls.__name__)
                raise ConfigError(f"{group}={option}: needs {article} {other} with {capability}, "
                                  f"and {other}={named} has none")


def hydra_choice(cfg: DictConfig, group: str) -> str | None:
    """The option chosen in a group, where Hydra knows it (a running app, or a config composed with its
    hydra node); None elsewhere."""
    from hydra.core.hydra_config import HydraConfig

    choices = (HydraConfig.get().runtime.choices if HydraConfig.initialized()
               else OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {})
    return None if choices.get(group) is None else str(choices.get(group))


def checked_certifier(cfg: DictConfig):
    """The checks that need no weights (`check_before_loading`, then `check_certifiable` on the configured
    certifier); returns that certifier. A run makes them before loading, a sweep for its jobs up front."""
    from hydra.utils import instantiate

    check_before_loading(cfg)
    certifier = instantiate(cfg.certifier)
    check_certifiable(certifier)
    return certifier


def check_booster_fits_model(cfg: DictConfig) -> None:
    """booster=gsb denoises the input and maps the feature of an encoder: refuse generators of images or text."""
    booster, model = get_class(cfg.booster._target_), get_class(cfg.model._target_)
    if getattr(booster, "enabled", False) and getattr(model, "output_kind", None) != "features":
        raise ConfigError(f"booster={booster.name}: sits around a feature encoder "
                          f"(model=digit_encoder, tiny_clip_vision, clip_vision); {model.__name__} does not output "
                          "features")


def check_oracle_fits_certifier(cfg: DictConfig) -> None:
    """oracle=none and oracle=equivalence put every output in class 0: a class certificate would "certify"
    it at the largest radius n allows and say nothing. Refuse it; an answer certificate (semantic) may use
    an oracle's own equivalence (`compares_answers`) instead of classes."""
    oracle, certifier = get_class(cfg.oracle._target_), get_class(cfg.certifier._target_)
    certifies, answers = getattr(certifier, "certifies", None), getattr(oracle, "compares_answers", False)
    if getattr(oracle, "classifies", True) or certifies not in ("class", "answer") or (certifies == "answer" and answers):
        return
    fix = "certifier=semantic (answers up to equivalence)" if answers else "certifier=output_bound, distribution or center"
    raise ConfigError(f"certifier={getattr(certifier, 'name', certifier.__name__)}: certifies a class, and "
                      f"oracle={hydra_choice(cfg, 'oracle') or oracle.__name__} has none (every output is class 0); "
                      f"use {fix}")


def check_attack_fits_model(cfg: DictConfig) -> None:
    """White-box attacks (PGD) need gradients through the generator: refuse models without them."""
    attack, model = get_class(cfg.attack._target_), get_class(cfg.model._target_)
    if getattr(attack, "white_box", False) and not getattr(model, "differentiable", True):
        raise ConfigError(f"attack={attack.name}: needs gradients through the generator, and {model.__name__} "
                          "has none; use attack=nes or attack=random_search")


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
    """summary[objective] for a sweeper; -inf when a constraint (summary key: minimum) is missed, NaN
    (with a warning) when the summary has no such key (e.g. only `nominal_*` keys); None off rank 0."""
    if summary is None:
        return None
    value = summary_value(summary, objective)
    if not isinstance(value, int | float):
        from smoothgen_exp.config import RunConf

        # the default objective is missing from every run without class certificates: a note; one the
        # user chose for a sweeper: a warning
        level = logging.INFO if objective == RunConf.objective else logging.WARNING
        log.log(level, "objective %s is not a number in the summary (keys like it: %s): returning NaN", objective,
                ", ".join(k for k in summary if objective.split("/")[0] in k) or "none")
        return math.nan
    for key, minimum in dict(constraints or {}).items():
        got = summary_value(summary, key)
        if not isinstance(got, int | float) or not got >= minimum:     # NaN or missing: not met
            log.info("constraint %s >= %s not met (%s): objective -inf", key, minimum, got)
            return -math.inf
    return float(value)


def warn_violations(count: int, run_dir: Path) -> None:
    from rich.console import Console

    msg = (f"CERTIFICATE VIOLATIONS: at {count} attacked item(s) a fresh upper confidence bound fell below "
           f"what the certificate promises within its radius. That is a bug or a probability-alpha event; "
           f"inspect rows with certificate_violation=true in {run_dir / 'records'}.")
    log.warning(msg)
    Console(stderr=True).print(f"[bold red]{msg}[/]")


def completed_summary(run_dir: Path, chash: str, run_id: str) -> dict | None:
    """The summary of this very configuration if its job finished (summary.json is written last), printed
    again on rank 0 so that rerunning a command shows its results; None if it did not finish. A summary
    written by other code than this (provenance.json's git_sha) follows that code's rules: say so."""
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
        print_summary(summary, title=f"{run_id}, already complete", records=read_records(run_dir), run_dir=run_dir)
    return summary
