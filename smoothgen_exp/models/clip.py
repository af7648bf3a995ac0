"""CLIP as a smoothed image-feature encoder (`model=clip_vision`); the zero-shot oracle is oracles.clip.

The encoder's "generation" is the unit-normalised CLIP image embedding of the (noisy) image, so the
smoothed encoder is F(x) = E[f(x + eta)] and `certifier=feature` gives its FCSB cosine certificate;
the `feature` attack objective works against it. Noise is on the image pixels in [0, 1] before CLIP's
normalisation. `oracle=clip_zero_shot` classifies images or CLIP image features by cosine to the text
embeddings of "a photo of the digit {class}"-style prompts, from the same CLIP model.

    model=clip_vision        openai/clip-vit-base-patch32 from local weights (HF_HOME or model.path)
    model=tiny_clip_vision   transformers' CLIPModel from a small config, random weights, in-memory tokenizer
"""

from __future__ import annotations

import torch

from smoothgen_exp.backbones.clip import as_rgb, image_features, shared_clip
from smoothgen_exp.config import configured


@configured
class CLIPVisionEncoder:
    condition_kind = "image"
    output_kind = "features"
    # outputs are unit vectors: the ball ||y|| <= 1 (radius 1, diameter 2) is far tighter than the box
    # [-1, 1]^dim (radius sqrt(dim)); certifiers.output_bound.output_ball uses the tighter of the two
    output_norm = 1.0

    def __init__(self, name: str, path: str | None, tiny: dict | None,
                 image_size: int, dtype: str, *, cache_dir: str = "outputs/cache",
                 device: str | torch.device = "cpu"):
        _, self.model = shared_clip(name, path, tiny, dtype, device)
        self.device = torch.device(device)
        self.image_size = int(tiny["image_size"] if tiny else image_size)
        dim = self.model.config.projection_dim
        self.output_shape, self.output_range = (dim,), (-1.0, 1.0)

    def encode_items(self, items, images: dict | None = None) -> torch.Tensor:
        """Item images [B, 3, S, S] in [0, 1] at the encoder's resolution."""
        from smoothgen_exp.models.vlm import load_image

        out = []
        for it in items:
            img = (images or {}).get(it.item_id)
            out.append(as_rgb(img, self.image_size) if torch.is_tensor(img) else load_image(img, self.image_size))
        return torch.stack(out).to(self.device)

    def generate(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Differentiable (white-box attacks take gradients through it); callers pick inference mode."""
        return image_features(self.model, z, self.image_size)
