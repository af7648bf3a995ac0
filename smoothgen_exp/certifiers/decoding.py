"""certifier=decoding: certified smoothed greedy decoding (SPEC C5).

For a fixed prefix y_<t, p_t(v) = E_eta[softmax(LM(e(x) + eta, y_<t))_v] is a smoothed [0, 1]-valued
function of x, so Phi^-1(p_t(v)) is (1/sigma)-Lipschitz (Salman et al. 2019). The greedy token A = y_t
stays the argmax for ||delta|| < R_t = sigma/2 (Phi^-1(pA_lower,t) - Phi^-1(pB_upper,t)), and by
induction on the prefix the whole greedy sequence stays for ||delta|| < min_t R_t.

1. selection: token-averaged greedy decoding with n0 noisy copies fixes the sequence y (T tokens);
2. estimation: n fresh copies score y by teacher forcing; for each step a lower bound pA_lower,t on the
   mean of the [0, 1]-valued probabilities of y_t (`bound`: betting, Waudby-Smith & Ramdas, the default;
   empirical Bernstein, Maurer & Pontil; or Hoeffding) at level alpha/T
   (union bound over steps); pB_upper,t = 1 - pA_lower,t (all other tokens share the remaining mass),
   so R_t = sigma Phi^-1(pA_lower,t) when pA_lower,t > 1/2, else 0.
Noise is drawn once per copy for the whole sequence. Selection and estimation samples are disjoint, so
the bounds are not conditioned on data they were chosen from. Records: per-step radii, the sequence
radius (`radius`), the selected sequence and its length (`decoding_text`, `certified_tokens`), and the
same text as `certified_text` only where the row certifies it (radius > 0; None where it abstains). These
are kept apart from the aggregator's `output_text`, `noise_per` and `tv_shift_factor`, which describe
the aggregator's decoder: one row never mixes two decoders.
"""

from __future__ import annotations

import torch

from smoothgen_exp.certifiers.base import Certifier
from smoothgen_exp.config import configured
from smoothgen_exp.core import noisy_batches
from smoothgen_exp.stats import MEAN_BOUNDS, max_mean_lower, mean_lower


def step_prob_batches(ctx, tokens, n: int, batch_size: int, centre: torch.Tensor, stream: str):
    """Teacher-forced probabilities [b, T] of the fixed `tokens` at n noisy copies of `centre`, batch by
    batch, the noise from the one stream `stream` (`core.noisy_batches`: no draw depends on batch_size)."""
    for noisy in noisy_batches(centre, n, batch_size, ctx.noise, ctx.generator(stream)):
        yield ctx.model.step_probs(noisy, tokens).double().cpu()


@configured
class DecodingCertifier(Certifier):
    name = "decoding"
    requires = {"model": "token-averaged decoding (a language model)"}
    classifies = False
    certifies = "sequence"

    def __init__(self, n0: int, n: int, alpha: float, batch_size: int | str,
                 bound: str):
        super().__init__(n0, n, alpha, batch_size)
        if bound not in MEAN_BOUNDS:
            raise ValueError(f"certifier.bound={bound!r} must be one of {', '.join(MEAN_BOUNDS)}")
        self.bound = bound

    def max_lower_bound(self, n: int) -> float:
        """Ceiling of pA_lower,t at the level alpha (one step; T steps at alpha/T give less)."""
        return max_mean_lower(n, self.alpha, self.bound)

    @torch.inference_mode()
    def _certify(self, ctx) -> dict:
        from smoothgen_exp.aggregators.token_average import TokenAverage

        decoder = TokenAverage(n=self.n0)
        tokens, _ = decoder.decode(ctx, "decoding/select", self.n0)
        ctx.evidence["tokens"] = tokens
        steps = len(tokens)
        # [n, T] per-copy probabilities, in draw order (the betting bound's input)
        kept = step_prob_batches(ctx, tokens, self.n, self.batch_size, ctx.x, "decoding/estimate/noise")
        probs = torch.cat(list(kept)).numpy().reshape(self.n, steps)
        mean = probs.mean(axis=0)
        # one bound per step at alpha / T (a union bound over the steps)
        lower = [float(p) for p in mean_lower(probs, self.alpha / steps, self.bound)] if steps else []
        radii = [ctx.noise.radius(p) if p > 0.5 else 0.0 for p in lower]
        radius = min(radii) if radii else 0.0
        text = ctx.model.decode(tokens)
        # the text is a certificate only where every step is (an abstaining row's sequence is not certified)
        return {"decoding_text": text, "certified_text": text if radius > 0 else None, "certified_tokens": steps,
                "decoding_step_p_hat": [float(m) for m in mean], "decoding_step_p_lower": lower,
                "decoding_step_radii": radii, "radius": radius, "certified": radius > 0,
                "abstained": radius <= 0,
                "abstain_reason": "" if radius > 0 else "some step has pA_lower <= 1/2",
                "samples_used": self.n0 + self.n}
