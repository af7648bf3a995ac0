"""Issue 12.3: training has its own entrypoint; checkpoints resume to the same weights; the runner
loads what `python -m smoothgen_exp.train` trained."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import smoothgen_exp.training  # noqa: F401  (registers the trainers)
from smoothgen_exp import weights
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.training import checkpoint as ckpt_mod
from smoothgen_exp.training.checkpoint import Checkpoint, Interrupted, epochs
from smoothgen_exp.training.digits import train_digit_oracle

from .conftest import REPO

PARAMS = {"arch": "DigitCNN-v1", "data": "sklearn-digits-v1", "epochs": 3, "lr": 3e-3, "train_noise": 0.25,
          "seed": 0}


def test_a_killed_training_resumes_to_the_same_weights(tmp_path):
    whole, _ = train_digit_oracle(PARAMS)
    ckpt = tmp_path / "oracle.ckpt.safetensors"
    with pytest.raises(Interrupted):
        train_digit_oracle(PARAMS, str(ckpt), stop_after=1)          # killed after epoch 1
    assert ckpt.exists()
    resumed, _ = train_digit_oracle(PARAMS, str(ckpt))                # picks up at epoch 2
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_training_seconds_count_every_resumed_part(tmp_path, monkeypatch):
    """train_seconds of a killed and resumed training is the time of both parts' epochs, not the last
    part's alone (SRL-VAE and the digits diffusion model reported the resumed part only)."""
    clock = iter([0.0, 100.0, 150.0, 1000.0, 1000.0, 1030.0, 1040.0])   # perf_counter in call order
    monkeypatch.setattr(ckpt_mod.time, "perf_counter", lambda: next(clock))
    net, path = torch.nn.Linear(2, 2), tmp_path / "w.ckpt.safetensors"
    first = Checkpoint(path)                                             # started at 0
    with pytest.raises(Interrupted):
        for _ in epochs(3, first, {"net": net}, {}, "test", stop_after=2):   # saved at 100 and 150
            pass
    second = Checkpoint(path)                                            # a new process: clock at 1000
    assert list(e for e, _ in epochs(3, second, {"net": net}, {}, "test")) == [2]   # saved at 1030
    assert second.seconds() == pytest.approx(150.0 + 40.0)


def test_a_checkpoint_without_a_path_saves_nothing_and_keeps_the_clock(tmp_path, monkeypatch):
    """A trainer called without a checkpoint path still reports its training seconds (the GSB trainers
    reported none, and `task=gsb` this call's seconds instead: 0 for cached weights)."""
    clock = iter([10.0, 12.5])
    monkeypatch.setattr(ckpt_mod.time, "perf_counter", lambda: next(clock))
    monkeypatch.chdir(tmp_path)                                 # where a file from a bad path would land
    ckpt = Checkpoint(None)
    net = torch.nn.Linear(2, 2)
    assert [e for e, _ in epochs(2, ckpt, {"net": net}, {}, "test")] == [0, 1]
    ckpt.remove()
    assert ckpt.seconds() == 2.5 and not any(tmp_path.iterdir())


def test_missing_weights_without_a_trainer_say_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "TRAINERS", {})
    with pytest.raises(SmoothgenError, match=r"python -m smoothgen_exp.train task=digit_oracle") as err:
        weights.load_or_train(tmp_path, "digit_oracle", PARAMS)
    assert "\n" not in str(err.value)


