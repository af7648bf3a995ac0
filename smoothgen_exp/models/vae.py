"""model=tiny_vae | sd_vae: a VAE (diffusers' AutoencoderKL, Stable Diffusion's VAE class) as a generator.

    image x in [0, 1]  --(+ noise: the smoothing space)-->  E(x') = the encoder's posterior mean
        --decoder-->  D(E(x')) in [0, 1]  (clamped)

The condition is the input image (dataset=digits_images: real held-out digits), so G(x) = D(E(x)) and the
smoothed generator is h(x) = E[D(E(x + eta))]: the tool's certificates (`output_bound`, `center`,
`distribution`), aggregators and metrics apply unchanged. The encoder's posterior mean, not a sample, is the
latent (as in image editing and in PhotoGuard), so G is deterministic and differentiable; the `generator`
argument is unused. Images enter the VAE in [-1, 1], Stable Diffusion's convention.

- `model=tiny_vae`: a small AutoencoderKL trained here on the training split of scikit-learn's 8x8 digits
  (`training.vae`, at first use or `python -m smoothgen_exp.train task=tiny_vae`), cached as safetensors
  keyed by its training config; the held-out reconstruction MSE is stored with the weights.
- `model=sd_vae`: Stable Diffusion's VAE (`stabilityai/sd-vae-ft-mse`) from local weights only
  (`from_pretrained(local_files_only=True)`), on the dataset's images resized to `image_size` with the grey
  level repeated over RGB; a missing checkpoint fails in one line.
- `model.robust=srl`: the SRL-VAE (Lee et al.): the same VAE with its encoder (and `quant_conv`) post-trained
  against L-inf attacks on the reconstruction error, the decoder frozen (`training.vae`; weights
  `srl_vae-<hash>` keyed by the VAE's own config and the `srl_*` fields). Only encoder keys are loaded, so
  the decoder stays bit-identical.
"""

from __future__ import annotations

import warnings

import torch
from torch.nn import functional as F

from smoothgen_exp.config import configured
from smoothgen_exp.weights import load_or_train

DIGIT_SIZE = 8
ENCODER_PREFIXES = ("encoder.", "quant_conv.")    # what SRL post-training changes; the decoder never


def vae_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """The encoder's posterior mean of images [B, C, H, W] in [0, 1]."""
    param = next(vae.parameters())
    return vae.encode(images.to(param.dtype) * 2 - 1).latent_dist.mean


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decoded images in [0, 1] (float32)."""
    return (vae.decode(latents).sample.float() / 2 + 0.5).clamp(0.0, 1.0)


def build_tiny_vae(channels, latent_channels: int, layers_per_block: int):
    """diffusers' AutoencoderKL on 1x8x8 images: one DownEncoderBlock2D per entry of `channels` (each but the
    last halves the resolution), a mid block with attention, as Stable Diffusion's VAE."""
    from diffusers import AutoencoderKL

    levels = len(channels)
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(channels),
                         layers_per_block=layers_per_block, latent_channels=latent_channels,
                         norm_num_groups=min(8, min(channels)), sample_size=DIGIT_SIZE)


def srl_params(fields: dict) -> dict:
    """The SRL post-training hyperparameters among a constructor's arguments (the `srl_*` names)."""
    return {k: v for k, v in sorted(fields.items()) if k.startswith("srl_")}


