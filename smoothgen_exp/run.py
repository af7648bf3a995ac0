"""The pipeline of one run: items -> generate -> certify -> (attack) -> record.

Read top to bottom: `run` builds the parts from the config, takes the items `pack_items` at a time
through `evaluate_items` (encode them together, run each item's `sample_item` program with their
samples packed into shared generator calls, then `finish_item`: rows, metrics, attacks), and writes the
records, the summary and the logs. Every random draw of an item comes from a generator seeded by
(seed, item_id, stream), so rows do not depend on item order, packing, batch size, process count or
resume point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from smoothgen_exp.attacks.base import attack_reference
from smoothgen_exp.attacks.output_sets import output_set_distances
from smoothgen_exp.batching import Batcher, OOMGuard
from smoothgen_exp.certifiers.check import check_certificate
from smoothgen_exp.checks import (
    ceiling_summary,
    certified_ceiling,
    checked_certifier,
    oracle_naming_every_missing_weight,
)
from smoothgen_exp.config import refuse_existing_records, run_lock, validate
from smoothgen_exp.context import ItemContext
from smoothgen_exp.data.subsets import keep_baseline_correct
from smoothgen_exp.distributed import Ranks
from smoothgen_exp.models.protocol import EncodesItems
from smoothgen_exp.outcome import completed_summary, set_level_quality, warn_violations
from smoothgen_exp.packing import Draw, Program, alongside, program_of, run_programs
from smoothgen_exp.provenance import config_hash, git_sha, run_id_of, write_provenance
from smoothgen_exp.records import (
    RecordWriter,
    choice_columns,
    read_records,
    recorded_items,
    summarize,
    write_summary,
)
from smoothgen_exp.report import print_summary
from smoothgen_exp.smoothing.protocol import FittedNoiseLaw
from smoothgen_exp.training.checkpoint import training_progress

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """The instantiated config groups of a run."""

    model: Any
    dataset: Any
    smoothing: Any
    aggregator: Any
    certifier: Any
    attack: Any
    oracle: Any
    metrics: Any
    logger: Any
    ceiling: float | None = None      # max_certifiable_radius of this configuration (None: no radius)


def build_parts(cfg: DictConfig, device: torch.device, is_main: bool = True) -> Parts:
    """The run's parts from its config; loading and training bars follow `progress` (runner and bench)."""
    with training_progress(cfg.progress):
        return _build_parts(cfg, device, is_main)


def _build_parts(cfg: DictConfig, device: torch.device, is_main: bool) -> Parts:
    certifier = checked_certifier(cfg)           # the parts fit and can certify, before any weights load
    smoothing = instantiate(cfg.smoothing)
    needs_setup = isinstance(smoothing, FittedNoiseLaw)    # fitted on the calibration split
    ceiling = None if needs_setup else certified_ceiling(certifier, smoothing, cfg.summary_radii)
    import smoothgen_exp.training  # noqa: F401  (weights missing from the cache train on first use)

    runtime = {"cache_dir": cfg.cache_dir, "device": device}
    oracle = oracle_naming_every_missing_weight(lambda: instantiate(cfg.oracle, **runtime),   # first: the default
                                                lambda: instantiate(cfg.model, **runtime))    # model trains on it
    # booster=gsb: a trained plug-in around a feature encoder (boosters/; certified unchanged). Every
    # generation runs in chunks that fit: `certifier.batch_size=auto` backs off on out-of-memory
    booster, encoder = instantiate(cfg.booster, **runtime), instantiate(cfg.model, **runtime)
    model = OOMGuard(booster.around(encoder, cfg.smoothing.sigma, cfg.model), Batcher(cfg.certifier.batch_size))
    parts = Parts(model=model, dataset=instantiate(cfg.dataset), smoothing=smoothing,
                  aggregator=instantiate(cfg.aggregator), certifier=certifier, attack=instantiate(cfg.attack),
                  oracle=oracle, metrics=instantiate(cfg.metrics), logger=instantiate(cfg.logger))
    if needs_setup:
        parts.smoothing.setup(parts.model, parts.dataset)
        ceiling = certified_ceiling(certifier, parts.smoothing, cfg.summary_radii)
    parts.ceiling = ceiling
    if parts.metrics.enabled:                 # reference statistics (e.g. real images for FID)
        parts.metrics.setup(parts.oracle, parts.dataset, parts.model, reference=is_main)
    return parts


