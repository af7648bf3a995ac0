"""Training of `model=digits_diffusion` through diffusers' own training pieces: the DDPMScheduler's
forward noising (`add_noise`) with the epsilon objective, AdamW under `get_cosine_schedule_with_warmup`,
and an exponential moving average of the weights (`EMAModel`, whose average becomes the weights).

Data: the training split of scikit-learn's 8x8 digits, pixels scaled to [-1, 1]; each image is
conditioned on the MiniLM embedding of its digit under a random training template, plus Gaussian noise
of std `train_sigma` (noise-augmented training, as the default's cVAE), replaced by the null context
(zeros) with probability `uncond_prob` (classifier-free-guidance dropout). A checkpoint after every
epoch makes a killed training resume to the same weights. At the end the held-out quality is measured
and stored with the weights: the digit oracle's accuracy on samples for the held-out prompt templates
(never trained on), and the FID of those samples against the real held-out digits (oracle features).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.nn import functional as F

from smoothgen_exp.data.digits import N_TRAIN_TEMPLATES, SPLITS, digit_images, prompt
from smoothgen_exp.training.checkpoint import Checkpoint, epochs
from smoothgen_exp.weights import register_trainer

log = logging.getLogger(__name__)

EVAL_SEED = 12345


def train_unet(embeddings: torch.Tensor, params: dict, checkpoint: Checkpoint | None = None,
               stop_after: int | None = None):
    """The EMA weights of a UNet trained on the training digits; embeddings[t, d] is the prompt embedding
    of (training template t, digit d)."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from smoothgen_exp.models.digits_diffusion import build_unet, noise_scheduler_config

    gen = torch.Generator().manual_seed(params["seed"])
    torch.manual_seed(params["seed"])
    x_np, y_np = digit_images("train")
    x, y = torch.from_numpy(x_np) * 2 - 1, torch.from_numpy(y_np)
    n_templates, batch_size = embeddings.shape[0], params["batch_size"]
    unet = build_unet(params["channels"], params["layers_per_block"], params["attention_head_dim"],
                      embeddings.shape[-1])
    noise_scheduler = DDPMScheduler(**noise_scheduler_config(params["train_timesteps"], params["beta_schedule"]))
    total = params["epochs"] * math.ceil(len(x) / batch_size)
    opt = torch.optim.AdamW(unet.parameters(), lr=params["lr"], weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=min(200, total // 10), num_training_steps=total)
    ema = EMAModel(unet.parameters(), decay=params["ema_decay"], use_ema_warmup=True, power=0.75)
    stateful = {"unet": unet, "opt": opt, "sched": sched, "ema": ema}
    unet.train()
    for _, bar in epochs(params["epochs"], checkpoint, stateful, {"gen": gen}, "train digits diffusion", stop_after):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            rows = len(idx)
            templates = torch.randint(0, n_templates, (rows,), generator=gen)
            cond = embeddings[templates, y[idx]]
            cond = cond + params["train_sigma"] * torch.randn(cond.shape, generator=gen)
            drop = torch.rand(rows, generator=gen) < params["uncond_prob"]
            cond = torch.where(drop[:, None], torch.zeros_like(cond), cond)
            noise = torch.randn(x[idx].shape, generator=gen)
            t = torch.randint(0, params["train_timesteps"], (rows,), generator=gen)
            noisy = noise_scheduler.add_noise(x[idx], noise, t)
            loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=cond[:, None]).sample, noise)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            sched.step()
            ema.step(unet.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to(unet.parameters())
    return unet.eval()


@torch.no_grad()
def heldout_quality(pipe, encoder, oracle, steps: int, guidance_scale: float, per_prompt: int = 10) -> dict:
    """Samples for the held-out prompt templates (per_prompt per prompt, fixed seeds): the oracle's
    accuracy on them, and their FID against the real held-out digits on the oracle's features."""
    from smoothgen_exp.metrics.quality import make_fid
    from smoothgen_exp.models.digits_diffusion import IMAGE_SHAPE

    prompts = [(prompt(t, d), d) for t in SPLITS["heldout"] for d in range(10)]
    emb = encoder.encode([p for p, _ in prompts]).cpu().repeat_interleave(per_prompt, 0)
    labels = np.repeat([d for _, d in prompts], per_prompt)
    gens = [torch.Generator().manual_seed(EVAL_SEED + i) for i in range(len(emb))]
    images = pipe(prompt_embeds=emb, generator=gens, num_inference_steps=steps, guidance_scale=guidance_scale,
                  return_dict=False)[0]
    pred = oracle.net(images).argmax(1).numpy()
    fid = make_fid("oracle", oracle, IMAGE_SHAPE, None)
    fid.update(torch.from_numpy(digit_images("heldout")[0]), real=True)
    fid.update(images, real=False)
    return {"accuracy": float(np.mean(pred == labels)), "fid": float(fid.compute())}


@register_trainer("digits_diffusion")
def train_digits_diffusion(params: dict, checkpoint: str | None = None, *, encoder, oracle, sampling: dict,
                           stop_after: int | None = None):
    """`encoder` (MiniLM), `oracle` (the frozen DigitClassifier) and `sampling` (DDIM steps and guidance
    of the held-out samples) come from the model being built."""
    from smoothgen_exp.models.digits_diffusion import (
        DigitsDiffusionPipeline,
        ddim_scheduler,
        noise_scheduler_config,
    )

    emb = encoder.encode([prompt(t, d) for t in SPLITS["train"] for d in range(10)]).cpu()
    oracle.net.cpu()
    ckpt = Checkpoint(checkpoint)
    unet = train_unet(emb.reshape(N_TRAIN_TEMPLATES, 10, -1), params, ckpt, stop_after)
    seconds = ckpt.seconds()                                  # every resumed part's epochs
    pipe = DigitsDiffusionPipeline(unet=unet, scheduler=ddim_scheduler(
        noise_scheduler_config(params["train_timesteps"], params["beta_schedule"])))
    pipe.set_progress_bar_config(disable=True)
    quality = heldout_quality(pipe, encoder, oracle, sampling["steps"], sampling["guidance_scale"])
    log.info("digits diffusion: trained in %.0f s; held-out prompts: oracle accuracy %.4f, FID %.2f",
             seconds, quality["accuracy"], quality["fid"])
    return unet.state_dict(), {"heldout_prompt_accuracy": f"{quality['accuracy']:.6f}",
                               "heldout_fid": f"{quality['fid']:.6f}", "train_seconds": f"{seconds:.1f}",
                               "heldout_sampling": f"DDIM {sampling['steps']} steps, guidance {sampling['guidance_scale']}"}
