"""CLIP from local files or as a tiny random twin, loaded once per process and shared by the
`clip_vision` encoder, the zero-shot oracle and the CLIP metrics; CLIP's image preprocessing.

In transformers 5, `get_image_features` / `get_text_features` return an output object (the projected
embedding is its `pooler_output`), not a tensor; `embeds` handles both.
"""

from __future__ import annotations

import json

import torch
from torch.nn import functional as F

from smoothgen_exp.backbones.hub import from_local, resolve_dtype

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def embeds(out) -> torch.Tensor:
    """A projected CLIP embedding from a tensor or from transformers 5's output object."""
    if torch.is_tensor(out):
        return out
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if value is not None:
            return value
    raise TypeError(f"cannot read a CLIP embedding from {type(out).__name__}")


_LOADED: dict[tuple, tuple] = {}


def shared_clip(name: str, path: str | None, tiny: dict | None, dtype: str, device: str | torch.device,
                key: str = "model.path"):
    """(tokenizer, CLIPModel) in eval mode on `device`, loaded once per process for the same arguments
    (the encoder, the zero-shot oracle and the CLIP metrics share it). `dtype=auto`: float32 on CPU."""
    dtype = resolve_dtype(dtype, device)
    cache_key = (name, path, json.dumps(dict(tiny) if tiny else None, sort_keys=True, default=str), dtype,
                 str(device))
    if cache_key not in _LOADED:
        tok, model = build_clip(name, path, tiny, dtype, key)
        _LOADED[cache_key] = tok, model.to(torch.device(device)).eval().requires_grad_(False)
    return _LOADED[cache_key]


def build_clip(name: str, path: str | None, tiny: dict | None, dtype: str = "float32", key: str = "model.path"):
    """(tokenizer, CLIPModel): tiny from a config in code, or real from local files only."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    if tiny:
        from smoothgen_exp.backbones.lm import tiny_tokenizer

        tok = tiny_tokenizer()
        w, layers, heads = tiny["width"], tiny["layers"], tiny["heads"]
        cfg = CLIPConfig(
            text_config=CLIPTextConfig(vocab_size=len(tok), hidden_size=w, intermediate_size=2 * w,
                                       num_hidden_layers=layers, num_attention_heads=heads,
                                       max_position_embeddings=64, bos_token_id=2, eos_token_id=3,
                                       pad_token_id=0).to_dict(),
            vision_config=CLIPVisionConfig(image_size=tiny["image_size"], patch_size=tiny["patch_size"],
                                           hidden_size=w, intermediate_size=2 * w, num_hidden_layers=layers,
                                           num_attention_heads=heads).to_dict(),
            projection_dim=tiny.get("projection_dim", 32))
        torch.manual_seed(tiny.get("seed", 0))
        return tok, CLIPModel(cfg)
    return from_local(name, path, AutoTokenizer, CLIPModel, dtype, key=key)


def pixel_values(images: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """CLIP's input from images [B, 3, H, W] in [0, 1], as CLIPImageProcessor makes it: the shortest edge
    resized to `size` (bicubic, antialiased, as PIL does), the centre size x size crop, normalised
    (differentiable; bilinear without antialiasing scored 512x512 images on aliased pixels)."""
    x = images.clamp(0, 1).float()
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return ((x - mean) / std).to(dtype)


def image_features(model, images: torch.Tensor, size: int) -> torch.Tensor:
    """Unit CLIP embeddings of images [B, 3, H, W] in [0, 1]."""
    pixels = pixel_values(images, size, model.dtype)
    return F.normalize(embeds(model.get_image_features(pixel_values=pixels)).float(), dim=-1)


def as_rgb(image: torch.Tensor, size: int) -> torch.Tensor:
    """[C, H, W] (C = 1 or 3) in [0, 1] to [3, size, size]."""
    image = image.float()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return F.interpolate(image[None], size=(size, size), mode="nearest")[0]
