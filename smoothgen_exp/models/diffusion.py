"""Text-to-image diffusion (Stable Diffusion): noise on the text encoder's prompt embeddings (SmoothGen 2.5.1).

    prompt --CLIP text encoder--> e in R^{77 x d} (last hidden state; the noised space)
    (e + eta, latent from a per-sample seed) --UNet + scheduler--> latent --VAE--> image [3, H, W] in [0, 1]

`encode` returns the prompt embeddings in float32 (the certificate's geometry is that of this float32
space; the pipeline casts to its own dtype). `generate(z, generator)` runs diffusers'
StableDiffusionPipeline with `prompt_embeds=z` and one fixed seed per sample: each sample's seed is
drawn from the stream's generator and seeds a CPU generator for its initial latent, so a sample's
latent does not depend on the batch it lands in or on the device. Classifier-free guidance uses the
*clean* embedding of `negative_prompt`: it is part of the generator, not of the condition. The
scheduler is deterministic given the latent (DDIM with eta = 0 by default), so the generator's only
randomness is the seed, independent of the noise, as the certificates require.

    model=sd15     stable-diffusion-v1-5 from local weights (HF_HOME or model.path), never a download
    model=tiny_sd  the same classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, DDIMScheduler,
                   StableDiffusionPipeline) from small configs in code, random weights, and a CLIP
                   byte-level BPE tokenizer built in memory: CI runs the real pipeline code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from smoothgen_exp.backbones.hub import resolve_dtype
from smoothgen_exp.config import configured
from smoothgen_exp.errors import missing_weights
from smoothgen_exp.seeding import row_seeds


class _TorchvisionNotice(logging.Filter):
    """diffusers imports CLIP image processors, and transformers then notes at WARNING level that it falls
    back to PIL without torchvision. The project never installs torchvision (it pulls CUDA wheels) and
    does its own [0, 1] preprocessing, so the notice is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_TorchvisionNotice())

SCHEDULERS = {"ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "euler": "EulerDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler"}


def tiny_clip_tokenizer(max_length: int = 77):
    """CLIP's tokenizer class with a byte-level vocabulary (every byte, alone or word-final) and no merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[], model_max_length=max_length)


def tiny_pipeline(tiny: dict):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_clip_tokenizer()
    width, size, channels = tiny["width"], tiny["image_size"], tuple(tiny.get("channels", (32, 64)))
    torch.manual_seed(tiny.get("seed", 0))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=tiny["layers"],
        num_attention_heads=tiny["heads"], max_position_embeddings=tok.model_max_length,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=channels,
                        down_block_types=("DownEncoderBlock2D",) * len(channels),
                        up_block_types=("UpDecoderBlock2D",) * len(channels), layers_per_block=1,
                        norm_num_groups=channels[0], sample_size=size)
    latent_size = size // 2 ** (len(channels) - 1)
    unet = UNet2DConditionModel(sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=channels, norm_num_groups=channels[0],
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=width, attention_head_dim=tiny.get("attention_head_dim", 8))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def load_pipeline(name: str, path: str | None, dtype: str, device_map: str | None, safety_checker: bool):
    from diffusers import StableDiffusionPipeline

    kwargs = {} if safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        return StableDiffusionPipeline.from_pretrained(path or name, local_files_only=True,
                                                       dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError) as err:
        raise missing_weights(name, path, err) from None


@configured
class StableDiffusion:
    condition_kind = "text"
    differentiable = False    # no gradients through sampling: black-box attacks only
    output_range = (0.0, 1.0)

    def __init__(self, name: str, path: str | None,
                 tiny: dict | None, height: int, width: int, steps: int,
                 guidance_scale: float, negative_prompt: str, scheduler: str,
                 dtype: str, device_map: str | None, safety_checker: bool, *,
                 cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        if tiny:
            self.pipe = tiny_pipeline(tiny)
        else:
            # auto: float16 on an accelerator (SD's usual inference dtype), float32 on CPU
            dtype = resolve_dtype(dtype, device, device_map, accelerator_auto="float16")
            self.pipe = load_pipeline(name, path, dtype, device_map, safety_checker)
        if scheduler != "default":
            import diffusers

            self.pipe.scheduler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(self.pipe.scheduler.config)
        self.device = torch.device(device)
        if not device_map:
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        for part in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder):
            part.eval().requires_grad_(False)
        self.height, self.width, self.steps, self.guidance_scale = int(height), int(width), int(steps), float(guidance_scale)
        self.output_shape = (3, self.height, self.width)
        self.negative = self.encode([negative_prompt]) if self.guidance_scale > 1 else None

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompt embeddings [B, 77, d] in float32: the text encoder's last hidden state (SD 1.x)."""
        tok = self.pipe.tokenizer
        ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(self.pipe.text_encoder.device)
        return self.pipe.text_encoder(ids)[0].float().to(self.device)

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, generator, shared: bool = False) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] (float32) for prompt embeddings z [B, 77, d].

        shared=True gives every row the same seed: the deterministic generator u -> G(z, u) at one u.
        """
        seeds = row_seeds(generator, len(z), shared).tolist()        # a torch Generator or per-row seeds
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        dtype = self.pipe.unet.dtype
        negative = None if self.negative is None else self.negative.expand(len(z), -1, -1).to(dtype)
        images = self.pipe(prompt_embeds=z.to(dtype), negative_prompt_embeds=negative, generator=gens,
                           num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                           height=self.height, width=self.width, output_type="pt", return_dict=False)[0]
        return images.float().to(self.device)
