"""What a configuration can do, decided before any weights load (what a finished run returns: `outcome`).
Over 300 lines: every reason a configuration is refused before its weights load is here, in one place.

- `check_before_loading`: the nine checks below, before any weights load; `checked_certifier` adds
  `check_certifiable`, `check_confidence` and `check_target_radius` and returns the configured certifier;
- `check_attack_fits_model`, `check_attack_objective_fits_model`: white-box attacks need gradients through
  the generator, and what the attack's objective measures must exist on the model;
- `check_oracle_fits_certifier`, `check_eval_items_fit_oracle`: a class certificate needs an oracle that
  tells classes apart, and `eval_items=baseline_correct` one whose classes are ground truth;
- `check_booster_fits_model`, `check_components_fit`: a booster sits around a feature encoder; what an
  aggregator, certifier or metrics class `requires` of the model or oracle;
- `check_items_fit_model`, `check_oracle_reads_outputs`, `check_labels_fit_oracle`: a model reads prompts,
  images or latent seeds, which the dataset must hold; the oracle classifies the model's kind of output;
  a dataset's labels must index the oracle's classes;
- `check_certifiable`: a configuration that can certify no radius fails in one line, naming the n that would;
- `check_confidence`: a row's guarantees must hold together with probability above 1/2;
- `check_target_radius`: a sequential target above the ceiling of n, or a table it would design too large
  for memory, fails in one line (before loading where the config fixes the noise scale; under
  smoothing=calibrated once it is fitted, in `certified_ceiling`);
- `certified_ceiling`, `ceiling_summary`: the largest radius any item can reach (`max_certifiable_radius`);
- `oracle_naming_every_missing_weight`: the oracle, or one line naming its and the model's missing weights.
"""

from __future__ import annotations

import logging
import math

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from smoothgen_exp.errors import ConfigError, WeightsNotFound, cause_of
from smoothgen_exp.models.protocol import ITEMS_READ, model_reads

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
    ceiling = certifier.max_certifiable_radius(smoothing.l2_scale)
    if ceiling is None:
        return None
    log.info("largest certifiable radius at n=%d, alpha=%g: %.4g (all samples agreeing)%s", certifier.n,
             certifier.alpha, ceiling, "" if ceiling_is_certified(certifier, smoothing) else
             ", NOMINAL: this configuration's certificates rest on assumptions that fail (SPEC 4)")
    check_target_radius(certifier, smoothing, ceiling)
    getattr(certifier, "prepare", lambda _: None)(smoothing)    # work once the noise is known (a table to design)
    above = [r for r in summary_radii if r > ceiling]
    if above:          # a note, not a warning: the default radii run past a small n's ceiling
        log.info("summary_radii %s lie above the largest certifiable radius %.4g (n=%d, alpha=%g): their "
                 "certified accuracy is 0 by arithmetic", above, ceiling, certifier.n, certifier.alpha)
    return ceiling


def check_target_radius(certifier, smoothing, ceiling: float | None = None) -> None:
    """A sequential certifier's target radius above the ceiling of its n fails in one line, naming the n
    that reaches it, as does a table it would design too large for memory (give_up=table, sequential_bayes).
    Made before loading where the noise scale is known from the config (`checked_certifier`), and again
    once the law is fitted (`certified_ceiling`: smoothing=calibrated's scale is known then, and it passes
    the `ceiling` it has computed)."""
    target, scale = getattr(certifier, "target_radius", None), smoothing.l2_scale
    ceiling = certifier.max_certifiable_radius(scale) if ceiling is None else ceiling
    if target is not None and ceiling is not None and target > ceiling:
        need = certifier.smallest_n(target, scale)
        fix = f"use certifier.n >= {need}" if need is not None else "raise the noise (no n up to 1e9 reaches it)"
        raise ConfigError(f"certifier.target_radius={target:g}: above the largest radius n={certifier.n} samples "
                          f"can certify at alpha={certifier.alpha:g} and noise scale {scale:g} ({ceiling:.4g}); "
                          f"lower it or {fix}")
    if target is not None and hasattr(certifier, "check_table_fits") and hasattr(smoothing, "required_p"):
        certifier.check_table_fits(float(smoothing.required_p(target)))      # per-input noise: per item


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
    for check in (check_attack_fits_model, check_attack_objective_fits_model, check_oracle_fits_certifier,
                  check_eval_items_fit_oracle, check_booster_fits_model, check_components_fit, check_items_fit_model,
                  check_oracle_reads_outputs, check_labels_fit_oracle):
        check(cfg)


