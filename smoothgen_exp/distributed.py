"""Ranks of a multi-process run (torchrun / accelerate launch), through accelerate's PartialState.

With WORLD_SIZE > 1, items are split contiguously between ranks (`split_between_processes`), every rank
writes its own parquet parts, and only rank 0 writes the summary and logs. Rows do not depend on the
split: every random draw is seeded by (seed, item_id). A single process needs none of this and never
initialises torch.distributed.
"""

from __future__ import annotations

import contextlib
import os

import torch

from smoothgen_exp.devices import resolve_device
from smoothgen_exp.errors import SmoothgenError


class Ranks:
    def __init__(self, device: str = "auto"):
        self.state = None
        self.rank, self.world = 0, 1
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            from accelerate import PartialState

            # Without cpu=True on a machine without CUDA, accelerate reports one process on every
            # rank, and every rank would then do (and write) all the work.
            self.state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes
            if self.world != world:
                raise SmoothgenError(f"WORLD_SIZE={world} but accelerate sees {self.world} process(es); "
                                     "launch with torchrun or `accelerate launch --num_processes N`")
            self.device = self.state.device if device == "auto" else torch.device(device)
        else:
            self.device = resolve_device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def main_process_first(self):
        """Rank 0 first (it trains or downloads shared weights), the others after it."""
        return self.state.main_process_first() if self.state else contextlib.nullcontext()

    def wait(self) -> None:
        if self.state:
            self.state.wait_for_everyone()

    def split(self, items: list) -> list:
        if not self.state:
            return items
        with self.state.split_between_processes(items) as mine:
            return list(mine)

    def gather(self, obj) -> list:
        """obj from every rank, in rank order (on every rank)."""
        if not self.state:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Tear the process group down before exit (gloo aborts the interpreter otherwise)."""
        if self.state and torch.distributed.is_initialized():
            self.state.destroy_process_group()


LAUNCHER = "SMOOTHGEN_LAUNCHER_PID"        # set by `distributed.num_processes=N` for the workers it starts


def die_with_launcher() -> None:
    """A worker that `distributed.num_processes` started ends when its launcher ends (Linux's
    PR_SET_PDEATHSIG), so a kill -9 of the command leaves no worker writing its run directory."""
    launcher = os.environ.get(LAUNCHER)
    if not launcher:
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)      # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):                                    # not Linux: nothing to set
        return
    if os.getppid() != int(launcher):            # the launcher ended before prctl took effect
        os._exit(1)
