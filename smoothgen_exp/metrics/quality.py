"""metrics=digits: quality of baseline and smoothed generations, and how much smoothing keeps.

Per item, `samples_per_item` generations are taken from each variant: the baseline generator at the
clean condition, and the smoothed generator's outputs (`aggregator.samples`). Over the run:
- FID between real held-out digits and each variant's samples, through torchmetrics'
  FrechetInceptionDistance with a configurable feature extractor: the digit oracle's penultimate
  features (default), or Inception / CLIP image features from local weights (`fid_weights`). The
  torch-fidelity download path is never used.
- `digit_prob`: the oracle's probability of the requested digit, averaged over samples. It is the
  digits analogue of a CLIP score (prompt-image agreement), named for what it is.
- retention: smoothed quality / baseline quality per metric (baseline / smoothed for FID, where lower
  is better); the SmoothGen proposal targets 80-90%.
- `noisy`: the same metrics on `samples_per_item` unfiltered noisy generations G(x + eta) (smoothed rows:
  `metric_digit_prob_noisy`; summary: `metric_fid_noisy`, `retention_*_noisy`). Under aggregator=majority
  the smoothed outputs are generations of the class the oracle voted for, judged by that same oracle: their
  digit probability and oracle-feature FID are conditional on that filter (0.95 retention at sigma 0.3
  where one noisy generation keeps 0.42 of the baseline's digit probability, by review). The noisy
  metrics carry no such selection: what the noise costs a generation, whatever the aggregator.
"""

from __future__ import annotations

import logging
import math
import os

import torch
from torch import nn
from torch.nn import functional as F

from smoothgen_exp.config import configured
from smoothgen_exp.errors import WeightsNotFound

log = logging.getLogger(__name__)


class OracleFeatures(nn.Module):
    """The oracle's penultimate features as an FID feature extractor."""

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:          # torchmetrics probes the extractor with uint8 images
            images = images.float() / 255.0
        return self.oracle.features(images.float()).double()


