"""`task=...` of `python -m smoothgen_exp.train`: what to train, from the run's own component configs.

A task instantiates the component whose weights it trains from the same `model` / `oracle` config the
runner uses, so the weights land in the cache under the hash of that config and a later run with the
same config (the same one override, e.g. `model.epochs=120`) loads them instead of training.
"""

from __future__ import annotations

from hydra.utils import instantiate

from smoothgen_exp.config import configured
from smoothgen_exp.weights import retraining


class TrainComponent:
    """Trains (or, when cached, loads) the weights `weights` of the component configured in `group`, and
    reports the file and the component's held-out `metric`. The component must be the task's own
    (`target`): another would be loaded, labelled with this task's name, and never retrained."""

    group: str
    weights: str
    metric: str
    target: str

    def build(self, cfg, device):
        from smoothgen_exp.errors import ConfigError

        configured_target = cfg[self.group]._target_
        if configured_target != self.target:
            raise ConfigError(f"task={self.weights} trains {self.target.rsplit('.', 1)[1]} ({self.group}); this "
                              f"config's {self.group} is {configured_target.rsplit('.', 1)[1]}: drop the override "
                              "that chose it (a model preset may choose the oracle), or use the task that trains it")
        with retraining({self.weights} if cfg.retrain else set()):
            return instantiate(cfg[self.group], cache_dir=cfg.cache_dir, device=device)

    def run(self, cfg, device) -> dict:
        part = self.build(cfg, device)
        return {"task": self.weights, "weights": part.weights_file, self.metric: getattr(part, self.metric)}


@configured
class TrainDigitOracle(TrainComponent):
    """The digit classifier that judges the default's generations (`oracle=digit_classifier`)."""

    group, weights, metric = "oracle", "digit_oracle", "heldout_accuracy"
    target = "smoothgen_exp.oracles.digits.DigitClassifier"


@configured
class TrainDigitsT2I(TrainComponent):
    """The default's text-to-image cVAE (`model=digits_t2i`), against the frozen digit oracle."""

    group, weights, metric = "model", "digits_t2i", "heldout_prompt_accuracy"
    target = "smoothgen_exp.models.digits.DigitsT2I"


@configured
class TrainDigitsDiffusion(TrainComponent):
    """The text-conditional diffusion UNet of `model=digits_diffusion`, trained on real digits; reports
    the held-out quality measured at training time (oracle accuracy and FID) and the training time."""

    group, weights, metric = "model", "digits_diffusion", "heldout_prompt_accuracy"
    target = "smoothgen_exp.models.digits_diffusion.DigitsDiffusion"

    def run(self, cfg, device) -> dict:
        part = self.build(cfg, device)
        # the sampler the held-out numbers were measured with, at training (not necessarily this config's)
        return {"task": self.weights, "weights": part.weights_file, self.metric: part.heldout_prompt_accuracy,
                "heldout_fid": part.heldout_fid, "heldout_sampling": part.heldout_sampling,
                "train_seconds": part.train_seconds}


@configured
class TrainTinyVAE(TrainComponent):
    """The small AutoencoderKL of `model=tiny_vae`, on real digits; reports its held-out reconstruction MSE."""

    group, weights, metric = "model", "tiny_vae", "heldout_mse"
    target = "smoothgen_exp.models.vae.TinyVAE"


@configured
class TrainSRLVAE:
    """SRL-VAE post-training of the VAE `model=...` (tiny_vae, sd_vae): its encoder hardened against L-inf
    attacks on the reconstruction, the decoder frozen; reports the held-out clean and attacked MSE of the
    original and the post-trained encoder, and the training seconds (from the weights' metadata)."""

    def run(self, cfg, device) -> dict:
        import json

        from smoothgen_exp.errors import ConfigError

        if "robust" not in cfg.model:
            raise ConfigError(f"task=srl_vae: model._target_={cfg.model._target_} is not a VAE; use model=tiny_vae "
                              "or model=sd_vae")
        with retraining({"srl_vae"} if cfg.retrain else set()):
            vae = instantiate(cfg.model, robust="srl", cache_dir=cfg.cache_dir, device=device)
        return {"task": "srl_vae", "weights": vae.srl_file, **json.loads(vae.srl_info["heldout"])}


@configured
class TrainGSB:
    """The Gaussian Smoothness Booster (`booster=gsb`, the parts `booster.components` names) around the frozen
    feature encoder `model=...`; reports where the weights went, the held-out robustness scores and l_id
    measured at training time, each part's training seconds as its weights record them (every resumed part's
    epochs; NaN, written as null in train.json, for weights written before they were recorded) and their sum, and the seconds this call
    took (about 0 when everything was cached)."""

    def run(self, cfg, device) -> dict:
        import json
        import math
        import time

        from smoothgen_exp.errors import ConfigError

        booster = instantiate(cfg.booster, cache_dir=cfg.cache_dir, device=device)
        if not booster.enabled or booster.components == "none":
            raise ConfigError("task=gsb: nothing to train (booster=none or booster.components=none); use "
                              "booster=gsb with booster.components=p, m or pm")
        encoder = instantiate(cfg.model, cache_dir=cfg.cache_dir, device=device)
        start = time.perf_counter()
        with retraining({"gsb_denoiser", "gsb_mapper"} if cfg.retrain else set()):
            _, _, info = booster.load(encoder, cfg.model)
        out = {"task": "gsb", "components": booster.components, "seconds": time.perf_counter() - start}
        for part, meta in info.items():
            out[part] = {"weights": meta["file"], "train_seconds": float(meta.get("train_seconds", math.nan)),
                         **{k: json.loads(v) for k, v in meta.items() if k.startswith("heldout_")}}
        out["train_seconds"] = sum(out[part]["train_seconds"] for part in info)
        return out
