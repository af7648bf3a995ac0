"""Training of `model=tiny_vae` and the SRL-VAE post-training of any VAE generator (models.vae).

tiny_vae: diffusers' AutoencoderKL on the training split of scikit-learn's 8x8 digits, reconstruction MSE of
a posterior sample plus `kl_weight` times the KL term (Stable Diffusion's VAE objective without its
perceptual and adversarial terms), Adam under cosine decay. Stored with the weights: the held-out
reconstruction MSE through the posterior mean.

srl_vae (SRL-VAE, Lee, Kim, Jang, Jeong, Hwang): post-training of the encoder (and `quant_conv`) only, the
decoder frozen. Per batch, an inner L-inf PGD (random start in the eps-cube, `srl_steps` sign steps of
2.5 eps / steps, the image kept in [0, 1]) finds delta that maximises ||D(E'(x + delta)) - x||^2 for the
current encoder E'; the outer step minimises

    ||D(E'(x + delta)) - x||^2 + srl_originality * ||E'(x) - E(x)||^2

(means over pixels and latent entries; E is the original encoder, whose clean latents the "originality"
term keeps). Stored with the weights: held-out clean MSE and the MSE under the inner attack, before and
after, and the seconds it took.
"""

from __future__ import annotations

import copy
import json
import logging

import torch
from torch.nn import functional as F

from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.models.vae import ENCODER_PREFIXES, build_tiny_vae, vae_decode, vae_latents
from smoothgen_exp.training.checkpoint import Checkpoint, epochs
from smoothgen_exp.weights import register_trainer

log = logging.getLogger(__name__)


def reconstruction_mse(vae, inputs: torch.Tensor, target: torch.Tensor | None = None) -> float:
    """Mean squared error of D(E(inputs)) against `target` (default: the inputs themselves)."""
    target = inputs if target is None else target
    with torch.no_grad():
        return float(torch.cat([(vae_decode(vae, vae_latents(vae, c)) - t).pow(2).flatten(1).mean(1)
                                for c, t in zip(inputs.split(256), target.split(256), strict=True)]).mean())


@register_trainer("tiny_vae")
def train_tiny_vae(params: dict, checkpoint: str | None = None, *, stop_after: int | None = None):
    gen = torch.Generator().manual_seed(params["seed"])
    torch.manual_seed(params["seed"])
    x = torch.from_numpy(digit_images("train")[0]).float()
    vae = build_tiny_vae(params["channels"], params["latent_channels"], params["layers_per_block"])
    opt = torch.optim.Adam(vae.parameters(), lr=params["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, params["epochs"])
    for _, bar in epochs(params["epochs"], Checkpoint(checkpoint),
                         {"vae": vae, "opt": opt, "sched": sched}, {"gen": gen}, "train tiny VAE", stop_after):
        for idx in torch.randperm(len(x), generator=gen).split(params["batch_size"]):
            posterior = vae.encode(x[idx] * 2 - 1).latent_dist
            recon = vae.decode(posterior.sample(generator=gen)).sample / 2 + 0.5
            mse = F.mse_loss(recon, x[idx])
            loss = mse + params["kl_weight"] * posterior.kl().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(mse=f"{mse.item():.5f}")
    vae.eval()
    held = reconstruction_mse(vae, torch.from_numpy(digit_images("heldout")[0]).float())
    log.info("tiny VAE: held-out reconstruction MSE %.5f", held)
    return vae.state_dict(), {"heldout_mse": f"{held:.6g}"}


def reconstruction_attack(vae, x: torch.Tensor, eps: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """L-inf PGD (random start, sign steps of 2.5 eps / steps) maximising ||D(E(x + delta)) - x||^2, the image
    kept in [0, 1]; returns x + delta, detached. The VAE's own parameters get no gradient."""
    delta = (torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1) * eps
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        loss = (vae_decode(vae, vae_latents(vae, (x + delta).clamp(0, 1))) - x).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def attacked_mse(vae, x: torch.Tensor, eps: float, steps: int, seed: int = 1) -> float:
    gen = torch.Generator().manual_seed(seed)
    return reconstruction_mse(vae, torch.cat([reconstruction_attack(vae, c, eps, steps, gen) for c in x.split(256)]), x)


@register_trainer("srl_vae")
def train_srl_vae(params: dict, checkpoint: str | None = None, *, model, stop_after: int | None = None):
    from smoothgen_exp.data.images import DigitImages

    ckpt = Checkpoint(checkpoint)
    gen = torch.Generator().manual_seed(params["srl_seed"])
    torch.manual_seed(params["srl_seed"])
    splits = {s: DigitImages(split=s, limit=None) for s in ("train", "heldout")}
    x, held = (model.encode_items(d.items, d.images) for d in splits.values())
    dtype = next(model.vae.parameters()).dtype                 # float16 for sd_vae on an accelerator
    original = copy.deepcopy(model.vae).float()                # frozen: E(x) for the originality term
    vae = copy.deepcopy(original)                              # trained in float32, stored in `dtype`
    trained = [p for n, p in vae.named_parameters() if n.startswith(ENCODER_PREFIXES)]
    for p in trained:
        p.requires_grad_(True)
    eps, steps, weight = params["srl_eps"], params["srl_steps"], params["srl_originality"]
    opt = torch.optim.Adam(trained, lr=params["srl_lr"])
    for _, bar in epochs(params["srl_epochs"], ckpt,
                         {"vae": vae, "opt": opt}, {"gen": gen}, "SRL-VAE post-training", stop_after):
        for idx in torch.randperm(len(x), generator=gen).split(params["srl_batch_size"]):
            clean = x[idx]
            adv = reconstruction_attack(vae, clean, eps, steps, gen)
            with torch.no_grad():
                anchor = vae_latents(original, clean)
            robust = (vae_decode(vae, vae_latents(vae, adv)) - clean).pow(2).mean()
            originality = (vae_latents(vae, clean) - anchor).pow(2).mean()
            loss = robust + weight * originality
            opt.zero_grad()
            loss.backward()
            opt.step()
        bar.set_postfix(robust=f"{robust.item():.5f}", originality=f"{originality.item():.2e}")
    seconds = ckpt.seconds()                                  # every resumed part's epochs
    vae.requires_grad_(False)
    report = {"clean_mse": {"original": reconstruction_mse(original, held), "srl": reconstruction_mse(vae, held)},
              "attacked_mse": {"original": attacked_mse(original, held, eps, steps),
                               "srl": attacked_mse(vae, held, eps, steps)},
              "train_seconds": seconds}
    log.info("SRL-VAE: held-out %s", report)
    state = {k: v.to(dtype) for k, v in vae.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    return state, {"heldout": json.dumps(report)}
