"""metrics=reconstruction: a generator that reconstructs its input (a VAE: model=tiny_vae) against that input.

Per item and variant (the baseline's D(E(x)); the smoothed mean of `aggregator.n` reconstructions of noisy
copies): `metric_recon_mse` against the input x, `metric_recon_psnr` = 10 log10(1 / mse) (pixels in [0, 1]),
and `metric_recon_agree`, whether the oracle's class of the reconstruction equals its class of the input.
Over the run: the means of those, and the FID of the reconstructions against the real held-out digits
through the digit oracle's features (metrics.quality.make_fid). Under an attack, the same FID for the
attacked outputs of each variant (`metric_fid_attacked_<variant>`), from the outputs the attack judged.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.errors import ConfigError
from smoothgen_exp.metrics.quality import fid_score, make_fid, warn_unbalanced_classes

VARIANTS = ("baseline", "smoothed")


def reconstruction_columns(oracle, out: torch.Tensor, x: torch.Tensor, prefix: str) -> dict:
    """An output against the input x it reconstructs: `<prefix>_mse`, `<prefix>_psnr` (pixels in [0, 1]) and
    `<prefix>_agree` (the oracle's class of the output equals its class of x)."""
    out = out.reshape(x.shape).to(x.device, x.dtype)
    mse = float((out.float() - x.float()).pow(2).mean())
    classes = oracle.classify(torch.stack([out, x]))
    return {f"{prefix}_mse": mse, f"{prefix}_psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
            f"{prefix}_agree": bool(classes[0] == classes[1])}


@configured
class ReconstructionQuality:
    enabled = True
    requires = {"model": "tensor outputs (images or features)"}

    def setup(self, oracle, dataset, model, reference: bool = True) -> None:
        """reference=False on ranks other than 0 (torchmetrics sums the ranks' states; see DigitQuality)."""
        from smoothgen_exp.data.digits import digit_images

        if not getattr(model, "reconstructs", False):
            raise ConfigError("metrics=reconstruction: the model does not reconstruct its input (a VAE: "
                              "model=tiny_vae); use metrics=digits or none")
        self.oracle, self.shape = oracle, tuple(model.output_shape)
        self.real = torch.from_numpy(digit_images("heldout")[0]).float() if reference else None
        self.fid = {v: self._fid() for v in VARIANTS}

    def _fid(self, sync_on_compute: bool = True):
        fid = make_fid("oracle", self.oracle, self.shape, None, sync_on_compute)
        if self.real is not None:
            fid.update(self.real, real=True)
        return fid

    @torch.inference_mode()
    def item(self, ctx, aggregator, aggregated: dict) -> dict[str, dict]:
        outputs = {"baseline": ctx.model.generate(ctx.x[None], ctx.generator("quality/baseline"))[0],
                   "smoothed": aggregator.samples(ctx, 1, aggregated)[0].to(ctx.device)}
        out = {}
        for variant, image in outputs.items():
            self.fid[variant].update(image[None].float().cpu().clamp(0, 1), real=False)
            out[variant] = reconstruction_columns(self.oracle, image, ctx.x, "metric_recon")
        return out

    def summary(self, records) -> dict[str, float]:
        result = {"metric_fid_features": "oracle"}              # a Frechet distance on whose features
        for variant in VARIANTS:
            rows = records[records.variant == variant]
            result[f"metric_fid_{variant}"] = fid_score(self.fid[variant], f"metric_fid_{variant}")
            for col in ("metric_recon_mse", "metric_recon_psnr", "metric_recon_agree"):
                result[f"{col}_{variant}"] = float(rows[col].astype(float).mean())
        warn_unbalanced_classes(records, "metric_fid_*")
        return result

    def attacked_summary(self, attacked: dict[str, list]) -> dict[str, float]:
        """FID of each variant's attacked outputs against the real held-out digits (rank 0 only)."""
        result = {}
        for variant, pairs in attacked.items():
            images = [a for _, a in pairs if torch.is_tensor(a)]
            if len(images) < 2 or self.real is None:
                continue
            fid = self._fid(sync_on_compute=False)   # the attacked outputs are gathered on rank 0 already
            fid.update(torch.stack(images).reshape(-1, *self.shape).float().clamp(0, 1), real=False)
            result[f"metric_fid_attacked_{variant}"] = fid_score(fid, f"metric_fid_attacked_{variant}")
        return result
