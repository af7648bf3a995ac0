"""Device selection from config: `auto` picks CUDA, then MPS, then CPU. Nothing else is hard-coded."""

from __future__ import annotations

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