def test_a_cache_dir_that_cannot_be_created_is_named(tmp_path):
    """cache_dir=/proc/nope printed FileNotFoundError(2, 'No such file or directory'), naming no path."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SmoothgenError, match=r"cache_dir=.*a_file/cache: cannot create .* choose a writable") as err:
        weights.load_or_train(blocker / "cache", "digit_oracle", PARAMS)
    assert "\n" not in str(err.value)


def train_cli(*args):
    return subprocess.run([sys.executable, "-m", "smoothgen_exp.train", *args], cwd=REPO, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=600)


def test_train_entrypoint_trains_and_the_runner_loads_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    res = train_cli("task=digit_oracle", "oracle.epochs=2", "oracle.min_accuracy=0", f"cache_dir={cache}",
                    f"hydra.run.dir={tmp_path / 'train'}")
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "train" / "train.json").read_text())
    assert result["task"] == "digit_oracle" and 0 < result["heldout_accuracy"] <= 1
    assert sorted(p.name for p in cache.glob("*.safetensors")) == [result["weights"].rsplit("/", 1)[-1]]
    # the same config loads the trained weights: no trainer is needed any more
    monkeypatch.setattr(weights, "TRAINERS", {})
    from smoothgen_exp.oracles.digits import DigitClassifier

    oracle = DigitClassifier(epochs=2, min_accuracy=0.0, cache_dir=str(cache))
    assert oracle.weights_file == result["weights"] and oracle.heldout_accuracy == result["heldout_accuracy"]


def test_train_entrypoint_rejects_bad_values_in_one_line(tmp_path):
    res = train_cli("task=digit_oracle", "oracle.epochs=0", f"cache_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["error: oracle.epochs=0: must be > 0"]
    res = train_cli("task=nope", f"hydra.run.dir={tmp_path / 'r'}")     # Hydra's message listed its _schema_ nodes
    assert res.returncode == 2 and res.stderr.strip().startswith("error: task=nope: no such task (available: ")
    assert len(res.stderr.strip().splitlines()) == 1
    # a run's setting no training reads was accepted and ignored (training review)
    res = train_cli("task=gsb", "model=digit_encoder", "smoothing.sigma=0.9", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: smoothing.sigma=0.9: no training reads it")
    # a misspelt key printed Hydra's six lines (a new user)
    res = train_cli("task=digits_t2i", "model.epoch=3", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error: model.epoch: unknown key (did you mean model.epochs?)")


def test_a_task_trains_only_its_own_component(tmp_path):
    """`task=digits_t2i model=digits_diffusion retrain=true` loaded the diffusion model, filed its weights
    and accuracy under digits_t2i and retrained nothing; `task=digit_oracle model=digit_encoder` reported
    the probe's accuracy (its preset chose oracle=digit_probe) as the CNN's (training review)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from smoothgen_exp.config import CONF_DIR
    from smoothgen_exp.errors import ConfigError

    for overrides, message in ((["task=digits_t2i", "model=digits_diffusion", "retrain=true"],
                                "task=digits_t2i trains DigitsT2I (model); this config's model is DigitsDiffusion"),
                               (["task=digit_oracle", "model=digit_encoder"],
                                "task=digit_oracle trains DigitClassifier (oracle); this config's oracle is DigitProbe")):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, f"cache_dir={tmp_path}"])
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            instantiate(cfg.task).run(cfg, "cpu")
    assert not list(tmp_path.iterdir())                  # refused before anything loads or trains


def test_weights_do_not_depend_on_the_process_thread_count(tmp_path):
    """A pytest-xdist worker has one thread, a CLI run on two cores two: the same config must train the
    same weights in both (float sums split over threads add in another order), and the caller keeps its
    own thread count."""
    before = torch.get_num_threads()
    trained = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            state, meta = weights.load_or_train(tmp_path / f"threads{threads}", "digit_oracle", PARAMS)
            assert torch.get_num_threads() == threads and meta["train_threads"] == weights.THREADS_KEY
        finally:
            torch.set_num_threads(before)
        trained.append(state)
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_the_scikit_learn_probe_does_not_depend_on_the_blas_thread_count(tmp_path):
    """The linear probe is fitted by scikit-learn on numpy/scipy's BLAS, whose threads torch does not set:
    1 and 2 BLAS threads in the process must give the same weights."""
    from threadpoolctl import threadpool_limits

    from smoothgen_exp.oracles.digits import DigitClassifier

    from .conftest import CACHE

    net = DigitClassifier(cache_dir=str(CACHE)).net
    params = {"arch": "linear-probe-v1", "data": "sklearn-digits-v1", "c": 1.0, "cnn": "test"}
    fitted = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            fitted.append(weights.load_or_train(tmp_path / f"blas{threads}", "digit_probe", params, net=net)[0])
    assert all(torch.equal(fitted[0][k], fitted[1][k]) for k in fitted[0])


