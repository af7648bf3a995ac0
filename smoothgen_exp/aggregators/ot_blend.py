"""aggregator=ot_blend: the smoothed image is an entropic Wasserstein barycenter of n noisy generations.

Where the pixel mean superposes n images (two digits drawn at different places give a double exposure),
the barycenter moves mass: the barycenter of two translated blobs is one blob halfway between them.
It is computed in *pixel space at reduced resolution*:
- each generation is area-downsampled to `resolution` x `resolution` as it streams in (only these
  n x C x resolution^2 values are kept, never the full outputs; a barycenter needs all n at once);
- each colour channel is a probability distribution over the pixel grid on [0, 1]^2 (intensity plus
  `floor`, normalised to mass 1);
- the convolutional barycenter (Solomon et al. 2015; entropic regularisation `reg` in squared distance on
  the [0, 1]^2 grid, float64) blends each channel with uniform weights. `method=sinkhorn_log` (the
  default) runs it in the log domain (`log_barycenter`: POT's `convolutional_barycenter2d(method=
  "sinkhorn_log")`, the same iterations to 1e-15, vectorised over the n images in torch, on the run's
  device; on CPU about 3x faster than POT's plain-domain method). `method=sinkhorn` is that method: at
  the default reg its Gibbs kernel underflows and it converges to a wrong barycenter (the barycenter of
  two blobs kept ghost bumps at 5% of the peak where the exact one has 0.3%; NaN at reg = 5e-4). A
  non-finite blend fails;
- each channel is rescaled to the mean mass of its inputs and the result upsampled (bilinear) to the
  output resolution and clipped to [0, 1].
The smoothed prediction is the oracle's class of the blended image. It is an aggregate for quality and
prediction; the distance certificate of `certifier=output_bound` is about the mean h(x) = E[G(x + eta)],
and the class certificates do not depend on the aggregator.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.nn import functional as F

from smoothgen_exp.config import configured
from smoothgen_exp.errors import SmoothgenError


def shifted_products_exact(reg: float, size: int, dtype: torch.dtype = torch.float64) -> bool:
    """Whether max-shifted products take log(k x) to rounding on a unit grid of `size` points per axis.

    Each sum keeps its term at the maximum, at least exp(-1/reg) (d <= 1); the terms lost below the smallest
    normal number (flushed, or rounded as subnormals) are at most `size` x tiny. Exact to rounding where that
    is below eps of the sum: 1/reg <= log(eps / (size x tiny)), i.e. reg >= 1/668 at 32 points in float64
    (1/700, where exp(-1/reg) itself is still normal, lost 3e-4: found by review)."""
    info = torch.finfo(dtype)
    return 1.0 / reg <= math.log(info.eps / (size * info.tiny))


def log_barycenter(A: torch.Tensor, reg: float, iters: int, tol: float, stab: float = 1e-30) -> torch.Tensor:
    """Entropic barycenter [h, w] of n distributions A [n, h, w] (each of mass 1, uniform weights) by
    log-domain convolutional Sinkhorn: POT's `_convolutional_barycenter2d_log`, all n images at once.

    log(K x) for the separable Gibbs kernel K = k1 (x) k2 is taken one axis at a time. Where
    `shifted_products_exact` (reg >= 1/668 at 32 x 32; the default is 1/500), each pass is a max-shifted
    matrix product, log(k @ exp(L - max L)) + max L: the term at the maximum is at least exp(-1/reg) > 0,
    so nothing underflows to log 0, and the sum loses only rounding (equal to logsumexp to ~1e-15; 30x
    faster at 32 x 32 with `subnormals_flushed`). Otherwise logsumexp over the [h, h, w] tensor."""
    n, h, w = A.shape
    t1 = torch.linspace(0, 1, h, dtype=A.dtype, device=A.device)
    t2 = torch.linspace(0, 1, w, dtype=A.dtype, device=A.device)
    m1, m2 = -(t1[:, None] - t1[None]) ** 2 / reg, -(t2[:, None] - t2[None]) ** 2 / reg
    k1, k2 = torch.exp(m1), torch.exp(m2)
    shifted = shifted_products_exact(reg, max(h, w), A.dtype)

    def convolve(log_images: torch.Tensor) -> torch.Tensor:      # log(K x), K = exp(m1) (x) exp(m2)
        if shifted:
            top = log_images.amax(dim=1, keepdim=True)
            rows = torch.log(k1 @ torch.exp(log_images - top)) + top
            top = rows.amax(dim=2, keepdim=True)
            return torch.log(torch.exp(rows - top) @ k2) + top
        rows = torch.logsumexp(m1[None, :, :, None] + log_images[:, None], dim=2)
        return torch.logsumexp(m2[None, None] + rows[:, :, None], dim=3)

    log_a, g = torch.log(A + stab), torch.zeros_like(A)
    for it in range(iters):
        log_ku = convolve(log_a - convolve(g))
        log_bar = log_ku.mean(0)
        if it % 10 == 9 and float(torch.exp(g + log_ku).std(0, correction=0).sum()) < tol:
            break
        g = log_bar[None] - log_ku
    return torch.exp(log_bar)


@contextlib.contextmanager
def subnormals_flushed(device: torch.device):
    """On CPU: one thread with subnormal floats flushed to zero inside the block (restored after).

    In the shifted products, exp(L - max L) and its products with small kernel entries fall below 2.2e-308
    (subnormal) wherever the potentials spread; x86 computes those 5-10x slower, and torch's flag reaches
    the calling thread only, hence one thread. Flushing them drops what `shifted_products_exact` allows for
    (below eps of every sum); a user's own flush setting is restored. A blend
    at the defaults (32 images, 3 channels at 32 x 32, 1000 iterations) on this 2-core CPU, busy: 185 s by
    logsumexp, 116 s shifted with subnormals on two threads, 6.2 s shifted and flushed on one."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    was_flushing = bool(torch.tensor([1e-310], dtype=torch.float64).mul(1.0) == 0)     # torch has no getter
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)
        torch.set_num_threads(threads)


