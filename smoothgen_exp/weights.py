"""Trained-at-first-use weights, cached as safetensors under the run's cache directory.

The file name carries a hash of everything that determines the weights (hyperparameters, training
seed, data version), so changing any of them trains anew instead of loading stale weights. Writes are
atomic (temporary file, then rename), so concurrent processes never read a half-written file, and a
file lock next to the weights makes concurrent processes (multirun jobs sharing a cache, pytest-xdist
workers) train once: the others wait and load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def params_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def load_or_train(cache_dir: str | os.PathLike, name: str, params: dict,
                  train: Callable[[], tuple[dict[str, torch.Tensor], dict[str, str]]]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (state_dict, metadata) from `<cache_dir>/<name>-<hash>.safetensors`, training if absent.

    `train()` returns the state dict and string metadata (e.g. held-out accuracy), stored alongside.
    """
    path = Path(cache_dir) / f"{name}-{params_key(params)}.safetensors"
    if path.exists():
        return _load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():                    # another process trained it while this one waited
            return _load(path)
        log.info("training %s (cached at %s)", name, path)
        state, meta = train()
        meta = {**meta, "params": json.dumps(params, sort_keys=True)}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    return state, meta


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(path)), meta