def encode_items(model, dataset, items) -> Sequence[torch.Tensor]:
    """The items' conditions in the noised space, in one call: embeddings of their prompts, or their
    images (VLMs); a tensor [B, ...] or, for conditions of different shapes (a language model's
    prompts), a list. An item's condition does not depend on the items encoded with it."""
    if isinstance(model, EncodesItems):
        return model.encode_items(items, getattr(dataset, "images", None))
    return model.encode([item.condition for item in items])


def item_contexts(items: list, parts: Parts, cfg: DictConfig, device: torch.device) -> list[ItemContext]:
    """The items' conditions, encoded in one call, each with its noise law and random streams."""
    xs = [x.to(device) for x in encode_items(parts.model, parts.dataset, items)]
    return [ItemContext(item, x, parts.model, parts.oracle, parts.smoothing.at(x, parts.model), cfg.seed,
                        parts.certifier.batch_size, parts.aggregator, parts.smoothing)
            for item, x in zip(items, xs, strict=True)]


def sample_item(ctx: ItemContext, parts: Parts) -> Program:
    """What one item samples, as one program (smoothgen_exp.packing): the baseline generation (one, at
    the clean condition), the certificate, and the smoothed output (which may reuse the certificate's
    samples: aggregators.majority)."""
    ctx.phase = "certify"
    baseline, certificate = yield from alongside(Draw("baseline", 1, outputs=True, noisy=False, votes=True, phase="baseline"),
                                                 parts.certifier.certify_program(ctx))
    ctx.phase = "aggregate"
    aggregated, smoothed_out = yield from program_of(parts.aggregator, "aggregate", ctx)
    return baseline, aggregated, smoothed_out, certificate


@torch.inference_mode()
def evaluate_items(items: list, parts: Parts, cfg: DictConfig, common: dict, device: torch.device) -> list:
    """Rows and extras of several items, their samples packed into shared generator calls (identical
    to evaluating them one by one: `pack_items=1`)."""
    t0 = time.perf_counter()
    ctxs = item_contexts(items, parts, cfg, device)
    encode_s = (time.perf_counter() - t0) / len(items)
    sampled = run_programs([(ctx, sample_item(ctx, parts)) for ctx in ctxs])
    for ctx in ctxs:
        ctx.streams.clear()             # their noise buffers; metrics and attacks draw their own streams
    return [finish_item(ctx, parts, cfg, common, encode_s, *got) for ctx, got in zip(ctxs, sampled, strict=True)]


