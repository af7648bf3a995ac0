"""`make bench`: the cost of certification against the raw batched forward pass it cannot avoid.

For several real held-out digit images, `Smooth.certify` of the digit oracle (n0 + n samples) is timed
against the oracle's plain batched forward over the same number of inputs, measured in the same
process and interleaved point by point. The median ratio is `certify_over_raw` (target <= 1.05).

It also compares `certifier=sequential` with fixed-n Cohen at a target radius r: certified accuracy at r
for both, and the sequential certifier's mean samples as a fraction of 10,000 (`seq_samples_ratio`,
target <= 0.2; `seq_acc_delta` = sequential minus fixed certified accuracy, target within 0.01).

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


class PixelIdentity:
    """A 'generator' that returns its (noised) input: smoothing the oracle directly in pixel space."""

    output_range = (0.0, 1.0)
    output_shape = (1, 8, 8)

    def generate(self, z, gen):
        return z


def bench_sequential(oracle: DigitClassifier, args, device: torch.device) -> dict:
    """Certified accuracy at target radius r: fixed-n Cohen against the sequential certifier."""
    from types import SimpleNamespace

    from smoothgen_exp.certifiers.sequential import SequentialCertifier
    from smoothgen_exp.context import ItemContext
    from smoothgen_exp.smoothing.gaussian import GaussianNoise

    images, labels = digit_images("heldout")
    idx = torch.linspace(0, len(images) - 1, args.seq_points).long().tolist()
    noise, r = GaussianNoise(args.sigma), args.target_radius
    sequential = SequentialCertifier(n0=args.n0, n=args.seq_max_n, alpha=args.alpha, batch_size=args.seq_batch_size,
                                     target_radius=r, give_up_alpha=args.give_up_alpha)
    fixed_ok, seq_ok, seq_samples = [], [], []
    t_fixed = t_seq = 0.0
    for i in idx:
        item = SimpleNamespace(item_id=f"heldout-{i}", condition="", label=int(labels[i]))
        ctx = ItemContext(item, torch.from_numpy(images[i]).to(device), PixelIdentity(), oracle, noise,
                          run_seed=0, batch_size=args.batch_size)
        dt, cert = _timed(ctx.smooth("certify").certify, ctx.x, args.n0, args.n, args.alpha, args.batch_size,
                          seed=ctx.seed("certify/noise"))
        t_fixed += dt
        fixed_ok.append(cert.prediction == item.label and cert.radius >= r)
        dt, row = _timed(sequential.certify, ctx)
        t_seq += dt
        seq_ok.append(bool(row["certified"]) and row["prediction"] == item.label)
        seq_samples.append(row["samples_used"])
    acc_fixed, acc_seq = sum(fixed_ok) / len(idx), sum(seq_ok) / len(idx)
    return {"seq_target_radius": r, "seq_points": len(idx), "seq_batch_size": args.seq_batch_size,
            "fixed_certified_accuracy_at_r": acc_fixed, "seq_certified_accuracy_at_r": acc_seq,
            "seq_acc_delta": acc_seq - acc_fixed, "seq_mean_samples": sum(seq_samples) / len(idx),
            "seq_samples_ratio": sum(seq_samples) / len(idx) / args.n,
            "seq_time_ratio": t_seq / t_fixed, "seq_give_up_alpha": args.give_up_alpha,
            "seq_max_n": args.seq_max_n}


def bench_token_average(args, device: torch.device) -> dict:
    """Token-averaged smoothed generation on a GPT-2-small-width random model (tiny_gpt2 classes).

    kv_speedup: the KV-cached smoothed decoder against recomputing every step (target >= 5);
    smoothed_over_plain: the smoothed decoder (n copies, one averaged sequence) against plain batched
    `generate` of n sequences (target <= 1.5). Prompt: a 32-token prompt, 32 new tokens, n = 16.
    """
    from smoothgen_exp.models.lm import CausalLM

    lm = CausalLM(name="tiny_gpt2", tiny={"arch": "gpt2", "width": args.lm_width, "layers": args.lm_layers,
                                           "heads": args.lm_heads, "seed": 0},
                  max_new_tokens=args.lm_tokens, device=device)
    prompt = " ".join(["explain how to open the door of the house"] * 4)
    z = lm.encode([prompt])
    z = z[:, : args.lm_prompt].expand(args.lm_n, -1, -1).contiguous()
    noisy = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    lm.model.generation_config.eos_token_id = None        # always the full 32 tokens
    lm.eos = -1

    def plain():
        lm.model.generate(inputs_embeds=noisy, attention_mask=torch.ones(noisy.shape[:2], dtype=torch.long),
                          max_new_tokens=args.lm_tokens, min_new_tokens=args.lm_tokens, do_sample=False,
                          pad_token_id=0)

    with torch.inference_mode():
        for f in (lambda: lm.token_average(noisy), plain):  # warm-up
            f()
        t_cache = min(_timed(lm.token_average, noisy)[0] for _ in range(args.repeats))
        t_recompute = min(_timed(lm.token_average, noisy, use_cache=False)[0] for _ in range(args.repeats))
        t_plain = min(_timed(plain)[0] for _ in range(args.repeats))
    return {"kv_speedup": t_recompute / t_cache, "smoothed_over_plain": t_cache / t_plain,
            "lm_token_average_s": t_cache, "lm_recompute_s": t_recompute, "lm_plain_generate_s": t_plain,
            "lm_width": args.lm_width, "lm_layers": args.lm_layers, "lm_n": args.lm_n,
            "lm_tokens": args.lm_tokens, "lm_prompt_tokens": int(z.shape[1])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--repeats", type=int, default=3, help="timings per point; the minimum is kept")
    p.add_argument("--target-radius", type=float, default=0.5, help="sequential comparison: radius r")
    p.add_argument("--seq-points", type=int, default=100)
    p.add_argument("--seq-batch-size", type=int, default=100)
    p.add_argument("--give-up-alpha", type=float, default=0.01)
    p.add_argument("--seq-max-n", type=int, default=20_000, help="the sequential certifier's sample ceiling")
    p.add_argument("--lm-width", type=int, default=768)
    p.add_argument("--lm-layers", type=int, default=12)
    p.add_argument("--lm-heads", type=int, default=12)
    p.add_argument("--lm-n", type=int, default=16)
    p.add_argument("--lm-tokens", type=int, default=32)
    p.add_argument("--lm-prompt", type=int, default=32)
    p.add_argument("--skip-lm", action="store_true", help="skip the LLM token-averaging benchmark")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default="outputs/cache")
    p.add_argument("--out", default="outputs/bench/latest.json")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    import smoothgen_exp.training  # noqa: F401  (trains the oracle on first use)

    oracle = DigitClassifier(cache_dir=args.cache_dir, device=device)
    result = {
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
        **bench_certify(oracle, args, device),
        **bench_sequential(oracle, args, device),
        **({} if args.skip_lm else bench_token_average(args, device)),
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
    print(f"sequential vs fixed n={args.n} at r={args.target_radius} (sigma={args.sigma}, alpha={args.alpha}, "
          f"{result['seq_points']} points): certified accuracy {result['seq_certified_accuracy_at_r']:.3f} vs "
          f"{result['fixed_certified_accuracy_at_r']:.3f} (delta {result['seq_acc_delta']:+.3f}); samples "
          f"{result['seq_mean_samples']:.0f} = {result['seq_samples_ratio']:.3f} of {args.n}; "
          f"time ratio {result['seq_time_ratio']:.3f}")
    if not args.skip_lm:
        print(f"token-average smoothed decoding (GPT-2-small width {args.lm_width}x{args.lm_layers}, n={args.lm_n}, "
              f"{args.lm_tokens} tokens): kv_speedup {result['kv_speedup']:.2f} (cache {result['lm_token_average_s']:.2f}s "
              f"vs recompute {result['lm_recompute_s']:.2f}s); smoothed_over_plain {result['smoothed_over_plain']:.2f} "
              f"(plain batched generate {result['lm_plain_generate_s']:.2f}s)")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
