"""aggregator=majority: the smoothed output is the majority oracle class over noisy generations.

The vote is Cohen et al.'s PREDICT (two-sided binomial test of the top two classes at alpha; it abstains
when they cannot be separated). The smoothed generation shown for an item is the first generation of
the winning class. Streaming: only vote counts and one generation per class are kept.
"""

from __future__ import annotations

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.core import prediction
from smoothgen_exp.packing import Program, class_counts, output_batches, run_one


@configured
class Majority:
    def __init__(self, n: int, alpha: float):
        self.n, self.alpha = int(n), float(alpha)

    def aggregate(self, ctx) -> tuple[dict, torch.Tensor | None]:
        """(columns, smoothed generation) for one item, on its own."""
        return run_one(ctx, self.aggregate_program(ctx))

    def aggregate_program(self, ctx) -> Program:
        """The same as a sampling program (smoothgen_exp.packing): the runner packs many items' draws."""
        counts = torch.zeros(ctx.num_classes, dtype=torch.long)
        first: dict[int, torch.Tensor] = {}
        for draw in output_batches(self.n, ctx.batch_size, "aggregate"):
            got = yield draw
            counts += class_counts(ctx, got)
            for c in got.labels.unique().tolist():
                if c not in first:
                    out = got.outputs[int((got.labels == c).nonzero()[0])]
                    first[c] = out.detach().cpu().clone() if isinstance(out, torch.Tensor) else out
        pred = prediction(counts, self.alpha)
        representative = first.get(int(counts.argmax()))
        columns = {"smoothed_prediction": pred.prediction, "smoothed_class": int(counts.argmax()),
                   "predict_n": self.n,
                   "predict_count_a": pred.count_a, "predict_count_b": pred.count_b,
                   "predict_pvalue": pred.p_value}
        if isinstance(representative, str):      # text generators: the answer the smoothed model gives
            columns["output_text"] = representative
        return columns, representative

    @torch.inference_mode()
    def samples(self, ctx, k: int, aggregated: dict, max_draws: int = 20_000) -> torch.Tensor:
        """k outputs of the smoothed generator: noisy generations of the majority class.

        Fewer than k when the class is that rare within max_draws draws.
        """
        cls, kept, drawn = aggregated["smoothed_class"], [], 0
        for out in ctx.outputs(max_draws, "quality/smoothed"):
            labels = ctx.oracle.classify(out)
            kept.append(out[labels == cls])
            drawn += len(out)
            if sum(len(t) for t in kept) >= k:
                break
        return torch.cat(kept)[:k]