def channel_barycenter(stack: torch.Tensor, reg: float, floor: float, iters: int, tol: float,
                       method: str = "sinkhorn_log") -> torch.Tensor:
    """Wasserstein barycenter of n images [n, C, r, r] >= 0, channel by channel, with their mean mass."""
    with subnormals_flushed(stack.device):
        return _channel_barycenter(stack, reg, floor, iters, tol, method)


def _channel_barycenter(stack: torch.Tensor, reg: float, floor: float, iters: int, tol: float,
                        method: str) -> torch.Tensor:
    import ot

    out = torch.empty_like(stack[0])
    for c in range(stack.shape[1]):
        mass = stack[:, c] + floor
        total = mass.sum(dim=(1, 2), keepdim=True)
        if method == "sinkhorn_log":
            bary = log_barycenter(mass / total, reg, iters, tol)
        else:
            bary = ot.bregman.convolutional_barycenter2d(mass / total, reg, method=method,
                                                         numItermax=iters, stopThr=tol, warn=False)
        if not bool(torch.isfinite(bary).all()):
            raise SmoothgenError(f"aggregator=ot_blend: the barycenter is not finite at reg={reg} with "
                                 f"method={method}; use method=sinkhorn_log or a larger aggregator.reg")
        out[c] = (bary * total.mean() - floor).clamp_min(0)
    return out


@configured
class OTBlend:
    def __init__(self, n: int, resolution: int, reg: float, floor: float,
                 method: str, iters: int, tol: float):
        self.n, self.resolution, self.reg, self.floor = int(n), int(resolution), float(reg), float(floor)
        self.method, self.iters, self.tol = method, int(iters), float(tol)

    def blend(self, ctx, stream: str) -> torch.Tensor:
        """The blended image [C, H, W] of n fresh generations of stream `stream`."""
        stack, done = None, 0
        for out in ctx.outputs(self.n, stream):
            small = F.adaptive_avg_pool2d(out.double(), min(self.resolution, *out.shape[-2:]))
            if stack is None:
                stack = torch.empty((self.n, *small.shape[1:]), dtype=torch.float64, device=out.device)
                shape = out.shape[-2:]
            stack[done:done + len(small)] = small
            done += len(small)
        bary = channel_barycenter(stack, self.reg, self.floor, self.iters, self.tol, self.method)
        full = F.interpolate(bary[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
        return full.clamp(0, 1).to(ctx.x.dtype)

    def aggregate(self, ctx, stream: str = "aggregate") -> tuple[dict, torch.Tensor]:
        image = self.blend(ctx, stream)
        with torch.inference_mode():
            pred = int(ctx.oracle.classify(image[None])[0])
        return {"smoothed_prediction": pred, "predict_n": self.n}, image.cpu()

    def samples(self, ctx, k: int, aggregated: dict) -> torch.Tensor:
        """k smoothed outputs: blends of independent sets of n draws."""
        return torch.stack([self.blend(ctx, f"quality/smoothed/{j}").cpu() for j in range(k)])