class VAEGenerator:
    """G(x) = D(E(x)) on images in [0, 1]; subclasses build `self.vae` and the output geometry."""

    condition_kind = "image"
    differentiable = True
    reconstructs = True          # the output lives in the condition's space (metrics=reconstruction)

    def _setup(self, vae, channels: int, size: int, device) -> None:
        self.device = torch.device(device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.channels, self.size = channels, size
        self.output_shape, self.output_range = (channels, size, size), (0.0, 1.0)
        self.robust, self.srl_file = "none", None

    def harden(self, robust: str, cache_dir: str, vae_key: dict, srl: dict) -> None:
        """robust=srl: replace the encoder by its SRL post-trained version (trained at first use)."""
        if robust != "srl":
            return
        state, meta = load_or_train(cache_dir, "srl_vae", {"vae": vae_key, **srl}, model=self)
        missing = [k for k in state if not k.startswith(ENCODER_PREFIXES)]
        assert not missing, f"SRL weights may hold encoder keys only, got {missing[:3]}"
        self.vae.load_state_dict(state, strict=False)
        self.robust, self.srl_file, self.srl_info = "srl", meta["file"], meta

    def columns(self) -> dict:
        return {"vae_encoder": self.robust}

    def to_condition(self, images: torch.Tensor) -> torch.Tensor:
        """Dataset images [B, 1, 8, 8] in [0, 1] at this VAE's resolution and channels."""
        images = images.float().to(self.device)
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return images.expand(-1, self.channels, -1, -1).clamp(0.0, 1.0).contiguous()

    def encode_items(self, items, images: dict | None = None) -> torch.Tensor:
        """The items' images [B, C, S, S] in [0, 1]."""
        return self.to_condition(torch.stack([torch.as_tensor(images[it.item_id]).float().reshape(1, 8, 8)
                                              for it in items]))

    def latents(self, z: torch.Tensor) -> torch.Tensor:
        """E(z): the posterior mean, differentiable."""
        return vae_latents(self.vae, z.reshape(-1, *self.output_shape))

    def generate(self, z: torch.Tensor, generator=None, shared: bool = False) -> torch.Tensor:
        """D(E(z)) [B, C, S, S] in [0, 1]; deterministic (`generator`, `shared` unused) and differentiable."""
        return vae_decode(self.vae, self.latents(z))


@configured
class TinyVAE(VAEGenerator):
    def __init__(self, channels, latent_channels: int, layers_per_block: int, epochs: int, batch_size: int,
                 lr: float, kl_weight: float, train_seed: int, robust: str, srl_eps: float, srl_steps: int,
                 srl_originality: float, srl_epochs: int, srl_lr: float, srl_batch_size: int, srl_seed: int, *,
                 cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.params = {"arch": "AutoencoderKL-v1", "data": "sklearn-digits-v1", "channels": list(channels),
                       "latent_channels": latent_channels, "layers_per_block": layers_per_block,
                       "epochs": epochs, "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight,
                       "seed": train_seed}
        state, meta = load_or_train(cache_dir, "tiny_vae", self.params)      # training.vae trains it
        vae = build_tiny_vae(channels, latent_channels, layers_per_block)
        vae.load_state_dict(state)
        self.heldout_mse, self.weights_file = float(meta["heldout_mse"]), meta["file"]
        self._setup(vae, 1, DIGIT_SIZE, device)
        self.harden(robust, cache_dir, self.params, srl_params(locals()))


@configured
class PretrainedVAE(VAEGenerator):
    def __init__(self, name: str, path: str | None, image_size: int, dtype: str, robust: str, srl_eps: float,
                 srl_steps: int, srl_originality: float, srl_epochs: int, srl_lr: float, srl_batch_size: int,
                 srl_seed: int, *, cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        from diffusers import AutoencoderKL

        from smoothgen_exp.backbones.hub import resolve_dtype
        from smoothgen_exp.errors import missing_weights

        dtype = resolve_dtype(dtype, device, accelerator_auto="float16")
        try:
            with warnings.catch_warnings():      # diffusers passes huggingface_hub a deprecated argument
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks", category=UserWarning)
                vae = AutoencoderKL.from_pretrained(path or name, local_files_only=True, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as err:
            raise missing_weights(name, path, err) from None
        self.weights_file = path or name
        self._setup(vae, int(vae.config.in_channels), int(image_size), device)
        key = {"name": name, "path": path, "image_size": image_size, "dtype": dtype}
        self.harden(robust, cache_dir, key, srl_params(locals()))
