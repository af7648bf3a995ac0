"""metrics=t2i: CLIP score and CLIP-feature FID of text-to-image generations, baseline and smoothed.

Per item, `samples_per_item` generations of each variant: the baseline generator at the clean prompt
embedding, and the smoothed generator's outputs (`aggregator.samples`).
- `metric_clip_score`: torchmetrics' `clip_score(images, prompts)` = max(100 * mean cos, 0), with a local
  CLIP model handed to torchmetrics as a (model, processor) callable: nothing is downloaded. The adapter
  returns tensors from `get_*_features` (transformers 5 returns output objects) and preprocesses [0, 1]
  images exactly as the zero-shot oracle does. The run value is the mean over items of each item's
  clipped score, so an item with a negative mean cosine counts as 0 (torchmetrics' `CLIPScore` over the
  whole run clips once, after averaging; with real CLIP, cosines of 0.2-0.3, the two agree).
- `metric_fid_smoothed_vs_baseline`: torchmetrics' FrechetInceptionDistance with CLIP image features,
  smoothed samples against baseline samples of the same prompts: how far smoothing moves the output
  distribution (0 = indistinguishable to CLIP). Few samples make it biased upwards; compare like with like.
- `retention_clip_score`: smoothed / baseline CLIP score (NaN when the baseline score is 0, as with
  random tiny models whose cosines are clipped at 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smoothgen_exp.backbones.clip import embeds, image_features, pixel_values, shared_clip
from smoothgen_exp.config import configured
from smoothgen_exp.metrics.quality import fid_score


class CLIPForTorchmetrics(nn.Module):
    """Our CLIP in the shape torchmetrics' clip_score expects: `get_image_features` / `get_text_features`
    returning tensors, plus a processor (`__call__(images=... | text=...)`)."""

    def __init__(self, model, tokenizer, image_size: int):
        super().__init__()
        self.model, self.tokenizer, self.image_size = model, tokenizer, image_size
        self.config = model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return embeds(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return embeds(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def process(self, images=None, text=None, **kwargs) -> dict:
        """The processor: [0, 1] images get the zero-shot oracle's preprocessing (`clip.pixel_values`)."""
        if text is not None:
            return self.tokenizer(text, return_tensors="pt", padding=True, truncation=True)
        return {"pixel_values": pixel_values(torch.stack(list(images)), self.image_size, self.model.dtype)}

    def pair(self):
        return self, self.process


class CLIPImageFeatures(nn.Module):
    """CLIP image features as an FID feature extractor (float64, as torchmetrics' FID accumulates)."""

    def __init__(self, model, image_size: int):
        super().__init__()
        self.model, self.image_size = model, image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:          # torchmetrics probes the extractor with uint8 images
            images = images.float() / 255.0
        return image_features(self.model, images, self.image_size).double()


@configured
class T2IQuality:
    enabled = True
    requires = {"model": "tensor outputs (images or features)"}

    def __init__(self, samples_per_item: int, name: str,
                 path: str | None, tiny: dict | None, image_size: int, dtype: str):
        self.k, self.clip_args = int(samples_per_item), (name, path, tiny, dtype)
        self.image_size = int(tiny["image_size"] if tiny else image_size)

    def setup(self, oracle, dataset, model, reference: bool = True) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        device = model.device
        tok, clip = shared_clip(*self.clip_args, device, key="metrics.path")
        self.scorer = CLIPForTorchmetrics(clip, tok, self.image_size)
        self.fid = FrechetInceptionDistance(feature=CLIPImageFeatures(clip, self.image_size),
                                            input_img_size=tuple(model.output_shape)).to(device)

    @torch.inference_mode()
    def item(self, ctx, aggregator, aggregated: dict) -> dict[str, dict]:
        from torchmetrics.functional.multimodal import clip_score

        baseline = ctx.model.generate(ctx.x.expand(self.k, *ctx.x.shape), ctx.generator("quality/baseline"))
        smoothed = aggregator.samples(ctx, self.k, aggregated).to(baseline.device)
        self.fid.update(baseline, real=True)
        self.fid.update(smoothed, real=False)
        prompts = [str(ctx.item.condition)] * self.k
        return {variant: {"metric_clip_score": float(clip_score(list(samples), prompts, self.scorer.pair)),
                          "metric_samples": len(samples)}
                for variant, samples in (("baseline", baseline), ("smoothed", smoothed))}

    def summary(self, records) -> dict[str, float]:
        result = {f"metric_clip_score_{v}": float(records[records.variant == v].metric_clip_score.astype(float).mean())
                  for v in ("baseline", "smoothed")}
        base = result["metric_clip_score_baseline"]      # 0 when clipped at 0: retention is undefined
        result["retention_clip_score"] = result["metric_clip_score_smoothed"] / base if base > 0 else math.nan
        result["metric_fid_smoothed_vs_baseline"] = fid_score(self.fid, "metric_fid_smoothed_vs_baseline")
        result["metric_fid_features"] = "clip"                  # a Frechet distance on CLIP image features
        return result
