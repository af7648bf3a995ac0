"""Issue 12.2: every option satisfies its group's protocol (typing.Protocol, torch-free modules)."""

import inspect
import subprocess
import sys

import pytest
from hydra.utils import get_class, instantiate

from smoothgen_exp.aggregators.protocol import Aggregator
from smoothgen_exp.attacks.protocol import Attack
from smoothgen_exp.boosters.protocol import Booster
from smoothgen_exp.certifiers.protocol import CertifierProtocol
from smoothgen_exp.config import CONF_DIR
from smoothgen_exp.data.protocol import CalibrationSplit, Dataset
from smoothgen_exp.metrics.protocol import Metrics
from smoothgen_exp.models.protocol import EncodesConditions, EncodesItems, Generator, model_reads
from smoothgen_exp.oracles.protocol import Oracle
from smoothgen_exp.smoothing.protocol import FittedNoiseLaw, NoiseLaw, Smoothing

CHEAP = {"aggregator": Aggregator, "certifier": CertifierProtocol, "smoothing": Smoothing, "attack": Attack,
         "booster": Booster}


def option(group: str, name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"{group}={name}"])[group]


@pytest.mark.parametrize("group", sorted(CHEAP))
def test_cheap_options_are_instances_of_their_protocol(group):
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        obj = instantiate(option(group, path.stem))
        if group == "attack" and not obj.enabled:
            continue                                        # attack=none: nothing runs
        if isinstance(obj, FittedNoiseLaw) and hasattr(obj, "lambda_min") is False:
            obj.lambda_min = obj.lambda_max = 0.01          # as after setup (its l2_scale needs the fit)
        assert isinstance(obj, CHEAP[group]), f"{group}={path.stem}"


def methods(protocol) -> set[str]:
    return {name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")}


@pytest.mark.parametrize("group,protocol", [("model", Generator), ("oracle", Oracle), ("metrics", Metrics),
                                            ("dataset", Dataset)])
def test_every_class_has_its_protocols_methods(group, protocol):
    """Models and oracles load weights, so their classes (not instances) are checked for the methods."""
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = option(group, path.stem)
        cls = get_class(node._target_)
        if group == "metrics" and not getattr(cls, "enabled", True):
            continue                                        # metrics=none
        missing = {m for m in methods(protocol) | {"__iter__", "__len__"} & set(dir(protocol))
                   if not callable(getattr(cls, m, None))}
        assert not missing, f"{group}={path.stem}: {cls.__name__} lacks {sorted(missing)}"
        if group == "model":                                # encode, or encode_items (images with the prompt)
            assert any(callable(getattr(cls, m, None)) for m in methods(EncodesConditions) | methods(EncodesItems))
            assert model_reads(cls) in ("prompts", "images", "latent seeds"), path.stem  # checks.check_items_fit_model
        if group == "dataset":
            assert cls.item_kind in ("prompts", "images", "latent seeds"), path.stem


def test_noise_laws_and_datasets_answer_the_optional_protocols():
    import torch

    for name in ("gaussian", "adaptive"):                  # the law each item gets
        law = instantiate(option("smoothing", name))
        law.reference = 1.0
        law.sensitivity = lambda model, z: 1.0
        assert isinstance(law.at(torch.zeros(3), None), NoiseLaw)
    assert isinstance(instantiate(option("smoothing", "calibrated")), FittedNoiseLaw)
    assert not isinstance(instantiate(option("smoothing", "gaussian")), FittedNoiseLaw)
    assert isinstance(instantiate(option("dataset", "digits_prompts")), CalibrationSplit)


def test_protocol_modules_do_not_import_torch():
    code = ("import sys\nimport smoothgen_exp.models.protocol, smoothgen_exp.smoothing.protocol, "
            "smoothgen_exp.oracles.protocol, smoothgen_exp.aggregators.protocol, smoothgen_exp.attacks.protocol, "
            "smoothgen_exp.metrics.protocol, smoothgen_exp.certifiers.protocol, smoothgen_exp.data.protocol, "
            "smoothgen_exp.boosters.protocol\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert res.stdout.strip() == "False", res.stderr


def test_a_class_missing_a_method_fails_the_check():
    class Broken:
        condition_kind, differentiable = "text", False

        def encode(self, conditions):
            return conditions

    assert not isinstance(Broken(), Generator)             # no generate
