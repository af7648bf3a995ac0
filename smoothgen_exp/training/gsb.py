"""Training of the Gaussian Smoothness Booster (boosters.gsb; SPEC 8) around a frozen feature encoder.

The booster trains on the training split of dataset=digits_images at the encoder's input resolution, with
sigma ~ U(0, train_sigma_max) per example and one fresh noise draw per example and epoch; P first (through
the frozen encoder's gradients), then M on the features of P's output (or of the noisy input, without P).
Each trainer reports held-out metrics in its weights' metadata (and `python -m smoothgen_exp.train task=gsb`
prints them): the Gaussian robustness score S at sigma 0.25 and 0.5 (vanilla and boosted part), and, for M,
l_id on clean held-out features; and the training seconds (every resumed part's epochs).
"""

from __future__ import annotations

import json
import logging

import torch
from torch.nn import functional as F

from smoothgen_exp.boosters.gsb import Denoiser, Mapper
from smoothgen_exp.data.images import DigitImages
from smoothgen_exp.training.checkpoint import Checkpoint, epochs
from smoothgen_exp.weights import register_trainer

log = logging.getLogger(__name__)

REPORT_SIGMAS = (0.25, 0.5)


def split_images(encoder, split: str) -> torch.Tensor:
    """The digits of `split` as the encoder's conditions (its resolution and channels), float32."""
    data = DigitImages(split=split, limit=None)
    return encoder.encode_items(data.items, data.images).float()


def features(encoder, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The encoder's unit features of x, without gradients."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return torch.cat([F.normalize(encoder.generate(c, gen).float(), dim=-1) for c in x.split(batch)])


def noisy(x: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    eta = torch.randn(x.shape, generator=gen).to(x.device)
    return x + sigma.reshape(-1, *[1] * (x.dim() - 1)) * eta


def draw_sigmas(n: int, sigma_max: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * sigma_max).to(device)


def robustness_score(boosted, x: torch.Tensor, clean: torch.Tensor, sigma: float, seed: int = 1) -> float:
    """Monte Carlo S = E[(1 + cos(f'(x + eta), f(x)))/2] over x (one draw per image), against the vanilla
    clean features `clean`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sig = torch.full((len(x),), sigma, device=x.device)
        out = torch.cat([boosted(c, s) for c, s in zip(noisy(x, sig, gen).split(512), sig.split(512), strict=True)])
        return float(((1 + (F.normalize(out, dim=-1) * clean).sum(1)) / 2).mean())


@register_trainer("gsb_denoiser")
def train_denoiser(params: dict, checkpoint: str | None = None, *, encoder, stop_after: int | None = None):
    x = split_images(encoder, "train")
    device = x.device
    clean = features(encoder, x)
    gen = torch.Generator().manual_seed(params["seed"])
    torch.manual_seed(params["seed"])
    net = Denoiser(x.shape[1], params["width"], params["layers"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=params["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, params["epochs"])
    fgen = torch.Generator().manual_seed(0)
    ckpt = Checkpoint(checkpoint)
    for _, bar in epochs(params["epochs"], ckpt,
                         {"net": net, "opt": opt, "sched": sched}, {"gen": gen}, "train GSB denoiser P", stop_after):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(params["batch_size"]):
            sig = draw_sigmas(len(idx), params["train_sigma_max"], gen, device)
            denoised = net(noisy(x[idx], sig, gen), sig)
            rb = 1 - (F.normalize(encoder.generate(denoised, fgen).float(), dim=-1) * clean[idx]).sum(1).mean()
            mse = (denoised - x[idx]).pow(2).mean()
            loss = rb + params["lambda_mse"] * mse
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(l_rb=f"{rb.item():.4f}", l_mse=f"{mse.item():.4f}")
    seconds = ckpt.seconds()                                  # every resumed part's epochs
    net.eval()
    held = split_images(encoder, "heldout")
    held_clean = features(encoder, held)
    report = {f"{s:g}": {"vanilla": robustness_score(lambda c, v: encoder.generate(c, fgen), held, held_clean, s),
                         "p": robustness_score(lambda c, v: encoder.generate(net(c, v), fgen), held, held_clean, s)}
              for s in REPORT_SIGMAS}
    log.info("GSB denoiser: held-out robustness score S %s", report)
    return net.state_dict(), {"heldout_score": json.dumps(report), "train_seconds": f"{seconds:.1f}"}


@register_trainer("gsb_mapper")
def train_mapper(params: dict, checkpoint: str | None = None, *, encoder, denoiser=None,
                 stop_after: int | None = None):
    x = split_images(encoder, "train")
    device = x.device
    clean = features(encoder, x)
    gen = torch.Generator().manual_seed(params["seed"] + 1)
    torch.manual_seed(params["seed"] + 1)
    fgen = torch.Generator().manual_seed(0)

    def base(c, sig):                 # what M reads: f(P(x')) or f(x'), no gradients
        with torch.no_grad():
            return F.normalize(encoder.generate(denoiser(c, sig) if denoiser is not None else c, fgen).float(), dim=-1)

    net = Mapper(clean.shape[1], params["hidden"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=params["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, params["epochs"])
    ckpt = Checkpoint(checkpoint)
    for _, bar in epochs(params["epochs"], ckpt,
                         {"net": net, "opt": opt, "sched": sched}, {"gen": gen}, "train GSB mapper M", stop_after):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(params["batch_size"]):
            sig = draw_sigmas(len(idx), params["train_sigma_max"], gen, device)
            target = clean[idx]
            mapped = F.normalize(net(base(noisy(x[idx], sig, gen), sig), sig), dim=-1)
            rb = 1 - (mapped * target).sum(1).mean()
            stats = (mapped.mean(0) - target.mean(0)).pow(2).sum() + (mapped.std(0) - target.std(0)).pow(2).sum()
            l_id = net.residual(target, 0.0).pow(2).sum(1).mean()
            loss = rb + params["lambda_stats"] * stats + params["lambda_id"] * l_id
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(l_rb=f"{rb.item():.4f}", l_stats=f"{stats.item():.4f}", l_id=f"{l_id.item():.2e}")
    seconds = ckpt.seconds()                                  # every resumed part's epochs
    net.eval()
    held = split_images(encoder, "heldout")
    held_clean = features(encoder, held)
    with torch.no_grad():
        heldout_l_id = float(net.residual(held_clean, 0.0).pow(2).sum(1).mean())
    report = {f"{s:g}": robustness_score(lambda c, v: net(base(c, v), v), held, held_clean, s) for s in REPORT_SIGMAS}
    log.info("GSB mapper: held-out l_id %.3g, robustness score S %s", heldout_l_id, report)
    return net.state_dict(), {"heldout_l_id": f"{heldout_l_id:.6g}", "heldout_score": json.dumps(report),
                              "train_seconds": f"{seconds:.1f}"}