def _names(cls, conf) -> list | tuple | None:
    """A dataset's or oracle's `class_names` (a tuple, or a function of its config); None where unknown."""
    names = getattr(cls, "class_names", None)
    return names(conf) if callable(names) else names


def check_oracle_reads_outputs(cfg: DictConfig) -> None:
    """The oracle classifies the model's outputs: images, features or text (`reads`). An image classifier
    given a language model's answers failed after loading."""
    model, oracle = get_class(cfg.model._target_), get_class(cfg.oracle._target_)
    output, reads = getattr(model, "output_kind", "image"), getattr(oracle, "reads", None)
    if reads is not None and output not in reads:
        kinds = {"image": "images", "features": "features", "text": "text"}
        raise ConfigError(f"oracle={_chosen(cfg, 'oracle', oracle)}: classifies "
                          f"{' or '.join(kinds[r] for r in reads)}, and model={_chosen(cfg, 'model', model)} "
                          f"outputs {kinds.get(output, output)}")


def _class_name(name) -> str:
    """A class name as compared: lower case, and a numeral 0-9 as its word (CLIP classes "0".."9" or 0..9
    name the digits "zero".."nine")."""
    from smoothgen_exp.data.digits import WORDS

    text = str(name).strip().lower()
    return WORDS[int(text)] if text.isdigit() and int(text) < len(WORDS) else text


def _labels_fit(labels, classes) -> bool:
    """Labels index the oracle's classes: its names begin with the dataset's (unknown on either side: yes)."""
    return labels is None or classes is None or \
        [_class_name(n) for n in labels] == [_class_name(n) for n in list(classes)[:len(labels)]]


def check_items_fit_model(cfg: DictConfig) -> None:
    """A model reads one kind of item (`model_reads`): prompts, images or latent seeds. The default text-to-image
    model given dataset=digits_images encoded "heldout digit image 0" as a prompt; a VAE given prompts
    failed mid-run with a TypeError."""
    from smoothgen_exp.config import CONF_DIR, SCHEMAS

    dataset, model, oracle = (get_class(cfg[g]._target_) for g in ("dataset", "model", "oracle"))
    reads, kind = model_reads(model), getattr(dataset, "item_kind", None)
    if None in (reads, kind) or reads == kind:
        return
    classes = _names(oracle, cfg.oracle) if getattr(oracle, "has_classes", True) else None

    def labels_of(raw):                                  # an option's labels, from its yaml and schema
        node = OmegaConf.merge(OmegaConf.structured(SCHEMAS[raw._target_]), {k: v for k, v in raw.items()
                                                                             if k != "defaults"})
        return _names(get_class(raw._target_), node)

    options = {p.stem: OmegaConf.load(p) for p in sorted((CONF_DIR / "dataset").glob("*.yaml"))}
    kinds = [name for name, raw in options.items() if getattr(get_class(raw._target_), "item_kind", None) == reads]
    fitting = [name for name in kinds if _labels_fit(labels_of(options[name]), classes)] or kinds
    raise ConfigError(f"model={_chosen(cfg, 'model', model)}: generates from {reads}, and "
                      f"dataset={_chosen(cfg, 'dataset', dataset)} holds {kind}; use "
                      f"dataset={' | '.join(fitting) or 'one of ' + reads}")


def check_labels_fit_oracle(cfg: DictConfig) -> None:
    """An item's label is an index into the oracle's classes: accuracy, attack objectives and harm events
    compare the two. Refuse a dataset whose labels name other classes (dataset=robot_commands with
    oracle=actions: "move forward" is the dataset's class 0 and the vocabulary's class 2)."""
    dataset, oracle = get_class(cfg.dataset._target_), get_class(cfg.oracle._target_)
    if not getattr(oracle, "has_classes", True):
        return
    labels, classes = _names(dataset, cfg.dataset), _names(oracle, cfg.oracle)
    if not _labels_fit(labels, classes):
        def shown(names):
            return ", ".join(map(str, list(names)[:4])) + (f", ... {len(names)} in all" if len(names) > 4 else "")
        raise ConfigError(f"dataset={_chosen(cfg, 'dataset', dataset)}: its labels index the classes "
                          f"({shown(labels)}), and oracle={_chosen(cfg, 'oracle', oracle)} classifies "
                          f"into ({shown(classes)}), so accuracy would compare unrelated classes; choose an oracle "
                          "whose classes begin with the dataset's, in its order, or a dataset without labels")


