"""Evaluation subsets that depend on the model: `eval_items=baseline_correct` keeps the items whose
baseline output (one generation at the clean condition, the very draw of the item's baseline row) the
oracle labels correct, which is how papers evaluate a real model (certified accuracy among the
questions it answers correctly to begin with)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

from tqdm.auto import tqdm

from smoothgen_exp.errors import ConfigError, SmoothgenError
from smoothgen_exp.packing import Draw, Program, run_programs

log = logging.getLogger(__name__)


def baseline_label(ctx) -> Program:
    """The oracle's label of the item's baseline output."""
    samples = yield Draw("baseline", 1, noisy=False, votes=True)
    return int(samples.labels[0])


def refuse_without_ground_truth(oracle, name: str) -> None:
    """eval_items=baseline_correct needs an oracle (a class or an instance) whose classes are ground truth
    (`has_classes`); `name` is how the message names it. The runner checks it before any weights load."""
    if not getattr(oracle, "has_classes", True):
        raise ConfigError(f"eval_items=baseline_correct: needs an oracle whose classes are ground truth, and "
                          f"oracle={name} has none (answers are only equivalent or not); set eval_items=all")


def keep_baseline_correct(dataset, oracle, contexts: Callable[[list], list], pack_items: int, progress: bool = True):
    """A copy of `dataset` holding only its items with a correct baseline output (`items_total`: how
    many it had). `contexts(items)` encodes items into ItemContexts (run.item_contexts); their baseline
    generations are packed like the run's."""
    refuse_without_ground_truth(oracle, type(oracle).__name__)
    items, kept = list(dataset), []
    for start in tqdm(range(0, len(items), pack_items), desc="baseline answers", leave=False, disable=not progress):
        group = items[start:start + pack_items]
        labels = run_programs([(ctx, baseline_label(ctx)) for ctx in contexts(group)])
        kept += [item for item, label in zip(group, labels, strict=True) if label == item.label]
    log.info("eval_items=baseline_correct: %d of %d items have a correct baseline output", len(kept), len(items))
    if items and not kept:
        raise SmoothgenError(f"eval_items=baseline_correct: no item's baseline output is correct (0 of "
                             f"{len(items)}), so there is nothing to certify; set eval_items=all")
    subset = copy.copy(dataset)
    subset.items, subset.items_total = kept, len(items)
    return subset
