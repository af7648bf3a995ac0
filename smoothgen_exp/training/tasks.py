"""`task=...` of `python -m smoothgen_exp.train`: what to train, from the run's own component configs.

A task instantiates the component whose weights it trains from the same `model` / `oracle` config the
runner uses, so the weights land in the cache under the hash of that config and a later run with the
same config (the same one override, e.g. `model.epochs=120`) loads them instead of training.
"""

from __future__ import annotations

from hydra.utils import instantiate

from smoothgen_exp.config import configured
from smoothgen_exp.weights import retraining


@configured
class TrainDigitOracle:
    """The digit classifier that judges the default's generations (`oracle=digit_classifier`)."""

    weights = "digit_oracle"

    def run(self, cfg, device) -> dict:
        with retraining({self.weights} if cfg.retrain else set()):
            oracle = instantiate(cfg.oracle, cache_dir=cfg.cache_dir, device=device)
        return {"task": "digit_oracle", "weights": oracle.weights_file, "heldout_accuracy": oracle.heldout_accuracy}


@configured
class TrainDigitsT2I:
    """The default's text-to-image cVAE (`model=digits_t2i`), against the frozen digit oracle."""

    weights = "digits_t2i"

    def run(self, cfg, device) -> dict:
        with retraining({self.weights} if cfg.retrain else set()):
            model = instantiate(cfg.model, cache_dir=cfg.cache_dir, device=device)
        return {"task": "digits_t2i", "weights": model.weights_file,
                "heldout_prompt_accuracy": model.heldout_prompt_accuracy}