# what a component may ask of the class chosen in another group (its class attribute `requires`)
CAPABILITIES = {
    "tensor outputs (images or features)": lambda cls: getattr(cls, "output_kind", "image") != "text",
    "text outputs": lambda cls: getattr(cls, "output_kind", "image") == "text",
    "token-averaged decoding (a language model)": lambda cls: hasattr(cls, "token_average"),
    "output features": lambda cls: hasattr(cls, "features"),
    "canonical answers (qa_facts, robot_commands)": lambda cls: getattr(cls, "canonical_answers", False),
    "gradients through the generator (its Jacobian)":     # text outputs have none, whatever their logits have
        lambda cls: getattr(cls, "differentiable", True) and getattr(cls, "output_kind", "image") != "text",
}


def check_components_fit(cfg: DictConfig) -> None:
    """Each chosen class's `requires` ({group: capability}) against the class chosen in that group, so
    that e.g. `aggregator=mean` on a language model fails in one line, not with an AttributeError later."""
    for group in ("aggregator", "certifier", "metrics", "oracle", "smoothing"):
        cls = get_class(cfg[group]._target_)
        requires = getattr(cls, "requires", {})                 # or a function of the group's config
        for other, capability in (requires(cfg[group]) if callable(requires) else requires).items():
            target = get_class(cfg[other]._target_)
            if not CAPABILITIES[capability](target):
                article = "an" if other[0] in "aeiou" else "a"
                chosen = _chosen(cfg, other, target)
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


def _chosen(cfg: DictConfig, group: str, cls: type) -> str:
    """How a message names the option chosen in `group`: Hydra's choice, else its class's name."""
    return hydra_choice(cfg, group) or cls.__name__


def checked_certifier(cfg: DictConfig):
    """The checks that need no weights (`check_before_loading`, then `check_certifiable`, `check_confidence`
    and, where the noise scale is known, `check_target_radius` on the configured certifier); returns it.
    A run makes them before loading, a sweep for its jobs up front."""
    from hydra.utils import instantiate

    from smoothgen_exp.smoothing.protocol import FittedNoiseLaw

    check_before_loading(cfg)
    certifier = instantiate(cfg.certifier)
    check_certifiable(certifier)
    check_confidence(cfg, certifier)
    smoothing = instantiate(cfg.smoothing)
    # calibrated's scale is known once it is fitted (certified_ceiling checks it then); adaptive's is not fitted
    if not isinstance(smoothing, FittedNoiseLaw) or getattr(smoothing, "scale_before_setup", False):
        check_target_radius(certifier, smoothing)
    return certifier


def check_confidence(cfg: DictConfig, certifier) -> None:
    """Fail in one line when a row's guarantees would hold together with probability 1/2 or less: the
    certifier's confidence less the alpha of an aggregator whose shown output carries a guarantee of its
    own (majority's PREDICT: `claim_alpha`), as the row's `confidence` column counts them. Each alpha
    is below 1/2 (config.level), but their sum need not be."""
    from hydra.utils import instantiate

    from smoothgen_exp.certifiers.base import row_confidence

    aggregator = instantiate(cfg.aggregator)             # a constructor that stores its settings
    confidence = row_confidence(certifier, aggregator)
    if confidence <= 0.5:
        alphas = ["certifier.alpha", *(["certifier.oracle_error_alpha"] if cfg.certifier.get("oracle_error_alpha") else []),
                  *(["aggregator.alpha"] if hasattr(aggregator, "claim_alpha") else [])]
        raise ConfigError(f"a row's guarantees would hold together with probability {confidence:.4g} (1 minus "
                          f"the sum of {', '.join(alphas)}); lower {' or '.join(alphas)}")


