"""model=digit_encoder: the default digit oracle's CNN as a feature encoder, offline on real digits.

The "generation" of an 8x8 digit image in [0, 1] (noise on its pixels) is its unit-normalised 128-d
penultimate feature f(x) = normalize(DigitCNN.features(x)) (`oracles.digits`: trained at first use and
cached; the same network as `oracle=digit_classifier` with its default config). With `certifier=feature`
the smoothed encoder F(x) = E[f(x + eta)] gets the FCSB cosine certificate (SPEC C4); `booster=gsb` puts
the Gaussian Smoothness Booster around it; `oracle=digit_probe` reads its features with a linear probe
trained on its clean features (the frozen downstream model). The offline twin of `clip_vision`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from smoothgen_exp.config import configured
from smoothgen_exp.oracles.digits import DigitClassifier

IMAGE_SHAPE = (1, 8, 8)


@configured
class DigitEncoder:
    condition_kind = "image"
    output_kind = "features"
    differentiable = True
    output_norm = 1.0              # unit features: the ball ||y|| <= 1 (certifiers.output_bound)

    def __init__(self, *, cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        cnn = DigitClassifier(cache_dir=cache_dir, device=self.device)
        self.net, self.weights_file = cnn.net, cnn.weights_file
        self.output_shape, self.output_range = (self.net.feature_dim,), (-1.0, 1.0)

    def encode_items(self, items, images: dict | None = None) -> torch.Tensor:
        """The items' images [B, 1, 8, 8] in [0, 1]."""
        return torch.stack([torch.as_tensor(images[it.item_id]).float().reshape(IMAGE_SHAPE)
                            for it in items]).to(self.device)

    def generate(self, z: torch.Tensor, generator) -> torch.Tensor:
        """Unit features [B, 128]; deterministic (`generator` unused) and differentiable."""
        return F.normalize(self.net.features(z.reshape(-1, *IMAGE_SHAPE).float()), dim=-1)