def test_progress_false_trains_without_bars(capsys):
    """Weights trained inside a run with progress=false drew their epoch bars into the logs (a new user's
    make logs); the run now turns them off around setup."""
    from smoothgen_exp.training.checkpoint import epochs, training_progress

    with training_progress(False):
        assert [e for e, _ in epochs(3, None, {}, {}, "quiet")] == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err
    list(epochs(3, None, {}, {}, "shown"))
    assert "shown" in capsys.readouterr().err
    # transformers' own loading bars too ("Loading weights" printed under progress=false; a new user)
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()       # as this worker's earlier tests left them
    hf_logging.enable_progress_bar()
    try:
        with training_progress(False):
            list(hf_logging.tqdm(range(3), desc="Loading weights"))
        assert "Loading weights" not in capsys.readouterr().err and hf_logging.is_progress_bar_enabled()
    finally:
        if not before:
            hf_logging.disable_progress_bar()
    import huggingface_hub.utils as hub_utils

    hub_utils.disable_progress_bars()                         # a user's own setting stays (a review)
    try:
        with training_progress(False):
            pass
        assert hub_utils.are_progress_bars_disabled()
    finally:
        hub_utils.enable_progress_bars()


def test_loading_minilm_leaves_the_users_progress_bars_as_they_were():
    """MiniLMEncoder turned transformers' bars off for the whole process to hide its own loading bar, so a
    library user's later downloads and trainings ran without them."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    from smoothgen_exp.backbones.text_encoder import MiniLMEncoder

    before = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    try:
        for state, hub_off in ((True, False), (False, True), (False, False), (True, True)):
            (hf_logging.enable_progress_bar if state else hf_logging.disable_progress_bar)()
            (hub_utils.disable_progress_bars if hub_off else hub_utils.enable_progress_bars)()
            MiniLMEncoder()
            assert hf_logging.is_progress_bar_enabled() is state
            assert hub_utils.are_progress_bars_disabled() is hub_off   # transformers' switch moves hub's too
    finally:
        (hf_logging.enable_progress_bar if before[0] else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if before[1] else hub_utils.enable_progress_bars)()


def test_train_json_is_strict_json():
    """Regression: task=gsb reports NaN training seconds for weights written before they were recorded,
    and train.json held a bare NaN, which strict JSON readers (jq, JSON.parse) reject."""
    from smoothgen_exp.records import strict_json

    result = {"task": "gsb", "gsb_denoiser": {"train_seconds": float("nan")}, "train_seconds": np.float32("nan"),
              "scores": [1.0, float("inf")]}
    text = json.dumps(strict_json(result), allow_nan=False)
    assert json.loads(text) == {"task": "gsb", "gsb_denoiser": {"train_seconds": None}, "train_seconds": None,
                                "scores": [1.0, None]}


def test_train_help_lists_the_groups_a_training_reads_without_schema_nodes():
    """New-user review: `python -m smoothgen_exp.train --help` listed `_schema_*Conf` nodes in every group."""
    res = train_cli("task=digit_oracle", "--help")
    assert res.returncode == 0 and "_schema_" not in res.stdout, res.stderr[-500:]
    assert "\ntask: digit_oracle, digits_diffusion" in res.stdout and "\nepochs: " not in res.stdout
    assert "oracle:\n  _target_: smoothgen_exp.oracles.digits.DigitClassifier" in res.stdout