def check_attack_objective_fits_model(cfg: DictConfig) -> None:
    """What an attack's objective measures must exist on the model: an output space to move in (distance,
    feature), a reconstruction of the input (latent, reconstruction: a VAE), a prompt to edit (semantic),
    class probabilities for a target, and for a white-box attack on classes an oracle with a gradient. These
    failed after the weights loaded (a VAE trained 85 s first). A distance or feature objective needs a
    random start (it is flat at x on the baseline)."""
    attack, model = get_class(cfg.attack._target_), get_class(cfg.model._target_)
    objective, name = cfg.attack.get("objective"), hydra_choice(cfg, "attack") or getattr(attack, "name", "attack")
    chosen = _chosen(cfg, "model", model)
    text = getattr(model, "output_kind", None) == "text"
    if objective in ("distance", "feature") and text:
        raise ConfigError(f"attack.objective={objective}: model={chosen} outputs text, which has no output space "
                          "to move in; use attack.objective=flip or event")
    if objective in ("latent", "reconstruction") and not getattr(model, "reconstructs", False):
        raise ConfigError(f"attack={name} (attack.objective={objective}): needs a model that reconstructs its "
                          f"input, a VAE (model=tiny_vae or sd_vae), and model={chosen} does not")
    edits, kind = getattr(attack, "edits", None), getattr(model, "condition_kind", None)
    if edits is not None and kind != edits:
        raise ConfigError(f"attack={name}: edits {ITEMS_READ[edits]}, and model={chosen} is conditioned on "
                          f"{ITEMS_READ.get(kind, kind)}; use a model conditioned on {ITEMS_READ[edits]}")
    oracle = get_class(cfg.oracle._target_)
    if objective in ("flip", "event") and not getattr(oracle, "classifies", True):
        fix = "an oracle with classes (oracle=refusal, answers or actions)" if text else "attack.objective=distance"
        raise ConfigError(f"attack.objective={objective}: needs an oracle with classes, and oracle="
                          f"{_chosen(cfg, 'oracle', oracle)} puts every output in class 0 (a flip "
                          f"could never succeed); use {fix}")
    if objective in ("distance", "feature") and cfg.attack.get("random_start") is False:
        raise ConfigError(f"attack={name} (attack.objective={objective}): this objective is at its least at x, where its "
                          "gradient on the deterministic baseline vanishes, so an attack starting at x does not move "
                          "the baseline (the smoothed generator's noise does move); set attack.random_start=true")
    eval_n, eval_alpha = cfg.attack.get("eval_n"), cfg.attack.get("eval_alpha")
    if objective == "event" and eval_n and eval_alpha:
        from smoothgen_exp.stats import cp_lower  # scipy: imported only here, off the start-up path

        # the judge's own decision (attacks.judge.event_decisions) with every vote off the label
        if cp_lower(eval_n, eval_n, eval_alpha) <= 0.5:
            raise ConfigError(f"attack.eval_n={eval_n}: even {eval_n} of {eval_n} votes off the label cannot show "
                              f"P(event) > 1/2 at attack.eval_alpha={eval_alpha:g}, so the smoothed event could "
                              f"never succeed; use attack.eval_n >= {math.floor(math.log2(1.0 / eval_alpha)) + 1}")
    dataset = get_class(cfg.dataset._target_)
    if objective == "event" and hasattr(dataset, "class_names") and _names(dataset, cfg.dataset) is None:
        raise ConfigError(f"attack.objective=event: P(class != label) needs labels, and dataset="
                          f"{_chosen(cfg, 'dataset', dataset)} has none; use attack.objective=flip "
                          "or distance")
    if getattr(attack, "white_box", False) and objective in ("flip", "event") and not hasattr(oracle, "logits") \
            and not (objective == "flip" and hasattr(model, "answer_logprob")):
        raise ConfigError(f"attack={name} (attack.objective={objective}): follows the gradient of class probabilities, and "
                          f"oracle={_chosen(cfg, 'oracle', oracle)} gives labels only (no gradient); use a query attack "
                          "(attack=nes or random_search)" + (" or attack.objective=flip" if objective == "event" and
                                                               hasattr(model, "answer_logprob") else ""))
    if hasattr(model, "answer_logprob") and objective == "flip" and cfg.attack.get("target") is not None:
        raise ConfigError("attack.target: a language model's answer is attacked untargeted (the likelihood of "
                          "the clean answer); set attack.target=null")
    target, classes = cfg.attack.get("target"), _names(oracle, cfg.oracle)
    if target is not None and classes is not None and target >= len(classes):
        raise ConfigError(f"attack.target={target}: oracle={_chosen(cfg, 'oracle', oracle)} has classes 0..{len(classes) - 1} "
                          f"({', '.join(map(str, list(classes)[:4]))}{', ...' if len(classes) > 4 else ''})")


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
                      f"oracle={_chosen(cfg, 'oracle', oracle)} has none (every output is class 0); "
                      f"use {fix}")


def check_eval_items_fit_oracle(cfg: DictConfig) -> None:
    """`eval_items=baseline_correct` needs an oracle whose classes are ground truth (it failed after loading)."""
    if cfg.get("eval_items") == "baseline_correct":
        from smoothgen_exp.data.subsets import refuse_without_ground_truth

        refuse_without_ground_truth(oracle := get_class(cfg.oracle._target_), _chosen(cfg, "oracle", oracle))


def check_attack_fits_model(cfg: DictConfig) -> None:
    """White-box attacks (PGD) need gradients through the generator: refuse models without them."""
    attack, model = get_class(cfg.attack._target_), get_class(cfg.model._target_)
    if getattr(attack, "white_box", False) and not getattr(model, "differentiable", True):
        raise ConfigError(f"attack={attack.name}: needs gradients through the generator, and {model.__name__} "
                          "has none; use attack=nes or attack=random_search")
