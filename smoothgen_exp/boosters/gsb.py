"""booster=gsb: the Gaussian Smoothness Booster of the feature-space smoothing papers (SPEC 8), around any
feature encoder (a model with `output_kind == "features"`: digit_encoder, tiny_clip_vision, clip_vision).

- P, a denoiser on the input: P(x', sigma) = clamp(x' + g([x', sigma]), 0, 1), g a small convolutional net
  at the encoder's input resolution (the papers fine-tune a guided diffusion model; this is its CPU-scale
  stand-in). L_P = l_rb + lambda_mse * l_mse with l_rb = 1 - cos(f(P(x + eps)), f(x)) and
  l_mse = mean (x - P(x + eps))^2.
- M, a residual smoothness mapper on the feature, conditioned on sigma: z_M = z + M(z, sigma).
  L_M = l_rb + lambda_stats * l_stats + lambda_id * l_id with l_rb = 1 - cos(z_M, f(x)); l_stats the squared
  differences of the per-dimension batch mean and standard deviation of normalize(z_M) and of f(x); and
  l_id = ||M(f(x), 0)||^2, which keeps the mapper the identity at sigma = 0.

P trains first, then M on f(P(x + eps)) (on f(x + eps) for the +M ablation, without P), the encoder frozen,
on the training split of dataset=digits_images (the evaluation items are its held-out split), with
sigma ~ U(0, train_sigma_max) per example (training.gsb). Both nets' last layers start at zero: P starts as
clamp(x'), M as the identity.

At the run's noise level sigma (`smoothing.sigma`, one constant fixed before any input is seen) the boosted
encoder is the fixed map f'(x') = normalize(z + M(z, sigma)), z = f(P(x', sigma)). The runner certifies
F(x) = E[f'(x + eta)] with FCSB (SPEC C4) exactly as it certifies the plain encoder: the booster changes the
base function, not the certificate, and raises only the Gaussian robustness score
S(x) = E[(1 + cos(f'(x + eta), f'(x)))/2].

Weights: `gsb_denoiser-<hash>` and `gsb_mapper-<hash>` under cache_dir, keyed by their training config (the
encoder's resolved config included; the mapper's also by its denoiser's, or none). They train on first use
or ahead of time: `python -m smoothgen_exp.train task=gsb model=digit_encoder`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from smoothgen_exp.config import configured
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.weights import load_or_train, params_key

log = logging.getLogger(__name__)

DATA = "digits_images-train-v1"     # the training split of dataset=digits_images (scikit-learn digits)


def plain(encoder_config) -> dict:
    """The encoder's config as a plain dict with interpolations resolved (a part of the weights' key)."""
    if OmegaConf.is_config(encoder_config):
        return OmegaConf.to_container(encoder_config, resolve=True)
    return dict(encoder_config)


def sigma_column(like: torch.Tensor, sigma) -> torch.Tensor:
    """sigma (a number or one value per row) as a [B, 1] column in like's dtype and device."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.expand(len(like)).reshape(-1, 1) if sigma.dim() == 0 else sigma.reshape(-1, 1)


class Denoiser(nn.Module):
    """P(x', sigma) = clamp(x' + g([x', sigma]), 0, 1) on images [B, C, H, W] in [0, 1]."""

    def __init__(self, channels: int, width: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(channels + 1, width, 3, padding=1), nn.GELU()]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(width, width, 3, padding=1), nn.GELU()]
        mods.append(nn.Conv2d(width, channels, 3, padding=1))
        nn.init.zeros_(mods[-1].weight)
        nn.init.zeros_(mods[-1].bias)
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = sigma_column(x, sigma)[:, :, None, None].expand(-1, 1, *x.shape[2:])
        return (x + self.net(torch.cat([x, s], 1))).clamp(0.0, 1.0)


