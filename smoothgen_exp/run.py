"""The pipeline of one run: items -> generate -> certify -> (attack) -> record.

Read top to bottom: `run` builds the parts from the config, loops over items with `evaluate_item`,
and writes the records, the summary and the logs. Every random draw of an item comes from a generator
seeded by (seed, item_id, stream), so rows do not depend on item order, process count or resume point.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from smoothgen_exp.config import GROUPS, validate
from smoothgen_exp.devices import resolve_device
from smoothgen_exp.provenance import config_hash, git_sha
from smoothgen_exp.records import RecordWriter, print_summary, read_records, summarize, write_summary
from smoothgen_exp.seeding import item_seed

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
    logger: Any


def build_parts(cfg: DictConfig, device: torch.device) -> Parts:
    runtime = {"cache_dir": cfg.cache_dir, "device": device}
    oracle = instantiate(cfg.oracle, **runtime)   # first: the default model trains against it
    return Parts(model=instantiate(cfg.model, **runtime), dataset=instantiate(cfg.dataset),
                 smoothing=instantiate(cfg.smoothing), aggregator=instantiate(cfg.aggregator),
                 certifier=instantiate(cfg.certifier), attack=instantiate(cfg.attack), oracle=oracle,
                 logger=instantiate(cfg.logger))


def make_base(parts: Parts, seed: int, device: torch.device, aggregator=None):
    """The base classifier f(z) = O(G(z)): generate from noised conditions, classify the outputs.

    G's own randomness (e.g. the latent) comes from a generator seeded once per item and stream,
    independent of the smoothing noise. If an aggregator is given it sees every batch.
    """
    gen = torch.Generator(device=device).manual_seed(seed)

    def base(z: torch.Tensor) -> torch.Tensor:
        outputs = parts.model.generate(z, gen)
        labels = parts.oracle.classify(outputs)
        if aggregator is not None:
            aggregator.update(outputs, labels)
        return labels

    return base


@torch.inference_mode()
def evaluate_item(item, parts: Parts, cfg: DictConfig, common: dict, device: torch.device) -> tuple[list, Any]:
    """Baseline and smoothed rows of one item, and the smoothed output (for the preview)."""
    seed = lambda stream: item_seed(cfg.seed, item.item_id, stream)  # noqa: E731
    t0 = time.perf_counter()
    x = parts.model.encode([item.condition])[0].to(device)
    row = {**common, **parts.smoothing.columns(), "item_id": item.item_id, "condition": item.condition,
           "seed": cfg.seed, "label": item.label, "time_encode_s": time.perf_counter() - t0}

    # Baseline: the plain generator, one generation, no noise.
    t1 = time.perf_counter()
    baseline_out = parts.model.generate(x[None], torch.Generator(device=device).manual_seed(seed("baseline")))
    baseline_pred = int(parts.oracle.classify(baseline_out)[0])
    baseline = {**row, "variant": "baseline", "prediction": baseline_pred,
                "correct": baseline_pred == item.label, "certified": False, "abstained": False,
                "abstain_reason": "", "samples_used": 1, "time_generate_s": time.perf_counter() - t1,
                "n0": parts.certifier.n0, "n": parts.certifier.n, "alpha": parts.certifier.alpha}
    baseline["time_total_s"] = baseline["time_encode_s"] + baseline["time_generate_s"]

    # Smoothed: PREDICT (whose noisy generations also feed the aggregator), then CERTIFY.
    sigma, k = parts.smoothing.sigma, parts.oracle.num_classes
    parts.aggregator.reset(k)
    smoothed = {**row, "variant": "smoothed"}
    base = make_base(parts, seed("predict/model"), device, parts.aggregator)
    smoothed.update(parts.certifier.predict(x, base, sigma, k, seed("predict/noise")))
    if "smoothed_prediction" in smoothed:
        smoothed["smoothed_correct"] = smoothed["smoothed_prediction"] == item.label
    base = make_base(parts, seed("certify/model"), device)
    smoothed.update(parts.certifier.certify(x, base, sigma, k, seed("certify/noise")))
    smoothed["correct"] = smoothed["prediction"] == item.label
    smoothed["time_total_s"] = smoothed["time_encode_s"] + sum(
        smoothed.get(k, 0.0) for k in ("time_predict_s", "time_certify_s"))
    return [baseline, smoothed], (baseline_out[0].cpu(), parts.aggregator.result()[1])


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Run one job; returns the summary. `run_dir` defaults to Hydra's output directory."""
    validate(cfg)
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    device = resolve_device(cfg.device)
    chash = config_hash(cfg)
    run_id = cfg.run_id or chash[:12]
    choices = _choices(cfg)
    common = {"run_id": run_id, "config_hash": chash, "git_sha": git_sha(), **choices}
    log.info("run %s in %s on %s", run_id, run_dir, device)

    t_setup = time.perf_counter()
    parts = build_parts(cfg, device)
    log.info("setup (weights, encoders) %.1fs", time.perf_counter() - t_setup)
    parts.logger.start(run_dir, run_id, OmegaConf.to_container(cfg, resolve=True))

    writer = RecordWriter(run_dir, flush_every=cfg.flush_every)
    previews = []
    t_loop = time.perf_counter()
    for item in tqdm(parts.dataset, desc="certify", unit="item", disable=not cfg.progress):
        rows, preview = evaluate_item(item, parts, cfg, common, device)
        writer.add(rows)
        if len(previews) < 10:
            previews.append((item, rows[0]["prediction"], rows[1]["prediction"], *preview))
    writer.flush()
    loop_s = time.perf_counter() - t_loop

    records = read_records(run_dir)
    summary = {"run_id": run_id, "config_hash": chash, **choices, "sigma": parts.smoothing.sigma,
               "n0": parts.certifier.n0, "n": parts.certifier.n, "alpha": parts.certifier.alpha,
               **summarize(records, list(cfg.summary_radii)),
               "seconds_per_item": loop_s / max(1, len(parts.dataset))}
    write_summary(run_dir, summary)
    print_summary(summary, title=f"{choices['model']} σ={parts.smoothing.sigma:g} "
                                 f"n={parts.certifier.n} α={parts.certifier.alpha:g}  ({run_dir})")
    if previews:
        from smoothgen_exp.plots import preview_grid

        preview_grid(previews, run_dir / "samples.png")
    parts.logger.log_rows(records)
    parts.logger.log_summary(summary)
    parts.logger.finish()
    return summary


def _choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen in each group (Hydra's runtime choices, else the target's class name)."""
    hydra_choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {g: str(hydra_choices.get(g) or cfg[g]._target_.rsplit(".", 1)[-1])
            for g in GROUPS if g != "logger"}
