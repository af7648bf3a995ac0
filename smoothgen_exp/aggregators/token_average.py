"""aggregator=token_average: the smoothed LLM decoder (SmoothGen 2.5.2).

n noisy copies of the prompt embedding run as one batch with one KV cache; at every step their
next-token distributions are averaged and one token (greedy, or sampled) is appended to all copies.
`noise: sequence` draws the prompt noise once per copy for the whole sequence; `noise: step` draws
fresh noise at every step, which costs a prompt recomputation per step.

The text is a function of every noise draw behind it, so a shift of the condition acts once per draw
(SPEC C5): TV(law at x, law at x + delta) <= 2 Phi(f ||delta|| / (2 sigma)) - 1 with the factor
f = sqrt(n) for `sequence` (n copies) and f = sqrt(n * max_new_tokens) for `step`. The number of steps a
run happens to take is random (EOS) and cannot be used. The row records f as `tv_shift_factor`.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.config import configured
from smoothgen_exp.core import NoiseStream


def tv_shift_factor(noise_mode: str, n: int, max_new_tokens: int) -> float:
    """How many times a condition shift acts on one token-averaged output: sqrt(number of noise draws)."""
    return math.sqrt(n if noise_mode == "sequence" else n * max_new_tokens)


@configured
class TokenAverage:
    requires = {"model": "token-averaged decoding (a language model)"}

    def __init__(self, n: int, greedy: bool, noise: str, use_cache: bool):
        if noise not in ("sequence", "step"):
            raise ValueError("noise must be sequence | step")
        self.n, self.greedy, self.noise_mode, self.use_cache = int(n), bool(greedy), noise, bool(use_cache)

    def tv_shift(self, model) -> float:
        """f of this decoder's output: TV between its output laws <= 2 Phi(f ||delta|| / (2 sigma)) - 1."""
        return tv_shift_factor(self.noise_mode, self.n, model.max_new_tokens)

    def noisy_copies(self, ctx, stream: str, n: int) -> torch.Tensor:
        return NoiseStream(ctx.x, ctx.noise, ctx.generator(f"{stream}/noise")).take(n)

    @torch.inference_mode()
    def decode(self, ctx, stream: str, n: int) -> tuple[list[int], torch.Tensor]:
        model = ctx.model
        if self.noise_mode == "sequence":
            return model.token_average(self.noisy_copies(ctx, stream, n), ctx.generator(f"{stream}/model"),
                                       use_cache=self.use_cache, greedy=self.greedy)
        tokens, dists = [], []               # fresh noise at every step: recompute the prompt each time
        gen = ctx.generator(f"{stream}/model")
        for t in range(model.max_new_tokens):
            z = self.noisy_copies(ctx, f"{stream}/step{t}", n)
            # the tokens so far follow the template around the noisy prompt (a suffix after them was wrong)
            tok, dist = model.token_average(z, gen, steps=1, use_cache=False, greedy=self.greedy, continued=tokens)
            tokens += tok
            dists.append(dist[0])
            if tok[0] == model.eos:
                break
        return tokens, torch.stack(dists)

    def aggregate(self, ctx) -> tuple[dict, str]:
        tokens, dists = self.decode(ctx, "aggregate", self.n)
        text = ctx.model.decode(tokens)
        pred = int(ctx.oracle.classify([text])[0])
        factor = self.tv_shift(ctx.model)
        return {"smoothed_prediction": pred, "smoothed_class": pred, "predict_n": self.n, "output_text": text,
                "output_tokens": len(tokens), "noise_per": self.noise_mode, "tv_shift_factor": factor}, text
