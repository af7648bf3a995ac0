"""`make bench`: the cost of certification against the raw batched forward pass it cannot avoid.

For several real held-out digit images, `Smooth.certify` of the digit oracle (n0 + n samples) is timed
against the oracle's plain batched forward over the same number of inputs, measured in the same
process and interleaved point by point. The median ratio is `certify_over_raw` (target <= 1.05).

The raw inputs are noised like certification's (one batch drawn before the clock starts, reused):
the CNN's forward is data-dependent, about 9% slower on noisy than on clean digits on this CPU, and
that cost is part of the irreducible work, not overhead of certification.
Results go to `outputs/bench/latest.json`; the allocator setting (SPEC 7) is part of the record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from smoothgen_exp.core import Smooth
from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.devices import resolve_device
from smoothgen_exp.oracles.digits import DigitClassifier


def _timed(fn, *args, **kwargs):
    """(seconds, result) of one call, synchronised around it on CUDA."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, result


def noisy_batch(x: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    gen = torch.Generator(device=x.device).manual_seed(0)
    return x + sigma * torch.randn((size, *x.shape), generator=gen, device=x.device, dtype=x.dtype)


@torch.inference_mode()
def raw_forward(base, batch: torch.Tensor, total: int, batch_size: int) -> None:
    """The irreducible work: base() over `total` inputs in batches of `batch_size`."""
    done = 0
    while done < total:
        b = min(batch_size, total - done)
        base(batch[:b])
        done += b


def bench_certify(oracle: DigitClassifier, args, device: torch.device) -> dict:
    images, labels = digit_images("heldout")
    idx = torch.linspace(0, len(images) - 1, args.points).long().tolist()
    base = oracle.classify
    smooth = Smooth(base, args.sigma, oracle.num_classes)
    x0 = torch.from_numpy(images[idx[0]]).to(device)
    smooth.certify(x0, args.n0, min(args.n, 2000), args.alpha, args.batch_size, seed=0)  # warm-up
    raw_forward(base, noisy_batch(x0, args.sigma, args.batch_size), min(args.n, 2000), args.batch_size)
    ratios, t_cert, t_raw, correct, radii = [], [], [], [], []
    for i in idx:
        x = torch.from_numpy(images[i]).to(device)
        batch = noisy_batch(x, args.sigma, args.batch_size)
        raw = min(_timed(raw_forward, base, batch, args.n0 + args.n, args.batch_size)[0]
                  for _ in range(args.repeats))
        runs = [_timed(smooth.certify, x, args.n0, args.n, args.alpha, args.batch_size, seed=i)
                for _ in range(args.repeats)]
        cert = runs[0][1]
        t_raw.append(raw)
        t_cert.append(min(t for t, _ in runs))
        ratios.append(t_cert[-1] / raw)
        correct.append(cert.prediction == int(labels[i]))
        radii.append(cert.radius)
    return {
        "certify_over_raw": statistics.median(ratios), "ratios": ratios,
        "certify_s": t_cert, "raw_s": t_raw, "n": args.n, "n0": args.n0, "batch_size": args.batch_size,
        "points": len(idx), "sigma": args.sigma, "alpha": args.alpha,
        "certified_accuracy_r0": sum(correct) / len(correct), "mean_radius": sum(radii) / len(radii),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--repeats", type=int, default=3, help="timings per point; the minimum is kept")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default="outputs/cache")
    p.add_argument("--out", default="outputs/bench/latest.json")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    oracle = DigitClassifier(cache_dir=args.cache_dir, device=device)
    result = {
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
        **bench_certify(oracle, args, device),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    alloc = "raised (no per-batch page faults)" if result["malloc_env"]["MALLOC_MMAP_THRESHOLD_"] else "glibc default"
    print(f"certify / raw forward: median {result['certify_over_raw']:.3f} over {result['points']} points "
          f"(n0={args.n0}, n={args.n}, batch {args.batch_size}, {device}, {result['threads']} threads, "
          f"malloc thresholds: {alloc})")
    print(f"  per point: {', '.join(f'{r:.3f}' for r in result['ratios'])}")
    print(f"  certify {statistics.median(result['certify_s']):.3f}s vs raw {statistics.median(result['raw_s']):.3f}s "
          f"per point; certified accuracy (r>0) {result['certified_accuracy_r0']:.2f}, "
          f"mean radius {result['mean_radius']:.3f} at sigma={args.sigma}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