def make_fid(features: str, oracle, image_shape: tuple, weights: str | None, sync_on_compute: bool = True):
    """torchmetrics' FID with these features. sync_on_compute=False for a set one process holds whole (only
    the constructor sets it: assigning the attribute later does not stop compute() from syncing)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if features == "oracle":
        return FrechetInceptionDistance(feature=OracleFeatures(oracle), input_img_size=tuple(image_shape),
                                        reset_real_features=False, sync_on_compute=sync_on_compute)
    if not weights:
        raise WeightsNotFound(f"metrics.fid_features={features}: set metrics.fid_weights=<local weights file>; "
                              "nothing is downloaded")
    if features == "inception":
        return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights, normalize=True,
                                        reset_real_features=False, sync_on_compute=sync_on_compute)
    raise WeightsNotFound(f"metrics.fid_features={features}: use oracle or inception (CLIP features come with "
                          "the CLIP models of issue 6)")


def fid_score(fid, name: str) -> float:
    """fid.compute(), with a warning where the generated set (over all processes that compute() syncs) is
    no larger than the feature dimension: its covariance is then singular and the score mostly
    small-sample bias (FID falls as the set grows, for the same generator), comparable only with runs of
    the same size (rank 0 says so). Collective where compute() is, and syncs the states once: the count and the score are
    read inside one sync (torchmetrics' compute unwrapped, as its own wrapper would sync a second time).
    NaN, with a warning, from fewer than 2 samples (torchmetrics raises: a one-item run would stop there).
    A rank with no items computes the synced score too (its compute() needed what only update() sets: more
    processes than items crashed)."""
    if "orig_dtype" not in fid.__dict__:        # a rank that generated nothing never called update(), which
        fid.orig_dtype = torch.float64          # sets it (the score's dtype; only rank 0's score is reported)
    with fid.sync_context(dist_sync_fn=fid.dist_sync_fn, should_sync=fid.sync_on_compute):
        n, dim = int(fid.fake_features_num_samples), fid.fake_features_sum.numel()
        real = int(fid.real_features_num_samples)
        value = float(fid.compute.__wrapped__()) if n >= 2 else math.nan
    if os.environ.get("RANK", "0") != "0":      # every rank computes the same synced set: rank 0 says so
        return value
    if 2 <= real <= dim:                        # Inception's 2048 features over the 360 held-out digits (review)
        log.warning("%s against %d real samples, no more than its %d feature dimensions: the real covariance is "
                    "singular", name, real, dim)
    if n < 2:                                   # one generated sample has no covariance
        log.warning("%s is NaN: FID needs at least 2 generated samples, and this run made %d", name, n)
    elif n <= dim:
        log.warning("%s from %d generated samples, no more than its %d feature dimensions: mostly "
                    "small-sample bias; compare only runs of the same size", name, n, dim)
    return value


def warn_unbalanced_classes(records, name: str) -> None:
    """FID against the real held-out digits (the ten classes about equally) measures the evaluated items'
    class mix as much as their quality: a warning where their labels are not balanced over the ten digits
    (`dataset.limit` not a multiple of 10, `eval_items=baseline_correct`). Real digits 0-3 alone score FID
    191 against all held-out digits, a random 100 of them 10 (review)."""
    if "label" not in records:
        return
    counts = records.loc[records.variant == "smoothed", "label"].value_counts()
    if os.environ.get("RANK", "0") == "0" and len(counts) and (len(counts) < 10 or counts.max() > counts.min()):
        log.warning("%s: the items' digits are not balanced (%s) while the real set holds all ten about equally: the "
                    "score measures that mix as much as quality; compare only runs over the same items", name,
                    ", ".join(f"{int(k)}: {int(v)}" for k, v in sorted(counts.items())))


@configured
class DigitQuality:
    enabled = True
    requires = {"model": "tensor outputs (images or features)", "oracle": "output features"}

    def __init__(self, samples_per_item: int, fid_features: str, fid_weights: str | None):
        self.k, self.fid_features, self.fid_weights = int(samples_per_item), fid_features, fid_weights
        self.fid = None

    def setup(self, oracle, dataset, model, reference: bool = True) -> None:
        """reference=False on ranks other than 0: torchmetrics sums the states of all ranks on compute,
        so the real reference set must enter exactly once."""
        from smoothgen_exp.data.digits import digit_images

        self.oracle = oracle
        self.fid = {v: make_fid(self.fid_features, oracle, model.output_shape, self.fid_weights)
                    for v in ("baseline", "smoothed", "noisy")}
        if reference:
            real = torch.from_numpy(digit_images("heldout")[0])
            for fid in self.fid.values():
                fid.update(self._prepare(real), real=True)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().clamp(0, 1)
        return images.repeat(1, 3, 1, 1) if self.fid_features == "inception" else images

    @torch.inference_mode()
    def item(self, ctx, aggregator, aggregated: dict) -> dict[str, dict]:
        """Per-variant metric columns of one item; accumulates the set-level statistics."""
        gen = ctx.generator("quality/baseline")
        baseline = ctx.model.generate(ctx.x.expand(self.k, *ctx.x.shape), gen).cpu()
        smoothed = aggregator.samples(ctx, self.k, aggregated).cpu()
        noisy = torch.cat(list(ctx.outputs(self.k, "quality/noisy"))).cpu()       # unfiltered G(x + eta)
        probs = {}
        for variant, samples in (("baseline", baseline), ("smoothed", smoothed), ("noisy", noisy)):
            self.fid[variant].update(self._prepare(samples), real=False)
            probs[variant] = F.softmax(self.oracle.logits(samples.to(ctx.device)), -1)[:, ctx.item.label]
        return {"baseline": {"metric_digit_prob": float(probs["baseline"].mean()), "metric_samples": len(baseline)},
                "smoothed": {"metric_digit_prob": float(probs["smoothed"].mean()), "metric_samples": len(smoothed),
                             "metric_digit_prob_noisy": float(probs["noisy"].mean())}}

    def summary(self, records) -> dict[str, float]:
        result = {"metric_fid_features": self.fid_features}    # a Frechet distance on whose features
        for variant in ("baseline", "smoothed", "noisy"):
            result[f"metric_fid_{variant}"] = fid_score(self.fid[variant], f"metric_fid_{variant}")
        warn_unbalanced_classes(records, "metric_fid_*")
        smoothed = records[records.variant == "smoothed"]
        for variant, rows, col in (("baseline", records[records.variant == "baseline"], "metric_digit_prob"),
                                   ("smoothed", smoothed, "metric_digit_prob"),
                                   ("noisy", smoothed, "metric_digit_prob_noisy")):
            result[f"metric_digit_prob_{variant}"] = float(rows[col].astype(float).mean()) if col in rows else float("nan")
        for variant, suffix in (("smoothed", ""), ("noisy", "_noisy")):
            result[f"retention_fid{suffix}"] = result["metric_fid_baseline"] / max(result[f"metric_fid_{variant}"], 1e-12)
            result[f"retention_digit_prob{suffix}"] = (result[f"metric_digit_prob_{variant}"]
                                                       / max(result["metric_digit_prob_baseline"], 1e-12))
        return result


@configured
class NoMetrics:
    enabled = False