class Mapper(nn.Module):
    """z_M = z + M(z, sigma) on features [B, d]."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def residual(self, z: torch.Tensor, sigma) -> torch.Tensor:
        return self.net(torch.cat([z, sigma_column(z, sigma)], 1))

    def forward(self, z: torch.Tensor, sigma) -> torch.Tensor:
        return z + self.residual(z, sigma)


class BoostedEncoder:
    """f'(x') = normalize(z + M(z, sigma)), z = f(P(x', sigma)) (either part may be absent). Every other
    attribute (encode_items, output_shape, ...) is the encoder's."""

    def __init__(self, encoder, denoiser: Denoiser | None, mapper: Mapper | None, sigma: float, columns: dict):
        self.encoder, self.denoiser, self.mapper, self.sigma = encoder, denoiser, mapper, float(sigma)
        self._columns = columns

    def generate(self, z: torch.Tensor, generator) -> torch.Tensor:
        x = self.denoiser(z.float(), self.sigma).to(z.dtype) if self.denoiser is not None else z
        feats = self.encoder.generate(x, generator)
        if self.mapper is not None:
            feats = F.normalize(self.mapper(feats.float(), self.sigma), dim=-1)
        return feats

    def columns(self) -> dict:
        own = self.encoder.columns() if hasattr(self.encoder, "columns") else {}
        return {**own, **self._columns}

    def __getattr__(self, name: str):
        if name == "encoder":                      # not yet set (copy, pickling): no recursion
            raise AttributeError(name)
        return getattr(self.encoder, name)


@configured
class GSB:
    enabled, name = True, "gsb"

    def __init__(self, components: str, denoiser_width: int, denoiser_layers: int, mapper_hidden: int,
                 lambda_mse: float, lambda_stats: float, lambda_id: float, denoiser_epochs: int,
                 mapper_epochs: int, denoiser_lr: float, mapper_lr: float, batch_size: int,
                 train_sigma_max: float, train_seed: int, *, cache_dir: str = "outputs/cache", device=None):
        if components not in ("none", "p", "m", "pm"):
            raise SmoothgenError(f"booster.components={components}: must be one of none, p, m, pm")
        self.components, self.cache_dir = components, cache_dir
        self.training = {"batch_size": batch_size, "train_sigma_max": train_sigma_max, "seed": train_seed}
        self.denoiser_hyper = {"width": denoiser_width, "layers": denoiser_layers, "lambda_mse": lambda_mse,
                               "epochs": denoiser_epochs, "lr": denoiser_lr}
        self.mapper_hyper = {"hidden": mapper_hidden, "lambda_stats": lambda_stats, "lambda_id": lambda_id,
                             "epochs": mapper_epochs, "lr": mapper_lr}
        self.train_sigma_max = float(train_sigma_max)

    # ------------------------------------------------------------------ the training configs (weight keys)
    def denoiser_params(self, encoder_config: dict) -> dict:
        return {"arch": "gsb-denoiser-v1", "data": DATA, "encoder": plain(encoder_config),
                **self.training, **self.denoiser_hyper}

    def mapper_params(self, encoder_config: dict, with_denoiser: bool) -> dict:
        denoiser = params_key(self.denoiser_params(encoder_config)) if with_denoiser else None
        return {"arch": "gsb-mapper-v1", "data": DATA, "encoder": plain(encoder_config), "denoiser": denoiser,
                **self.training, **self.mapper_hyper}

    # ------------------------------------------------------------------ loading (training on first use)
    def load(self, encoder, encoder_config: dict) -> tuple[Denoiser | None, Mapper | None, dict]:
        """The trained parts `components` asks for (training.gsb trains missing ones), frozen, on the
        encoder's device, and what each was: {part: weights file}, with its training metrics."""
        if getattr(encoder, "output_kind", None) != "features":
            raise SmoothgenError(f"booster=gsb: {type(encoder).__name__} does not output features; use a feature "
                                 "encoder (model=digit_encoder, tiny_clip_vision or clip_vision)")
        device = torch.device(getattr(encoder, "device", "cpu"))
        # the weights the encoder was built with, where it names them (a trained file is named by its key):
        # a booster trained around another network behind the same config is not reused
        if getattr(encoder, "weights_file", None):
            encoder_config = {**plain(encoder_config), "weights_file": Path(encoder.weights_file).name}
        denoiser = mapper = None
        info: dict = {}
        if "p" in self.components:
            state, meta = load_or_train(self.cache_dir, "gsb_denoiser", self.denoiser_params(encoder_config),
                                        encoder=encoder)
            channels = state["net.0.weight"].shape[1] - 1
            denoiser = Denoiser(channels, self.denoiser_hyper["width"], self.denoiser_hyper["layers"])
            denoiser.load_state_dict(state)
            denoiser = denoiser.to(device).eval().requires_grad_(False)
            info["denoiser"] = meta
        if "m" in self.components:
            context = {"encoder": encoder, "denoiser": denoiser} if denoiser is not None else {"encoder": encoder}
            state, meta = load_or_train(self.cache_dir, "gsb_mapper",
                                        self.mapper_params(encoder_config, denoiser is not None), **context)
            mapper = Mapper(state["net.0.weight"].shape[1] - 1, self.mapper_hyper["hidden"])
            mapper.load_state_dict(state)
            mapper = mapper.to(device).eval().requires_grad_(False)
            info["mapper"] = meta
        return denoiser, mapper, info

    def around(self, encoder, sigma: float, encoder_config: dict) -> BoostedEncoder:
        if float(sigma) > self.train_sigma_max:
            log.warning("smoothing.sigma=%g lies above the booster's training range [0, %g] "
                        "(booster.train_sigma_max)", sigma, self.train_sigma_max)
        denoiser, mapper, info = self.load(encoder, encoder_config)
        self.info = info
        files = {f"booster_{part}": meta["file"].rsplit("/", 1)[-1] for part, meta in info.items()}
        return BoostedEncoder(encoder, denoiser, mapper, sigma, {"booster_components": self.components, **files})
