"""Training of the embedded default: the digit oracle (a small CNN) and the digits text-to-image
cVAE, trained against the frozen oracle; and the linear probe on the oracle's features that reads
`model=digit_encoder` (`oracle=digit_probe`). Both train at first use (`weights.load_or_train` finds the
trainers registered here) or ahead of time with `python -m smoothgen_exp.train task=...`, with a
progress bar, fixed seeds and a checkpoint after every epoch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional as F

from smoothgen_exp.data.digits import N_TRAIN_TEMPLATES, SPLITS, digit_images, prompt
from smoothgen_exp.models.digits import CVAE, IMAGE_SHAPE, PIXELS
from smoothgen_exp.oracles.digits import DigitCNN, heldout_accuracy
from smoothgen_exp.training.checkpoint import Checkpoint, epochs
from smoothgen_exp.weights import register_trainer

log = logging.getLogger(__name__)


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel in each direction, filling with zeros (background)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2, x.shape[0]), generator=gen).tolist()
    return torch.stack([padded[i, :, a:a + 8, b:b + 8] for i, (a, b) in enumerate(zip(dy, dx, strict=True))])


def train_digit_cnn(epochs_total: int, lr: float, train_noise: float, seed: int, checkpoint: Checkpoint | None = None,
                    batch_size: int = 64, stop_after: int | None = None) -> tuple[DigitCNN, float]:
    """Train on the training split; return the network and its held-out accuracy on real digits."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_np, y_np = digit_images("train")
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    net = DigitCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs_total)
    stateful = {"net": net, "opt": opt, "sched": sched}
    for _, bar in epochs(epochs_total, checkpoint, stateful, {"gen": gen}, "train digit oracle", stop_after):
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
    return net, heldout_accuracy(net)


@register_trainer("digit_oracle")
def train_digit_oracle(params: dict, checkpoint: str | None = None, stop_after: int | None = None):
    net, acc = train_digit_cnn(params["epochs"], params["lr"], params["train_noise"], params["seed"],
                               Checkpoint(checkpoint), stop_after=stop_after)
    log.info("digit oracle: held-out accuracy %.4f on real digits", acc)
    return net.state_dict(), {"heldout_accuracy": f"{acc:.6f}"}


def train_cvae(embeddings: torch.Tensor, oracle_net: torch.nn.Module, *, latent_dim: int, hidden: int,
               train_sigma: float, epochs_total: int, lr: float, kl_weight: float, oracle_weight: float,
               seed: int, checkpoint: Checkpoint | None = None, batch_size: int = 64,
               stop_after: int | None = None) -> CVAE:
    """Train on training images; embeddings[t, d] is the prompt embedding of (template t, digit d)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_np, y_np = digit_images("train")
    x, y = torch.from_numpy(x_np).reshape(-1, PIXELS), torch.from_numpy(y_np)
    n_templates = embeddings.shape[0]
    cvae = CVAE(embeddings.shape[-1], latent_dim, hidden)
    opt = torch.optim.Adam(cvae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs_total)
    stateful = {"cvae": cvae, "opt": opt, "sched": sched}
    for _, bar in epochs(epochs_total, checkpoint, stateful, {"gen": gen}, "train digits generator", stop_after):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            templates = torch.randint(0, n_templates, (len(idx),), generator=gen)
            cond = embeddings[templates, y[idx]]
            cond = cond + train_sigma * torch.randn(cond.shape, generator=gen)
            recon, kl = cvae.loss(x[idx], cond, gen)
            prior = torch.randn((len(idx), latent_dim), generator=gen)
            sampled = torch.sigmoid(cvae.decode_logits(prior, cond)).reshape(-1, *IMAGE_SHAPE)
            fidelity = F.cross_entropy(oracle_net(sampled), y[idx])
            loss = recon + kl_weight * kl + oracle_weight * PIXELS * fidelity / 8
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(recon=f"{recon.item():.1f}", kl=f"{kl.item():.1f}", ce=f"{fidelity.item():.3f}")
    return cvae.eval()


def heldout_fidelity(cvae: CVAE, encoder, oracle_net: torch.nn.Module, per_prompt: int = 20) -> float:
    """The oracle's accuracy on samples for the held-out (never trained on) prompt templates."""
    prompts = [(prompt(t, d), d) for t in SPLITS["heldout"] for d in range(10)]
    emb = encoder.encode([p for p, _ in prompts]).cpu().repeat_interleave(per_prompt, 0)
    labels = np.repeat([d for _, d in prompts], per_prompt)
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        latent = torch.randn((len(emb), cvae.latent_dim), generator=gen)
        images = torch.sigmoid(cvae.decode_logits(latent, emb)).reshape(-1, *IMAGE_SHAPE)
        pred = oracle_net(images).argmax(1).numpy()
    return float(np.mean(pred == labels))


@register_trainer("digits_t2i")
def train_digits_t2i(params: dict, checkpoint: str | None = None, *, encoder, oracle,
                     stop_after: int | None = None):
    """`encoder` (MiniLM) and `oracle` (the frozen DigitClassifier) come from the model being built."""
    emb = encoder.encode([prompt(t, d) for t in SPLITS["train"] for d in range(10)]).cpu()
    oracle_net = oracle.net.cpu()
    cvae = train_cvae(emb.reshape(N_TRAIN_TEMPLATES, 10, -1), oracle_net, latent_dim=params["latent_dim"],
                      hidden=params["hidden"], train_sigma=params["train_sigma"], epochs_total=params["epochs"],
                      lr=params["lr"], kl_weight=params["kl_weight"], oracle_weight=params["oracle_weight"],
                      seed=params["seed"], checkpoint=Checkpoint(checkpoint),
                      stop_after=stop_after)
    acc = heldout_fidelity(cvae, encoder, oracle_net)
    log.info("digits generator: oracle accuracy of samples for held-out prompts %.4f", acc)
    return cvae.state_dict(), {"heldout_prompt_accuracy": f"{acc:.6f}"}


@register_trainer("digit_probe")
def train_digit_probe(params: dict, checkpoint: str | None = None, *, net):
    """Multinomial logistic regression on the vanilla CNN's clean unit features of the training digits."""
    from sklearn.linear_model import LogisticRegression

    def unit_features(split):
        x, y = digit_images(split)
        device = next(net.parameters()).device
        with torch.no_grad():
            return F.normalize(net.features(torch.from_numpy(x).to(device)), dim=-1).cpu().numpy(), y

    (ftr, ytr), (fte, yte) = unit_features("train"), unit_features("heldout")
    probe = LogisticRegression(C=params["c"], max_iter=5000).fit(ftr, ytr)
    acc = float(np.mean(probe.predict(fte) == yte))
    log.info("digit probe: held-out accuracy %.4f on clean vanilla features", acc)
    state = {"weight": torch.tensor(probe.coef_, dtype=torch.float32),
             "bias": torch.tensor(probe.intercept_, dtype=torch.float32)}
    return state, {"heldout_accuracy": f"{acc:.6f}"}