def finish_item(ctx: ItemContext, parts: Parts, cfg: DictConfig, common: dict, encode_s: float,
                baseline_samples, aggregated: dict, smoothed_out, certificate: dict) -> tuple[list, Any]:
    """Baseline and smoothed rows of one item from its samples, then its quality metrics and attacks.
    Extras: the preview outputs and, under an attack, the clean and attacked outputs of each variant."""
    item, noise, seconds = ctx.item, ctx.noise, ctx.timings
    # columns every row of the item shares; the certifier owns n0, n and alpha (Certifier.columns)
    row = {**common, **noise.columns(), "item_id": item.item_id, "condition": item.condition,
           "seed": cfg.seed, "label": item.label, **parts.certifier.run_columns(), "time_encode_s": encode_s}
    correct = correctness(item, parts.oracle)
    baseline_out, baseline_pred = baseline_samples.outputs[0], int(baseline_samples.labels[0])
    baseline = {**row, "variant": "baseline", "prediction": baseline_pred, "correct": correct(baseline_pred),
                "certified": False, "abstained": False, "abstain_reason": "", "samples_used": 1,
                "time_generate_s": seconds.get("baseline", 0.0)}
    baseline["time_total_s"] = encode_s + baseline["time_generate_s"]

    smoothed = {**row, "variant": "smoothed", **aggregated, "time_aggregate_s": seconds.get("aggregate", 0.0)}
    smoothed["smoothed_correct"] = correct(smoothed["smoothed_prediction"])
    if parts.metrics.enabled:
        t3 = time.perf_counter()
        quality = parts.metrics.item(ctx, parts.aggregator, aggregated)
        baseline.update(quality["baseline"])
        smoothed.update(quality["smoothed"], time_metrics_s=time.perf_counter() - t3)
    # valid only if both the noise law's and the certifier's assumptions hold (SPEC 4, validity flag)
    certificate["certificate_valid"] = bool(row["certificate_valid"] and certificate.get("certificate_valid", True))
    smoothed.update(certificate, time_certify_s=seconds.get("certify", 0.0))
    if "prediction" in smoothed:
        smoothed["correct"] = correct(smoothed["prediction"])
    smoothed["time_total_s"] = encode_s + sum(v for k, v in seconds.items() if k != "baseline") \
        + smoothed.get("time_metrics_s", 0.0)
    smoothed["batch_size"] = parts.model.batcher.size   # the generation batch size in effect (after back-off)
    attacked = attack_rows(ctx, parts, baseline, smoothed, baseline_pred) if parts.attack.enabled else {}
    if isinstance(baseline_out, str):
        baseline["output_text"] = baseline_out
    is_image = isinstance(baseline_out, torch.Tensor) and baseline_out.dim() == 3
    preview = (baseline_out.cpu(), smoothed_out) if is_image else None
    return [baseline, smoothed], {"preview": preview, "attacked": attacked}


def correctness(item, oracle):
    """`correct` needs ground truth: an oracle without classes (answer equivalence) has none (None)."""
    has_classes = getattr(oracle, "has_classes", True)
    return lambda prediction: prediction == item.label if has_classes else None


def attack_rows(ctx, parts: Parts, baseline: dict, smoothed: dict, baseline_pred: int) -> dict:
    """The same budget against both variants; the smoothed one gets a sound test of its certificate at the
    attacked point (certifiers.check). Returns {variant: (clean output, attacked output)}."""
    attacked = {}
    for target, variant, ref in ((baseline, "baseline", baseline_pred), (smoothed, "smoothed", attack_reference(smoothed))):
        result = parts.attack.run(ctx, variant, ref)
        attacked[variant] = (result.pop("clean_output"), result.pop("attacked_output"))
        z = result.pop("attacked_condition")
        if variant == "smoothed":
            result.update(check_certificate(parts.certifier, ctx, smoothed, z, parts.attack.eval_n,
                                            parts.attack.eval_alpha))
        target.update(result)
    return attacked


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict | None:
    """Run one job; returns the summary (None on ranks other than 0). `run_dir` defaults to Hydra's."""
    validate(cfg)
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    chash, run_id = config_hash(cfg), run_id_of(cfg)
    if not cfg.resume:                           # a directory with records is refused before anything loads
        refuse_existing_records(run_dir)
    elif (summary := completed_summary(run_dir, chash, run_id, cfg)) is not None:   # a finished job: shown again
        return summary
    ranks = Ranks(cfg.device)
    try:
        with run_lock(run_dir, ranks.is_main):
            return _run(cfg, run_dir, chash, run_id, ranks)
    finally:
        ranks.close()


