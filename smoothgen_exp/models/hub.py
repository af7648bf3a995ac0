"""Real weights from local files only (HF_HOME's cache or a path): never a download."""

from __future__ import annotations

import torch

from smoothgen_exp.errors import missing_weights


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
