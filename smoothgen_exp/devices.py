"""Device selection from config: `auto` picks CUDA, then MPS, then CPU. Nothing else is hard-coded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smoothgen_exp.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = "auto, cpu, cuda, cuda:N or mps"      # what `device` may name (config checks names without torch)


def resolve_device(spec: str = "auto") -> torch.device:
    """The device `spec` names (auto | cpu | cuda | cuda:N | mps); ConfigError, one line, for a device
    that is not one or that this machine's torch cannot use."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={spec}: not supported; use {DEVICES}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec}: this torch sees no CUDA GPU (a CPU build, or no driver); use "
                          "device=auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device={spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device={spec}: MPS is not available here; use device=auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={spec}: not supported; use {DEVICES}")
    return device


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