def _run(cfg: DictConfig, run_dir: Path, chash: str, run_id: str, ranks: Ranks) -> dict | None:
    device = ranks.device
    choices = choice_columns(cfg)
    common = {"run_id": run_id, "config_hash": chash, "git_sha": git_sha(), **choices}
    log.info("run %s in %s on %s (rank %d of %d)", run_id, run_dir, device, ranks.rank, ranks.world)

    t_setup = time.perf_counter()
    with ranks.main_process_first():           # rank 0 trains cached weights
        parts = build_parts(cfg, device, ranks.is_main)
    log.info("setup (weights, encoders) %.1fs", time.perf_counter() - t_setup)
    if hasattr(parts.model, "columns"):          # how the model is conditioned (a language model's noise_on)
        common.update(parts.model.columns())
    if cfg.eval_items == "baseline_correct":
        parts.dataset = keep_baseline_correct(parts.dataset, parts.oracle,
                                              lambda items: item_contexts(items, parts, cfg, device),
                                              cfg.pack_items, cfg.progress)

    done = recorded_items(run_dir, chash, cfg.resume)
    if done:
        log.info("resuming: %d items already recorded in %s", len(done), run_dir)
    ranks.wait()                                 # every rank has read the same `done` before anyone writes
    todo = ranks.split([item for item in parts.dataset if item.item_id not in done])
    if ranks.is_main:
        provenance = write_provenance(run_dir, cfg, run_id, chash, device, ranks.world, len(done))
        parts.logger.start(run_dir, run_id, {**OmegaConf.to_container(cfg, resolve=True),
                                             "provenance": provenance})

    writer = RecordWriter(run_dir, rank=ranks.rank, flush_every=cfg.flush_every)
    previews, attacked = [], {"baseline": [], "smoothed": []}
    t_loop = time.perf_counter()
    bar = tqdm(total=len(todo), desc="certify", unit="item", disable=not cfg.progress or not ranks.is_main)
    for start in range(0, len(todo), cfg.pack_items):
        group = todo[start:start + cfg.pack_items]
        for item, (rows, extras) in zip(group, evaluate_items(group, parts, cfg, common, device), strict=True):
            writer.add(rows)
            if extras["preview"] is not None and len(previews) < 10:
                previews.append((item, rows[0]["prediction"], rows[1], *extras["preview"]))
            for variant, pair in extras["attacked"].items():
                attacked[variant].append(pair)
        bar.update(len(group))
    bar.close()
    writer.flush()
    loop_s = time.perf_counter() - t_loop
    ranks.wait()                                 # every part is on disk

    records = read_records(run_dir)
    new_items = len(parts.dataset) - len(done)   # the same on every rank: the FID sync is collective
    quality = set_level_quality(parts.metrics, records, new_items, len(done))
    per_rank = ranks.gather(attacked)
    attacked = {v: [pair for pairs in per_rank for pair in pairs[v]] for v in attacked}
    loop_s = max(ranks.gather(loop_s))
    if not ranks.is_main:
        return None

    summary = {"run_id": run_id, "config_hash": chash, **choices, "sigma": parts.smoothing.sigma,
               "n0": parts.certifier.n0, "n": parts.certifier.n, "alpha": parts.certifier.alpha,
               **ceiling_summary(parts.certifier, parts.smoothing, parts.ceiling),
               **summarize(records, list(cfg.summary_radii), parts.certifier),
               "seconds_per_item": loop_s / max(1, new_items),
               "world_size": ranks.world, "items_total": getattr(parts.dataset, "items_total", len(parts.dataset)),
               **quality}
    if parts.attack.enabled:
        summary.update(output_set_distances(attacked, parts.metrics))
    write_summary(run_dir, summary)              # last: the completion marker
    print_summary(summary, title=f"{choices['model']} σ={parts.smoothing.sigma:g} n={parts.certifier.n} "
                                 f"α={parts.certifier.alpha:g}", records=records, run_dir=run_dir)
    from smoothgen_exp.plots import write_figures

    write_figures(run_dir, previews, attacked)
    if summary.get("certificate_violations"):
        warn_violations(summary["certificate_violations"], run_dir)
    parts.logger.log_rows(records)
    parts.logger.log_summary(summary)
    parts.logger.finish()
    return summary
