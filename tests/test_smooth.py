"""Smooth (CERTIFY/PREDICT) against a linear base classifier, whose smoothed classifier is known exactly.

For f(x) = 1[w.x + b > 0] and eta ~ N(0, sigma^2 I), P(f(x + eta) = f(x)) = Phi(|w.x + b| / (sigma |w|)),
and the smoothed classifier's true L2 robustness radius is the distance to the hyperplane, |w.x + b| / |w|.
"""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from smoothgen_exp import Smooth
from smoothgen_exp.core import ABSTAIN

D = 10


def linear_problem(seed: int = 0, points: int = 200, sigma: float = 0.5, max_dist: float = 2.0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(D, generator=gen, dtype=torch.float64)
    b = 0.3
    # points at controlled signed distances from the hyperplane
    dist = (torch.rand(points, generator=gen, dtype=torch.float64) * 2 - 1) * max_dist * sigma
    base_pts = torch.randn(points, D, generator=gen, dtype=torch.float64)
    base_pts -= ((base_pts @ w + b) / w.norm() ** 2)[:, None] * w        # project onto the plane
    xs = base_pts + dist[:, None] * w / w.norm()

    def base(z):
        return (z @ w + b > 0).long()

    true_radius = (xs @ w + b).abs() / w.norm()
    true_class = (xs @ w + b > 0).long()
    return Smooth(base, sigma, num_classes=2), xs, true_radius.numpy(), true_class.numpy()


def test_certified_radius_never_exceeds_the_true_radius():
    # alpha = 1e-6: the chance that any of the 200 bounds legitimately fails is below 2e-4.
    smooth, xs, true_r, true_c = linear_problem(seed=0, points=200)
    for i in range(len(xs)):
        cert = smooth.certify(xs[i], n0=100, n=2000, alpha=1e-6, batch_size=1000, seed=i)
        if not cert.abstained:
            assert cert.prediction == true_c[i]
            assert cert.radius <= true_r[i] + 1e-12, (i, cert, true_r[i])


def test_certified_radius_approaches_the_true_radius_at_large_n():
    smooth, xs, true_r, true_c = linear_problem(seed=1, points=200)
    sigma = smooth.sigma
    ratios, misses = [], 0
    for i in range(len(xs)):
        if not 0.5 * sigma <= true_r[i] <= 2.0 * sigma:
            continue
        cert = smooth.certify(xs[i], n0=100, n=100_000, alpha=0.001, batch_size=20_000, seed=i)
        assert cert.prediction == true_c[i]
        misses += cert.radius > true_r[i]
        ratios.append(cert.radius / true_r[i])
    assert len(ratios) > 50
    # each certificate may overshoot with probability alpha = 0.001: over ~100 points one miss is a ~10%
    # event (the seeds give one), three would be ~2e-4 (the bound itself is covered in the tests below)
    assert misses <= 2
    assert np.mean(ratios) > 0.93 and np.min(ratios) > 0.8


def test_certification_misses_at_most_alpha_of_the_time():
    """End-to-end coverage through Smooth: p_lower > true p happens at rate <= alpha."""
    sigma, alpha, trials = 1.0, 0.05, 4000
    w = torch.zeros(D, dtype=torch.float64)
    w[0] = 1.0
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.6                       # p = Phi(0.6) ~ 0.726
    p_true = norm.cdf(0.6)
    smooth = Smooth(lambda z: (z @ w > 0).long(), sigma, num_classes=2)
    misses = sum(smooth.certify(x, 10, 100, alpha, 110, seed=s).p_lower > p_true for s in range(trials))
    assert misses / trials <= alpha + 4 * np.sqrt(alpha * (1 - alpha) / trials)


def test_abstains_on_the_boundary_and_predicts_off_it():
    w = torch.zeros(D)
    w[0] = 1.0
    smooth = Smooth(lambda z: (z @ w > 0).long(), 0.5, num_classes=2)
    on = torch.zeros(D)
    far = torch.zeros(D)
    far[0] = 2.0
    assert smooth.certify(on, 100, 1000, 0.001, 500, seed=0).abstained
    assert smooth.predict(on, 1000, 0.001, 500, seed=0).prediction == ABSTAIN
    cert = smooth.certify(far, 100, 1000, 0.001, 500, seed=0)
    assert cert.prediction == 1 and cert.radius > 0.5
    pred = smooth.predict(far, 1000, 0.001, 500, seed=0)
    assert pred.prediction == 1 and pred.count_a + pred.count_b == 1000


def test_same_seed_same_certificate_and_fresh_seed_differs():
    smooth, xs, _, _ = linear_problem(seed=2, points=5)
    a = smooth.certify(xs[0], 50, 3000, 0.001, 700, seed=7)
    b = smooth.certify(xs[0], 50, 3000, 0.001, 700, seed=7)
    assert a == b
    counts = {smooth.certify(xs[0], 50, 3000, 0.001, 700, seed=s).count for s in range(5)}
    assert len(counts) > 1


def test_selection_and_estimation_are_disjoint_fresh_draws_in_a_reused_buffer():
    seen, pointers = [], set()

    def base(z):
        seen.append(z.clone())
        pointers.add(z.data_ptr())
        return (z[:, 0] > 0).long()

    Smooth(base, 1.0, num_classes=2).certify(torch.zeros(3), n0=30, n=250, alpha=0.01, batch_size=100,
                                            seed=0)
    sizes = [len(s) for s in seen]
    assert sizes == [30, 100, 100, 50]          # n0 first, then n in batches
    allz = torch.cat(seen)
    assert len(torch.unique(allz, dim=0)) == 280  # every draw fresh: no reuse of selection noise
    assert len(pointers) == 2                     # one preallocated buffer per pass, reused by every batch


def test_base_out_of_range_labels_are_an_error():
    smooth = Smooth(lambda z: torch.full((len(z),), 3), 1.0, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        smooth.certify(torch.zeros(2), 10, 10, 0.01, 10, seed=0)


def test_a_base_returning_several_labels_per_input_is_an_error():
    """bincount over a [b, k] output cast k votes per draw: 10 draws counted as 20 (found by review)."""
    smooth = Smooth(lambda z: torch.zeros(len(z), 2, dtype=torch.long), 1.0, num_classes=2)
    with pytest.raises(ValueError, match=r"one integer class index per noisy input, shape \(10,\) .* returned \(10, 2\)"):
        smooth.certify(torch.zeros(2), 10, 10, 0.01, 10, seed=0)
    logits = Smooth(lambda z: torch.zeros(len(z)), 1.0, num_classes=2)      # bincount: "not implemented for 'Float'"
    with pytest.raises(ValueError, match=r"\(logits: .argmax\(1\)\); it returned \(10,\) torch.float32"):
        logits.certify(torch.zeros(2), 10, 10, 0.01, 10, seed=0)
    # a batch passed as x (a new user's mistake): the message names x's shape, not only the classifier's
    per_row = Smooth(lambda z: z.sum(-1).gt(0).long(), 1.0, 2)      # one class per row of a [b, d] batch
    with pytest.raises(ValueError, match=r"for noisy inputs \(10, 5, 3\) \(x is one input, shape \(5, 3\), not a batch\)"):
        per_row.certify(torch.zeros(5, 3), 10, 10, 0.01, 10, seed=0)
