"""aggregator=majority: the smoothed output is the majority oracle class over noisy generations.

The vote is Cohen et al.'s PREDICT (two-sided binomial test of the top two classes at alpha; it abstains
when they cannot be separated). The smoothed generation shown for an item is the first generation of
the winning class. Streaming: only vote counts and one generation per class are kept.

`reuse=true` (the default) with `certifier=cohen` takes the vote from the certificate's n estimation
samples instead of drawing n more (issue 13: 110 instead of 210 samples per item at n0 = 10, n = 100).
Why that is sound, in SPEC's terms: CERTIFY's n estimation samples are i.i.d. draws of f(x + eta), fresh
after the n0 selection samples, and their law does not depend on the c_A those selected. PREDICT's
guarantee (it returns a class other than g(x) with probability at most alpha) holds for any n i.i.d.
draws, so it holds on these; the certificate is computed exactly as before and its guarantee is
untouched. Both guarantees are claims of the smoothed row, so the row's `confidence` is the union bound
1 - alpha_certifier - alpha (`claim_alpha`), with or without reuse (found by review: the column had
said 1 - alpha_certifier, and a two-class case failed one or the other at 0.056 against 0.05). The
smoothed output is a display, not a certified object. Other certifiers' samples are not reused: the
sequential certifier's are optionally stopped (a binomial test on them would not be valid), and
`predict_reused` says which samples a row used.
"""

from __future__ import annotations

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.core import prediction
from smoothgen_exp.packing import Draw, Program, class_counts, run_one


@configured
class Majority:
    def __init__(self, n: int, alpha: float, reuse: bool):
        self.n, self.alpha, self.reuse = int(n), float(alpha), bool(reuse)

    @property
    def claim_alpha(self) -> float:
        """PREDICT's guarantee fails with at most this probability (counted in the row's confidence)."""
        return self.alpha

    def aggregate(self, ctx) -> tuple[dict, torch.Tensor | None]:
        """(columns, smoothed generation) for one item, on its own."""
        return run_one(ctx, self.aggregate_program(ctx))

    def aggregate_program(self, ctx) -> Program:
        """The same as a sampling program (smoothgen_exp.packing): the runner packs many items' draws."""
        if self.reuse and "estimation" in ctx.evidence:          # the certificate's n estimation samples
            (counts, first), reused = ctx.evidence["estimation"], True
        else:
            got = yield Draw("aggregate", self.n, firsts=True)
            counts, first, reused = class_counts(ctx, got), got.firsts, False
        pred = prediction(counts, self.alpha)
        representative = first.get(int(counts.argmax()))
        columns = {"smoothed_prediction": pred.prediction, "smoothed_class": int(counts.argmax()),
                   "predict_n": int(counts.sum()), "predict_reused": reused,
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
