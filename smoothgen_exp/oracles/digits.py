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

        state, meta = load_or_train(cache_dir, "digit_oracle", params)       # training.digits trains it
        self.net = DigitCNN()
        self.net.load_state_dict(state)
        self.net.to(self.device).eval().requires_grad_(False)
        self.heldout_accuracy, self.weights_file = float(meta["heldout_accuracy"]), meta["file"]
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
