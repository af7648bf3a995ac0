"""Batch-invariant forwards: a row's result depends on that row alone, not on the rows batched with it.

A matrix product's rounding can depend on its row count (BLAS picks kernels by shape): a prompt encoded
alone (8 token rows) and in a batch (480 rows) differ in the last bits, and so do the next-token scores
of a noisy prompt copy generated alone or packed with other items' copies. `row_blocked(module)` makes
every linear layer (torch's `nn.Linear`, transformers' GPT-2 `Conv1D`) run on blocks of exactly
ROW_BLOCK rows (the last one zero-padded), so every product has one shape. Attention must also be
computed per row: language models run with transformers' "eager" attention (a batched matmul per
(row, head)), whose result does not depend on the batch in the layouts they use (tests/test_packing.py
checks both, for gpt2 and llama at width 64; GPT-2-small's 12 heads of 64 gave the same bits alone and
packed in a one-off check on 2026-12-07). That is an empirical property of
the kernels, not a law: on MiniLM's unpadded texts of 6 or 8 tokens eager attention does depend on the
batch on the CPU and sdpa does not, so the encoder pins sdpa (text_encoder.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

ROW_BLOCK = 64


class RowBlocked(nn.Module):
    """A linear layer evaluated on blocks of exactly ROW_BLOCK rows."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        # transformers' Conv1D stores the weight transposed ([in, out]) and computes addmm(b, x, W)
        self.transposed = not isinstance(layer, nn.Linear)

    def _block(self, rows: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return torch.addmm(self.layer.bias, rows, self.layer.weight)
        return F.linear(rows, self.layer.weight, self.layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        m = len(rows)
        if m % ROW_BLOCK:
            rows = F.pad(rows, (0, 0, 0, ROW_BLOCK - m % ROW_BLOCK))      # zero rows up to a whole block
        if len(rows) == ROW_BLOCK:            # one block (a decoding step of a small batch): no split, no cat
            out = self._block(rows)
        else:
            out = torch.cat([self._block(block) for block in rows.split(ROW_BLOCK)])
        return out[:m].reshape(*x.shape[:-1], -1)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def row_blocked(module: nn.Module) -> nn.Module:
    """Wrap every linear layer under `module` in RowBlocked (in place); returns `module`."""
    for name, child in module.named_children():
        if _is_linear(child):
            setattr(module, name, RowBlocked(child))
        elif not isinstance(child, RowBlocked):
            row_blocked(child)
    return module


def spread_over_devices(model: nn.Module) -> bool:
    """Whether a model loaded with a device map lies on several devices or is offloaded: then accelerate's
    hooks move a layer's weights in its own forward, which RowBlocked would bypass. A device map that
    puts the whole model on one device adds no hooks."""
    devices = set((getattr(model, "hf_device_map", None) or {"": None}).values())
    return len(devices) > 1 or "disk" in devices


def make_batch_invariant(model: nn.Module) -> bool:
    """Per-row ("eager") attention and RowBlocked linear layers on a transformers model, in place, unless
    it is spread over several devices (`spread_over_devices`); returns whether they were applied."""
    if spread_over_devices(model):
        return False
    model.set_attn_implementation("eager")
    row_blocked(model)
    return True


def equal_length_batches(seqs: Sequence[Sequence], batch_size: int) -> Iterator[list[int]]:
    """Indices of the non-empty token sequences `seqs`, in batches of at most `batch_size` of one length:
    unpadded, so a sequence's result does not depend on those batched with it (MiniLM, the LLM judge)."""
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(seqs):
        if len(seq):
            by_length.setdefault(len(seq), []).append(i)
    for rows in by_length.values():
        for start in range(0, len(rows), batch_size):
            yield rows[start:start + batch_size]
