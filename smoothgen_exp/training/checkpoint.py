"""Resumable training checkpoints as safetensors: tensors as tensors, everything else as JSON metadata.

A checkpoint holds the state dicts of the objects being trained (network, optimizer, scheduler), the
states of the random generators, and the number of finished epochs; it is written atomically after
every epoch, so a killed training run resumes where it stopped and ends with the same weights as an
uninterrupted one (tests/test_training.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from smoothgen_exp.backbones.hub import transformers_bars_off


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """A JSON-able skeleton of `obj` with every tensor moved into `tensors` under a unique key.
    Dicts keep the type of their keys (optimizer states are keyed by int)."""
    if torch.is_tensor(obj):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return {"__list__": [flatten(v, tensors, prefix) for v in obj], "tuple": isinstance(obj, tuple)}
    return obj


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, dict) and "__list__" in skeleton:
        items = [unflatten(v, tensors) for v in skeleton["__list__"]]
        return tuple(items) if skeleton.get("tuple") else items
    return skeleton


class Checkpoint:
    """`<weights file>.ckpt.safetensors` next to the weights it will become; removed when they are written.
    With no path (a trainer called without one) it saves nothing and only keeps the training clock."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.seconds_before = 0.0      # training seconds of the epochs restored (earlier, killed parts)
        self._started = time.perf_counter()

    def seconds(self) -> float:
        """Training seconds over every part of a resumed run: the restored epochs' and this process's."""
        return self.seconds_before + time.perf_counter() - self._started

    def save(self, epoch: int, stateful: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
        if self.path is None:
            return
        tensors: dict[str, torch.Tensor] = {}
        skeleton = {"epoch": epoch, "seconds": self.seconds(),
                    "state": {name: flatten(obj.state_dict(), tensors) for name, obj in stateful.items()},
                    "generators": {name: flatten(g.get_state(), tensors) for name, g in generators.items()},
                    "torch_rng": flatten(torch.get_rng_state(), tensors)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"skeleton": json.dumps(skeleton)})
        os.replace(tmp, self.path)

    def restore(self, stateful: dict[str, Any], generators: dict[str, torch.Generator]) -> int:
        """Load the saved states into the given objects; the number of finished epochs (0: none saved)."""
        if self.path is None or not self.path.exists():
            return 0
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            skeleton = json.loads(f.metadata()["skeleton"])
        tensors = load_file(str(self.path))
        for name, obj in stateful.items():
            obj.load_state_dict(unflatten(skeleton["state"][name], tensors))
        for name, g in generators.items():
            g.set_state(unflatten(skeleton["generators"][name], tensors))
        torch.set_rng_state(unflatten(skeleton["torch_rng"], tensors))
        self.seconds_before, self._started = float(skeleton.get("seconds", 0.0)), time.perf_counter()
        return int(skeleton["epoch"])

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


SHOW_PROGRESS: ContextVar[bool] = ContextVar("show_training_progress", default=True)


@contextlib.contextmanager
def training_progress(show: bool):
    """Training bars on or off inside the block (a run with progress=false trains weights without them),
    and so are transformers' loading bars ("Loading weights", GGUF de-quantizing: they printed under
    progress=false; a new user)."""
    token = SHOW_PROGRESS.set(bool(show))
    with contextlib.ExitStack() as stack:
        if not show:
            stack.enter_context(transformers_bars_off())
        try:
            yield
        finally:
            SHOW_PROGRESS.reset(token)


def epochs(total: int, checkpoint: Checkpoint | None, stateful: dict[str, Any],
           generators: dict[str, torch.Generator], desc: str, stop_after: int | None = None):
    """The epochs still to run (resuming from `checkpoint`), with a progress bar; a checkpoint is saved
    after each. `stop_after` ends early after that many epochs of this call (tests of resumption)."""
    from tqdm.auto import trange

    start = checkpoint.restore(stateful, generators) if checkpoint else 0
    bar = trange(start, total, desc=desc, leave=False, initial=start, total=total, disable=not SHOW_PROGRESS.get())
    for done, epoch in enumerate(bar):
        yield epoch, bar
        if checkpoint:
            checkpoint.save(epoch + 1, stateful, generators)
        if stop_after is not None and done + 1 >= stop_after:
            raise Interrupted(epoch + 1)


class Interrupted(Exception):
    """Training stopped on purpose after `epoch` epochs (`stop_after`); the checkpoint holds them."""

    def __init__(self, epoch: int):
        super().__init__(f"stopped after epoch {epoch}")
        self.epoch = epoch
