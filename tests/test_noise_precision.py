"""Issue 11.13: float32 noise on CPU is a truncated Gaussian (Box-Muller on 24-bit uniforms caps every
pair's r^2 at 48 ln 2 = 33.27). The noise laws draw in float64 and round x + eta once."""

import pytest
import torch
from scipy.stats import chi2

from smoothgen_exp.core import noisy_batches
from smoothgen_exp.smoothing.calibrated import CalibratedNoise
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from smoothgen_exp.stats import cp_lower

D = 77 * 768                   # SD-1.5's prompt-embedding space
N = 2000


def pair_radius_exceeds(noise: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per draw: does some pair (j, j + 8) of a 16-block have r^2 > threshold? (torch's vectorised
    Box-Muller writes one pair's cos and sin parts 8 apart). For exact Gaussian noise each such pair's
    r^2 is chi-square(2) whatever the layout, so the event has probability 1 - (1 - e^(-t/2))^(d/2)."""
    blocks = noise.reshape(len(noise), -1, 16)            # float32 squares: ample for 33.28 vs 33.27
    r2 = blocks[..., :8] ** 2 + blocks[..., 8:] ** 2
    return (r2 > threshold).flatten(1).any(1)


def count_class_a(sampler, threshold=33.28, batch=500) -> int:
    """k = #draws where the base classifier keeps class A; it changes class only on a far-out pair."""
    k = 0
    for start in range(0, N, batch):
        k += int((~pair_radius_exceeds(sampler(start, batch), threshold)).sum())
    return k


def test_float32_sampler_is_truncated_and_the_noise_laws_are_not():
    """The issue's counterexample at d = 77 * 768: under torch's float32 randn, k = n always (the printed
    p_lower overstates the Gaussian's P(A)); the float64 draw gives k < n as the Gaussian does."""
    x = torch.zeros(D, dtype=torch.float32)
    p_true = chi2.cdf(33.28, 2) ** (D // 2)                   # P(A) under exact N(0, I): 0.99824
    assert p_true == pytest.approx(0.99824, abs=1e-5)

    gen = torch.Generator().manual_seed(0)
    k32 = count_class_a(lambda s, b: torch.randn((b, D), generator=gen, dtype=torch.float32))
    assert k32 == N                                           # the truncated law: never leaves class A
    # k = n at any n, so at n = 10^4 the bound 0.99931 > P(A): it fails with probability 1, not alpha
    assert cp_lower(10_000, 10_000, 0.001) > p_true

    noise, gen = GaussianNoise(1.0), torch.Generator().manual_seed(0)
    batches = noisy_batches(x, N, 500, noise, gen)
    k64 = count_class_a(lambda s, b: next(batches))
    assert k64 < N                                            # about N (1 - p_true) = 3.5 draws leave A
    assert cp_lower(k64, N, 0.001) <= p_true


def test_sample_rounds_x_plus_eta_once():
    """fl32(x + eta) computed in float64: the base classifier sees a fixed function of x + eta."""
    x = torch.rand(64, generator=torch.Generator().manual_seed(3)) * 100
    out = torch.empty((8, 64), dtype=torch.float32)
    GaussianNoise(0.5).sample_(out, torch.Generator().manual_seed(4), add=x)
    eta = torch.randn((8, 64), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.5
    assert torch.equal(out, (x.double() + eta).float())
    # the float64 path writes in place and matches
    out64 = torch.empty((8, 64), dtype=torch.float64)
    GaussianNoise(0.5).sample_(out64, torch.Generator().manual_seed(4), add=x)
    assert torch.equal(out64, x.double() + eta)


def test_calibrated_noise_draws_in_float64():
    noise = CalibratedNoise(sigma=0.3)
    a = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)
    noise.chol = torch.linalg.cholesky(a)
    out = torch.empty((5, 3), dtype=torch.float32)
    noise.sample_(out, torch.Generator().manual_seed(5), add=torch.ones(3))
    xi = torch.randn((5, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(out, (xi @ noise.chol.T + 1.0).float())
