"""Trained-at-first-use weights, cached as safetensors under the run's cache directory.

The file name carries a hash of everything that determines the weights (hyperparameters, training
seed, data version), so changing any of them trains anew instead of loading stale weights. Writes are
atomic (temporary file, then rename), so concurrent processes never read a half-written file, and a
file lock next to the weights makes concurrent processes (multirun jobs sharing a cache, pytest-xdist
workers) train once: the others wait and load.

Training runs on exactly TRAIN_THREADS torch intra-op threads and TRAIN_BLAS_THREADS threads of numpy's
and scipy's BLAS (scikit-learn fits), whatever the process had (a pytest-xdist worker has one, a 2-core run
two, a cluster node dozens): a float sum split over k threads adds in another order for each k, so weights
trained on 1 and on 2 threads differ in their last bits and every number computed from them moves a
little. Pinned, the same config trains the same weights on any machine with the same kernels (CPU
instruction set or GPU), and the thread counts are part of the key. (On a many-core node this makes
training slower than it could be; the trainings here are minutes on two cores.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from smoothgen_exp.errors import SmoothgenError

log = logging.getLogger(__name__)

TRAIN_THREADS = 2         # torch intra-op threads of every training (see the module docstring)
TRAIN_BLAS_THREADS = 2    # numpy / scipy BLAS threads of every training (the scikit-learn probe)
THREADS_KEY = f"torch{TRAIN_THREADS}-blas{TRAIN_BLAS_THREADS}"


def params_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


TRAINERS: dict[str, Callable[..., tuple[dict[str, torch.Tensor], dict[str, str]]]] = {}


def register_trainer(name: str):
    """Decorator: `fn(params, checkpoint_path, **context) -> (state_dict, metadata)` trains the weights `name`."""
    def register(fn):
        TRAINERS[name] = fn
        return fn
    return register


_RETRAIN: set[str] = set()


@contextlib.contextmanager
def retraining(names: set[str]):
    """Within the block, `load_or_train` trains the weights in `names` again even when they are cached."""
    saved = set(_RETRAIN)
    _RETRAIN.update(names)
    try:
        yield
    finally:
        _RETRAIN.clear()
        _RETRAIN.update(saved)


def weights_path(cache_dir: str | os.PathLike, name: str, params: dict) -> Path:
    return Path(cache_dir) / f"{name}-{params_key({**params, 'train_threads': THREADS_KEY})}.safetensors"


@contextlib.contextmanager
def training_threads():
    """Run the block on TRAIN_THREADS torch threads and TRAIN_BLAS_THREADS BLAS threads, then restore
    the process's own counts."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        with threadpool_limits(limits=TRAIN_BLAS_THREADS, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def load_or_train(cache_dir: str | os.PathLike, name: str, params: dict,
                  **context) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (state_dict, metadata) from `<cache_dir>/<name>-<hash>.safetensors`, training if absent.

    The trainer registered under `name` (smoothgen_exp.training) gets `params`, a resumable checkpoint
    (`<file>.ckpt.safetensors`, saved after every epoch and removed at the end) and `context` (objects
    the training needs, e.g. the frozen oracle). Without a registered trainer, missing weights fail in
    one line saying how to train them.
    """
    path = weights_path(cache_dir, name, params)
    retrain = name in _RETRAIN                 # `retraining({...})`: train again even when cached
    if path.exists() and not retrain:
        return _load(path)
    trainer = TRAINERS.get(name)
    if trainer is None:
        raise SmoothgenError(f"{name} weights are not in {cache_dir} ({path.name}): train them with "
                             f"`python -m smoothgen_exp.train task={name}`, or import smoothgen_exp.training "
                             "to train them on first use")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SmoothgenError(f"cache_dir={cache_dir}: cannot create {path.parent} to cache the trained {name} "
                             f"weights ({err.strerror}); choose a writable cache_dir") from None
    with FileLock(str(path) + ".lock"):
        if path.exists() and not retrain:     # another process trained it while this one waited
            return _load(path)
        checkpoint = path.with_suffix(".ckpt.safetensors")
        log.info("training %s (cached at %s)", name, path)
        with training_threads():
            state, meta = trainer(params, checkpoint, **context)
        meta = {**meta, "params": json.dumps(params, sort_keys=True), "train_threads": THREADS_KEY}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
        checkpoint.unlink(missing_ok=True)
    return state, {**meta, "file": str(path)}


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(path)), {**meta, "file": str(path)}
