"""Randomized smoothing of a classifier: CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter (2019).

    smooth = Smooth(base, sigma=0.25, num_classes=10)
    cert = smooth.certify(x, n0=100, n=10_000, alpha=0.001, batch_size=1000, seed=0)
    cert.prediction, cert.radius        # -1 / 0.0 when it abstains

`base` maps a batch of noised inputs (shape [b, *x.shape]) to class indices in [0, num_classes). It may
itself be random (a generator followed by an oracle): the certificate then holds for the smoothed
classifier whose probabilities are taken over the Gaussian noise and the base's own randomness, as
long as that randomness does not depend on the noise.

A noise law other than isotropic N(0, sigma^2 I) is passed as `noise=` (see smoothgen_exp.smoothing);
its `radius(p_lower)` turns the bound into a radius.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import binom_pvalue, cp_lower, oracle_corrected_lower

ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    prediction: int      # c_A if certified, else ABSTAIN
    radius: float        # sound L2 radius if certified, else 0.0
    p_lower: float       # lower bound on P(f(x + eta) = c_A) (after the oracle-error correction, if any)
    count: int           # estimation samples that voted c_A
    n: int               # estimation samples
    top_class: int       # c_A chosen on the n0 selection samples (kept even when abstaining)
    q_lower: float       # one-sided Clopper-Pearson bound on the vote rate itself

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True)
class Prediction:
    prediction: int      # top class, or ABSTAIN when the binomial test cannot separate the top two
    count_a: int
    count_b: int
    p_value: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


CHUNK_ELEMENTS = 2**20      # an accelerator's noise chunk holds at most this many numbers (and at least one row)
MAX_CHUNK_ROWS = 64


def chunk_rows(shape) -> int:
    """Rows per noise chunk for conditions of this shape: a power of two in [1, 64], a function of the
    shape alone, so that no batch size can change it."""
    numel = max(1, math.prod(shape))
    rows = MAX_CHUNK_ROWS
    while rows > 1 and rows * numel > CHUNK_ELEMENTS:
        rows //= 2
    return rows


class NoiseStream:
    """The draws x + eta_1, x + eta_2, ... of one named random stream of one item.

    The k-th draw is the same however the draws are batched (by `batch_size`, by the `auto` back-off, or
    packed with other items' draws; issue 13). On the CPU the stream is numpy's float64 ziggurat
    (PCG64 seeded by the stream's seed), which draws one normal after another, so any split of the
    stream gives the same numbers. On an accelerator, eta comes from the torch generator in chunks of
    `chunk_rows(x.shape)` rows, always a whole chunk at a time (a partly used chunk waits in a buffer
    for the next request). Either way eta is formed in float64 and x + eta rounded once (`sample_`, SPEC 4).
    """

    def __init__(self, x: torch.Tensor, noise, gen: torch.Generator, chunked: bool | None = None):
        self.x, self.noise = x, noise
        if not (x.device.type != "cpu" if chunked is None else chunked):
            self.gen, self.chunk = np.random.Generator(np.random.PCG64(gen.initial_seed())), None
        else:
            self.gen, self.chunk, self.buf = gen, chunk_rows(x.shape), None
            self.pos = self.chunk        # the buffer's next unused row (chunk: empty)

    def take_(self, out: torch.Tensor) -> torch.Tensor:
        """Fill `out` ([k, *x.shape]) with the next k draws and return it."""
        if self.chunk is None:
            return self.noise.sample_(out, self.gen, add=self.x)
        k, i = len(out), 0
        while i < k:
            if self.pos == self.chunk and k - i >= self.chunk:      # a whole chunk: draw it in place
                self.noise.sample_(out[i:i + self.chunk], self.gen, add=self.x)
                i += self.chunk
                continue
            if self.pos == self.chunk:
                if self.buf is None:
                    self.buf = torch.empty((self.chunk, *self.x.shape), dtype=self.x.dtype, device=self.x.device)
                self.noise.sample_(self.buf, self.gen, add=self.x)
                self.pos = 0
            m = min(k - i, self.chunk - self.pos)
            out[i:i + m].copy_(self.buf[self.pos:self.pos + m])
            self.pos += m
            i += m
        return out

    def take(self, k: int) -> torch.Tensor:
        return self.take_(torch.empty((k, *self.x.shape), dtype=self.x.dtype, device=self.x.device))


def noisy_batches(x: torch.Tensor, num: int, batch_size: int, noise, gen: torch.Generator | NoiseStream
                  ) -> Iterator[torch.Tensor]:
    """`num` draws of x + eta in batches of `batch_size`, written into one preallocated buffer: the next
    draws of the stream `gen` (a fresh `NoiseStream` when given a torch Generator). The draws do not
    depend on `batch_size`.

    Each yielded batch is overwritten by the next one: consume it before advancing.
    """
    batch_size = max(1, min(batch_size, num))
    stream = gen if isinstance(gen, NoiseStream) else NoiseStream(x, noise, gen)
    buf = torch.empty((batch_size, *x.shape), dtype=x.dtype, device=x.device)
    remaining = num
    while remaining > 0:
        b = min(batch_size, remaining)
        yield stream.take_(buf[:b])
        remaining -= b


def seeded_generator(device: torch.device | str, seed: int | None) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def certificate(c_a: int, k: int, n: int, alpha: float, noise, oracle_error: float | None = None,
                oracle_error_model: str = "bounded") -> Certificate:
    """CERTIFY's decision once c_A is chosen (on samples disjoint from these): k of n fresh samples voted
    c_A; one-sided Clopper-Pearson at alpha, the oracle-error correction, and the radius if p_lower > 1/2."""
    q_lower = cp_lower(k, n, alpha)
    p_lower = oracle_corrected_lower(q_lower, oracle_error, oracle_error_model)
    if p_lower > 0.5:
        return Certificate(c_a, noise.radius(p_lower), p_lower, k, n, c_a, q_lower)
    return Certificate(ABSTAIN, 0.0, p_lower, k, n, c_a, q_lower)


def prediction(counts: torch.Tensor, alpha: float) -> Prediction:
    """PREDICT's decision from class counts: the top class if the two-sided binomial test of the top two
    rejects at alpha, else ABSTAIN."""
    (n_a, n_b), (c_a, _) = (t.tolist() for t in torch.topk(counts, 2))
    p = binom_pvalue(n_a, n_a + n_b)
    return Prediction(c_a if p <= alpha else ABSTAIN, n_a, n_b, p)


class Smooth:
    """g(x) = argmax_c P(base(x + eta) = c), eta ~ N(0, sigma^2 I) (or the law given as `noise`)."""

    ABSTAIN = ABSTAIN

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor], sigma: float | None = None,
                 num_classes: int = 2, noise=None):
        if (sigma is None) == (noise is None):
            raise ValueError("give exactly one of sigma and noise")
        if num_classes < 2:
            raise ValueError("num_classes must be >= 2")
        self.base = base
        self.noise = noise if noise is not None else GaussianNoise(sigma)
        self.sigma = self.noise.l2_scale
        self.num_classes = int(num_classes)

    @torch.inference_mode()
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                seed: int | None = None, oracle_error: float | None = None,
                oracle_error_model: str = "bounded") -> Certificate:
        """CERTIFY: choose c_A on n0 samples, bound P(c_A) on n fresh samples, radius if > 1/2.

        With `oracle_error` eps, the vote-rate bound q_lower is turned into a bound on the true-class
        probability by `stats.oracle_corrected_lower` (SPEC C1).
        """
        stream = NoiseStream(x, self.noise, seeded_generator(x.device, seed))   # n0 draws, then n more
        c_a = int(self.sample_counts(x, n0, batch_size, stream).argmax())
        k = int(self.sample_counts(x, n, batch_size, stream)[c_a])
        return certificate(c_a, k, n, alpha, self.noise, oracle_error, oracle_error_model)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                seed: int | None = None) -> Prediction:
        """PREDICT: the top class if a two-sided binomial test separates it from the runner-up at alpha."""
        return prediction(self.sample_counts(x, n, batch_size, seeded_generator(x.device, seed)), alpha)

    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int,
                      gen: torch.Generator | NoiseStream) -> torch.Tensor:
        """Class counts of base(x + eta) over the next `num` draws of `gen` (a torch Generator or a
        NoiseStream), streamed in batches (int64, on CPU)."""
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        for noisy in noisy_batches(x, num, batch_size, self.noise, gen):
            labels = self.base(noisy)
            if labels.shape != (len(noisy),) or labels.is_floating_point():   # [b, k] casts k votes per draw
                raise ValueError(f"base must return one integer class index per noisy input, shape ({len(noisy)},) "
                                 f"(logits: .argmax(1)); it returned {tuple(labels.shape)} {labels.dtype} for "
                                 f"noisy inputs {tuple(noisy.shape)} (x is one input, shape {tuple(x.shape)}, not a batch)")
            votes = torch.bincount(labels, minlength=self.num_classes)
            if votes.numel() > self.num_classes:
                raise ValueError(f"base returned a class index >= num_classes={self.num_classes}")
            counts += votes
        return counts.cpu()
