"""`oracle=clip_zero_shot`: classes of images (or CLIP image features) by cosine to the CLIP text
embeddings of "a photo of the digit {class}"-style prompts, from the shared CLIP (backbones.clip)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from smoothgen_exp.backbones.clip import embeds, image_features, shared_clip
from smoothgen_exp.config import configured
from smoothgen_exp.oracles.base import ClassEquivalence


@configured
class CLIPZeroShot(ClassEquivalence):
    """Zero-shot classes by cosine to CLIP text embeddings of `template.format(class)`."""

    reads = ("image", "features")      # images, or CLIP image features (model=clip_vision)

    @staticmethod
    def class_names(conf) -> list[str]:
        return list(conf.classes)

    def __init__(self, classes: list[str], template: str, name: str,
                 path: str | None, tiny: dict | None, image_size: int, dtype: str,
                 *, cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        tok, self.model = shared_clip(name, path, tiny, dtype, device, key="oracle.path")
        self.image_size = int(tiny["image_size"] if tiny else image_size)
        self.classes, self.num_classes = list(classes), len(classes)
        prompts = [template.format(c) for c in self.classes]
        batch = tok(prompts, return_tensors="pt", padding=True).to(torch.device(device))
        with torch.no_grad():
            text = embeds(self.model.get_text_features(**batch)).float()
        self.text = F.normalize(text, dim=-1)

    def features(self, outputs: torch.Tensor) -> torch.Tensor:
        """Unit CLIP features: images are embedded, feature vectors pass through."""
        if outputs.dim() == 2:
            return F.normalize(outputs.float(), dim=-1)
        return image_features(self.model, outputs, self.image_size)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return 100.0 * self.features(outputs) @ self.text.T

    def classify(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.logits(outputs).argmax(-1)
