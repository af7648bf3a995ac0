"""The digit oracle: a small CNN that maps an 8x8 image in [0, 1] to one of 10 digit classes.

Trained at first use on the training part of scikit-learn's digits (random one-pixel shifts; half of
every batch with Gaussian pixel noise of std `train_noise`, so the same network also serves as a
noise-robust base classifier in pixel space) and checked on the held-out part: training fails if the
held-out accuracy is below `min_accuracy`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import trange

from smoothgen_exp.config import configured
from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.errors import SmoothgenError
from smoothgen_exp.oracles.base import ClassEquivalence
from smoothgen_exp.weights import load_or_train

log = logging.getLogger(__name__)


class DigitCNN(nn.Module):
    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, 128] (used for FID-style and feature-space metrics)."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel in each direction, filling with zeros (background)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2, x.shape[0]), generator=gen).tolist()
    return torch.stack([padded[i, :, a:a + 8, b:b + 8] for i, (a, b) in enumerate(zip(dy, dx, strict=True))])


def train_digit_cnn(epochs: int, lr: float, train_noise: float, seed: int, device: torch.device,
                    batch_size: int = 64) -> tuple[DigitCNN, float]:
    """Train on the training split; return the network and its held-out accuracy on real digits."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_np, y_np = digit_images("train")
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    net = DigitCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    bar = trange(epochs, desc="train digit oracle", leave=False)
    for _ in bar:
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb = random_shift(x[idx], gen)
            half = len(idx) // 2
            xb[:half] += train_noise * torch.randn(xb[:half].shape, generator=gen)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    acc = heldout_accuracy(net)
    return net.to(device), acc


@torch.no_grad()
def heldout_accuracy(net: nn.Module) -> float:
    x, y = digit_images("heldout")
    device = next(net.parameters()).device
    pred = net(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy()
    return float(np.mean(pred == y))


@configured
class DigitClassifier(ClassEquivalence):
    """Oracle protocol: `classify(images) -> class indices`, `num_classes`, plus `features`."""

    num_classes = 10

    def __init__(self, epochs: int, lr: float, train_noise: float, train_seed: int,
                 min_accuracy: float, *, cache_dir: str = "outputs/cache",
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.params = params = {"arch": "DigitCNN-v1", "data": "sklearn-digits-v1", "epochs": epochs, "lr": lr,
                  "train_noise": train_noise, "seed": train_seed}

        def train():
            net, acc = train_digit_cnn(epochs, lr, train_noise, train_seed, torch.device("cpu"))
            log.info("digit oracle: held-out accuracy %.4f on real digits", acc)
            return net.state_dict(), {"heldout_accuracy": f"{acc:.6f}"}

        state, meta = load_or_train(cache_dir, "digit_oracle", params, train)
        self.net = DigitCNN()
        self.net.load_state_dict(state)
        self.net.to(self.device).eval().requires_grad_(False)
        self.heldout_accuracy = float(meta["heldout_accuracy"])
        if self.heldout_accuracy < min_accuracy:
            raise SmoothgenError(f"oracle.min_accuracy={min_accuracy}: the digit oracle reached only "
                                 f"{self.heldout_accuracy:.4f} held-out accuracy")

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.reshape(-1, 1, 8, 8))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images.reshape(-1, 1, 8, 8))

    __call__ = classify
