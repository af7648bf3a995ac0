"""The digit oracle: a small CNN that maps an 8x8 image in [0, 1] to one of 10 digit classes; and
`oracle=digit_probe`, a linear probe on that CNN's unit features (what reads `model=digit_encoder`).

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
from smoothgen_exp.data.digits import WORDS, digit_images
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
    class_names = WORDS
    reads = ("image",)                 # 8x8 images in [0, 1]

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


@configured
class DigitProbe(ClassEquivalence):
    """oracle=digit_probe: classes of unit digit features by a linear probe, the frozen downstream model of
    `model=digit_encoder`. Multinomial logistic regression (scikit-learn, inverse regularisation `c`) fitted
    once on the *vanilla* encoder's clean unit features of the training digits (trained at first use,
    cached); its logits are W normalize(y) + b. Feature vectors [B, 128] pass through (normalised); images
    [B, 1, 8, 8] are embedded by the default digit oracle's CNN first. `heldout_accuracy`: on clean
    held-out digits through the vanilla encoder."""

    num_classes = 10
    class_names = WORDS
    reads = ("image", "features")      # the digit encoder's unit features, or images through the CNN

    def __init__(self, c: float, *, cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        cnn = DigitClassifier(cache_dir=cache_dir, device=self.device)
        self.net = cnn.net
        params = {"arch": "linear-probe-v1", "data": "sklearn-digits-v1", "c": c, "cnn": cnn.params}
        state, meta = load_or_train(cache_dir, "digit_probe", params, net=self.net)   # training.gsb fits it
        self.weight, self.bias = state["weight"].to(self.device), state["bias"].to(self.device)
        self.heldout_accuracy, self.weights_file = float(meta["heldout_accuracy"]), meta["file"]

    def features(self, outputs: torch.Tensor) -> torch.Tensor:
        outputs = torch.as_tensor(outputs)
        feats = outputs if outputs.dim() == 2 else self.net.features(outputs.reshape(-1, 1, 8, 8))
        return F.normalize(feats.float(), dim=-1)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.features(outputs) @ self.weight.T + self.bias

    def classify(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.logits(outputs).argmax(-1)
