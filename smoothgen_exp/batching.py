"""Batch sizes: `certifier.batch_size` is an integer, or `auto` (start at AUTO_START, halve on out-of-memory).

Every generation of a run goes through `model.generate` (and, for LLMs, `model.step_probs`). `build_parts`
wraps the model in `OOMGuard`, which runs those calls in chunks of at most `Batcher.size` rows. With
`auto`, an out-of-memory error halves the size, frees the cache and retries the failed chunk; the size
found is kept for the rest of the run and recorded in every row (`batch_size`). With an integer the
error is re-raised with a hint. No draw depends on the chunking: noise comes in fixed chunks per stream
(`core.NoiseStream`), and the generator's own randomness is one seed per row (`seeding.row_seeds`),
drawn before the rows are split and sliced with them.
"""

from __future__ import annotations

import logging

import torch

from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.seeding import row_seeds

log = logging.getLogger(__name__)

AUTO = "auto"
AUTO_START = 1024


def is_oom(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the out-of-memory RuntimeErrors of the CPU and MPS allocators."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def start_size(spec: int | str) -> int:
    """The batch size a config value starts at: the integer itself, or AUTO_START for `auto`."""
    if spec == AUTO:
        return AUTO_START
    if isinstance(spec, bool) or not isinstance(spec, int) or spec <= 0:
        raise SmoothgenError(f"batch_size={spec}: must be a positive integer or auto")
    return spec


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif getattr(torch, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def _concat(parts: list):
    if torch.is_tensor(parts[0]):
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    return [row for part in parts for row in part]


class Batcher:
    """Runs a row-wise function over chunks of at most `size` rows, backing off on OOM when `auto`."""

    def __init__(self, spec: int | str = AUTO):
        self.auto = spec == AUTO
        self.size = start_size(spec)
        self.backoffs = 0

    def map(self, fn, z: torch.Tensor, rows: torch.Tensor | None = None):
        """fn(chunk) over z's rows (fn(chunk, rows chunk) when per-row `rows` are given), outputs
        concatenated in order."""
        parts, start = [], 0
        while start < len(z):
            chunk = z[start:start + self.size]
            try:
                parts.append(fn(chunk) if rows is None else fn(chunk, rows[start:start + len(chunk)]))
            except Exception as err:
                if not is_oom(err):
                    raise
                self._back_off(err, len(chunk))
                continue
            start += len(chunk)
        return _concat(parts)

    def _back_off(self, err: BaseException, rows: int) -> None:
        if not self.auto:
            raise SmoothgenError(f"out of memory at batch size {rows}: lower certifier.batch_size "
                                 "or set certifier.batch_size=auto") from err
        if rows <= 1:
            raise SmoothgenError("out of memory at batch size 1: the model does not fit on this device") from err
        _free_cache()
        self.size = max(1, rows // 2)
        self.backoffs += 1
        log.warning("out of memory at batch size %d: backing off to %d", rows, self.size)


class OOMGuard:
    """The model, with `generate` and `step_probs` run through a Batcher; every other attribute passes."""

    def __init__(self, model, batcher: Batcher):
        self.model, self.batcher = model, batcher
        if hasattr(model, "for_item"):      # a VLM: an item's context holds the guard around its bound prompt
            self.for_item = lambda item: OOMGuard(model.for_item(item), batcher)

    def generate(self, z: torch.Tensor, generator, shared: bool = False):
        """Per-row seeds are drawn (or taken) first and sliced with z, so chunking changes no draw."""
        seeds = row_seeds(generator, len(z), shared)
        return self.batcher.map(lambda c, s: self.model.generate(c, s), z, seeds)

    def step_probs(self, z: torch.Tensor, tokens):
        return self.batcher.map(lambda c: self.model.step_probs(c, tokens), z)

    def __getattr__(self, name: str):
        return getattr(self.model, name)
