"""How an attack's result is judged (`Judge`, which `attacks.base.Victim` inherits): at the final condition
z, with the real variant (the smoothed PREDICT, never the attack's surrogate), beside the same judge at x.

Success: flip/event: the variant's class at z leaves the reference (or hits the target) / the event
happens, not at x; distance: output shift >= shift_threshold; feature: cosine <= cos_threshold;
latent/reconstruction: the class leaves the reference. A class verdict is the same judge at z and at x
(`attack_clean_class`; the smoothed PREDICT with the same eval_n and draws): it leaves the reference only
where the judge keeps it at x, and reaches a target only where x is not there already, so an unmoved
attack never succeeds. Leaving includes the smoothed PREDICT abstaining at z (`attack_abstained`).

The event on the smoothed generator (P(oracle class != label) > 1/2) is a decision at eval_alpha, as
PREDICT's is: it happens at z when a one-sided Clopper-Pearson lower bound on its probability from the
judge's eval_n votes exceeds 1/2, and is absent at x only when the upper bound there is below 1/2 (the
share of votes alone called 18% of 400 points with P = 0.48 a success at eval_n = 500: review).
`attack_event_p` is that share (an estimate, not a decision). The distance and feature verdicts on the
smoothed generator compare a mean over eval_n generations with a threshold: estimates with no level.
"""

from __future__ import annotations

import math

import torch

from smoothgen_exp.context import batch_of_one
from smoothgen_exp.core import ABSTAIN, Smooth, noisy_batches, prediction, seeded_generator
from smoothgen_exp.metrics.reconstruction import reconstruction_columns
from smoothgen_exp.stats import cp_lower, cp_upper


def event_decisions(counts: torch.Tensor, clean_counts: torch.Tensor, label: int | None, n: int,
                    alpha: float) -> tuple[bool, bool]:
    """(the event happens at z, it may happen at x) from the judge's class counts at z and at x: one-sided
    Clopper-Pearson bounds at alpha on P(class != label) against 1/2 (no label: no event, here or at x)."""
    if label is None:
        return False, True
    off_z, off_x = n - int(counts[label]), n - int(clean_counts[label])
    return bool(cp_lower(off_z, n, alpha) > 0.5), not bool(cp_upper(off_x, n, alpha) < 0.5)


class Judge:
    """The verdict half of a `Victim` (it supplies ctx, variant, x, the reference and target, eval_n,
    alpha, the objective, space, text, clean_out, reconstructs, `_generate` and `_features`)."""

    def _baseline(self, z: torch.Tensor):
        """(output, class) of the attacked baseline G(z, u0) at one condition z."""
        out = self._generate(z[None], self.ctx.model_generator("baseline"))[0]
        return out, int(self.ctx.oracle.classify(batch_of_one(out))[0])

    def _predict(self, z: torch.Tensor, law) -> tuple[int, torch.Tensor]:
        """The smoothed PREDICT (eval_n samples) at z under `law`, with its class counts: its noise and the
        generator's draws are the same at every z (a fresh judge each call, one seed): x and z are judged
        alike."""
        smooth = Smooth(self.ctx.base("attack/judge"), noise=law, num_classes=self.ctx.num_classes)
        gen = seeded_generator(z.device, self.ctx.seed("attack/judge/noise"))
        counts = smooth.sample_counts(z, self.eval_n, self.ctx.batch_size, gen)
        return prediction(counts, self.alpha).prediction, counts

    @torch.no_grad()
    def judge(self, z: torch.Tensor, shift_threshold: float, cos_threshold: float) -> dict:
        """The verdict at the final condition z [d], with the real (not surrogate) variant, beside the same
        judge at x itself (`attack_clean_class`). A class leaves the reference only where the judge keeps it
        at x: the smoothed PREDICT at x may abstain (a small eval_n) or differ from the reference (the
        aggregator's class, or the top selection vote), and then an unmoved attack would count."""
        ctx = self.ctx
        label = ctx.item.label if ctx.item.label is not None and ctx.item.label >= 0 else None   # no label: no event
        if self.variant == "baseline":
            (out, cls), (_, clean_cls) = self._baseline(z), self._baseline(self.x)
            event_p, clean_event, clean = float(cls != label) if label is not None else math.nan, clean_cls != label, self.clean_out
            happens = event_p == 1.0
        else:   # the real smoothed prediction, under the law the defence uses at each point
            law = ctx.noise_at(z)
            (cls, counts), (clean_cls, clean_counts) = self._predict(z, law), self._predict(self.x, ctx.noise)
            event_p = 1.0 - float(counts[label]) / self.eval_n if label is not None else math.nan   # PREDICT's votes
            happens, clean_event = event_decisions(counts, clean_counts, label, self.eval_n, self.alpha)
            out, clean = (None, None) if self.text else (self._mean_output(z, law), self._mean_output(self.x, ctx.noise))
        abstained = cls == ABSTAIN
        stable = self.reference != ABSTAIN and clean_cls == self.reference     # the judge keeps it at x
        changed = stable and not abstained and cls != self.reference
        # untargeted: the reference is gone, to another class or to an abstention (Salman et al. 2019
        # count an abstention under attack as an error); targeted: the target reached, not there at x;
        # event: it happens at z and not at x (smoothed: each decided at eval_alpha, `event_decisions`)
        left = stable and (changed or abstained)
        flip = (cls == self.target and clean_cls != self.target) if self.target is not None else left
        event = not clean_event and happens
        verdict = {"attack_class": cls, "attack_clean_class": clean_cls, "attack_class_changed": bool(changed),
                   "attack_abstained": abstained, "attack_event_p": event_p}
        if self.text:
            success = {"flip": flip, "event": event}
            return {"attack_success": bool(success[self.objective_name]), **verdict, "attack_output_shift": math.nan,
                    "attack_cosine": math.nan, "attacked_output": None, "clean_output": None}
        shift_space = self._features if self.space == "feature" else (lambda o: o.reshape(len(o), -1))
        shift = float((shift_space(out[None]) - shift_space(clean[None])).norm())
        cosine = float((self._features(out[None]) * self._features(clean[None])).sum())
        success = {
            "flip": flip,
            "event": event,
            "distance": shift >= shift_threshold,
            "feature": cosine <= cos_threshold,
            "latent": left,
            "reconstruction": left,
        }[self.objective_name]
        return {"attack_success": bool(success), **verdict, "attack_output_shift": shift, "attack_cosine": cosine,
                **(reconstruction_columns(ctx.oracle, out, self.x, "attack_recon") if self.reconstructs else {}),
                "attacked_output": out.cpu(), "clean_output": clean.cpu()}

    def _mean_output(self, z: torch.Tensor, law) -> torch.Tensor:
        """h_hat(z) over eval_n draws of `law`; the same seeds at every z (common random numbers for shifts)."""
        total = None
        model_gen = self.ctx.generator("attack/shift/model")
        for noisy in noisy_batches(z, self.eval_n, self.ctx.batch_size, law,
                                   self.ctx.generator("attack/shift/noise")):
            part = self.ctx.model.generate(noisy, model_gen).sum(0)
            total = part if total is None else total + part
        return total / self.eval_n
