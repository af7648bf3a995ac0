"""aggregator=mean: the smoothed output is the pixel-wise mean generation h_hat = (1/n) sum G(x + eta_i).

It is the Monte Carlo estimate of h(x) = E[G(x + eta)], whose movement `certifier=output_bound` bounds.
The smoothed prediction is the oracle's class of the mean image. Streaming: a running sum only.
"""

from __future__ import annotations

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.packing import Program, output_batches, run_one


@configured
class Mean:
    requires = {"model": "tensor outputs (images or features)"}

    def __init__(self, n: int):
        self.n = int(n)

    def aggregate(self, ctx, stream: str = "aggregate") -> tuple[dict, torch.Tensor]:
        return run_one(ctx, self.aggregate_program(ctx, stream))

    def aggregate_program(self, ctx, stream: str = "aggregate") -> Program:
        """(columns, mean generation) as a sampling program (smoothgen_exp.packing)."""
        total = None
        for draw in output_batches(self.n, ctx.batch_size, stream, classify=False):
            part = (yield draw).outputs.sum(0, dtype=torch.float64)
            total = part if total is None else total + part
        mean = (total / self.n).to(ctx.x.dtype)
        with torch.inference_mode():
            pred = int(ctx.oracle.classify(mean[None])[0])
        return {"smoothed_prediction": pred, "predict_n": self.n}, mean.cpu()

    def samples(self, ctx, k: int, aggregated: dict) -> torch.Tensor:
        """k smoothed outputs: mean images over independent sets of n draws."""
        return torch.stack([self.aggregate(ctx, f"quality/smoothed/{j}")[1] for j in range(k)])
