"""What every attack shares: the budget, the objective, and the victim it queries.

An attack perturbs the condition x in the noised space (the prompt embedding for text-to-image, the
pixels for images) within ||delta|| <= eps (L2 or Linf) and a budget of steps or queries. It runs once
against each variant, under the same budget:

- baseline: the plain generator at the baseline row's internal draw, u -> G(x', u0) (deterministic);
- smoothed: the smoothed generator. Its objective is the expectation over transformation (m fresh noise
  draws per evaluation) of the soft, softmax-averaged smoothed objective (Salman et al. 2019), and
  success is judged afterwards with the real smoothed prediction (PREDICT), never the surrogate.

Objectives (all maximised by the attacker):
- flip:     -log p_ref(x') (untargeted: leave the reference class), or log p_target(x') (targeted).
            A language model's answer has no class probabilities to follow: the objective is the
            negative log-likelihood of the clean answer (the baseline's continuation at x, teacher-
            forced; smoothed: -log of its mean over the m draws), untargeted. Its gradient drives PGD
            on the prompt embeddings; query attacks read it as a score (score-based threat model).
- distance: ||out(x') - out(x)|| (L2 in output space, or in feature space with space=feature)
- feature:  -cos(f(x'), f(x)) for unit-normalised features f
- event:    P(oracle class != prompt class) at x', the stand-in for a harmful output
- latent:   -||E(x') - E(t)||^2 for a VAE's encoder E (`latents`) and a target image t (PhotoGuard);
            smoothed: the mean of ||E(x' + eta_j) - E(t)||^2 over the m draws (EOT)
- reconstruction: ||out(x') - x||^2 against the clean input x, for a model that reconstructs it (a VAE)

Success: flip/event: the variant's class at x' leaves the reference (or hits the target) / the event
happens (baseline) or has probability > 1/2 (smoothed), not at x; distance: output shift >= shift_threshold;
feature: cosine <= cos_threshold; latent/reconstruction: the class leaves the reference (a VAE's rows add
the attacked output against the clean input: `attack_recon_*`). A class verdict is the same judge at x'
and at x (`attack_clean_class`; the smoothed PREDICT with the same eval_n and draws): it leaves the
reference only where the judge keeps it at x, and reaches a target only where x is not there already, so
an unmoved attack never succeeds. Leaving includes the smoothed PREDICT abstaining at x'
(`attack_abstained`); `attack_class_changed` says whether the class moved to another class. With
input-dependent noise (smoothing=adaptive) the judge uses the law at x' (`ItemContext.noise_at`), and
the attack's expectation over noise each candidate's own law (its gradient treats sigma as fixed). Image conditions stay in [0, 1] (`Victim.inside`). The
attacked condition comes back as `attacked_condition`; whether it violates the smoothed row's certificate
is judged by a sound test against what the certificate promises (certifiers.check), never at x itself
(an unmoved attack).
"""

from __future__ import annotations

import math
import time

import torch
from torch.nn import functional as F

from smoothgen_exp.attacks.budget import Budget
from smoothgen_exp.context import batch_of_one
from smoothgen_exp.core import ABSTAIN, Smooth, noisy_batches, prediction, seeded_generator
from smoothgen_exp.metrics.reconstruction import reconstruction_columns

OBJECTIVES = ("flip", "distance", "feature", "event", "latent", "reconstruction")


class Victim:
    """One variant of one item, as an attacker sees it: an objective to maximise and a judge."""

    def __init__(self, ctx, variant: str, objective: str, reference: int, target: int | None, m: int,
                 eval_n: int, alpha: float, space: str = "output"):
        self.ctx, self.variant, self.objective_name = ctx, variant, objective
        self.reference, self.target, self.m = reference, target, m
        self.eval_n, self.alpha, self.space = eval_n, alpha, space
        self.x = ctx.x.clone()               # a normal tensor (ctx.x may be an inference tensor)
        self.queries = 0                     # objective evaluations (one per candidate condition)
        self.generations = 0                 # generator calls behind them
        self.eot_gen = ctx.generator(f"attack/{variant}/eot")
        # text has no output space to measure a shift or a cosine in: the class decides
        self.text = getattr(ctx.model, "output_kind", None) == "text"      # objectives: checks.py, before loading
        with torch.no_grad():       # reference output for distance/feature
            self.clean_out = None if self.text else self.outputs(self.x[None])[0]
        self.reconstructs = getattr(ctx.model, "reconstructs", False)      # a VAE: its output lives in x's space
        self.target_latent = None   # latent: E(t) of the target image (`set_target_image`)
        self.answer = None          # text: the clean answer's tokens, whose likelihood `flip` lowers
        if self.text and objective == "flip" and hasattr(ctx.model, "answer_logprob"):
            self.answer = ctx.model.answer_tokens(self.x[None], ctx.model_generator("baseline"))

    # ---------------------------------------------------------------- generations
    def _generate(self, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        try:
            return self.ctx.model.generate(z, gen, shared=True)
        except TypeError:                     # a model without shared draws: one call per row
            return torch.cat([self.ctx.model.generate(z[i:i + 1], gen) for i in range(len(z))])

    def _noisy_copies(self, z: torch.Tensor) -> torch.Tensor:
        """z_b + eta_j for every candidate b and m draws j: [B * m, ...].

        The m noise draws are shared by all candidates of one call (common random numbers), so that
        differences between candidates are not drowned in Monte Carlo noise; with input-dependent noise
        they are scaled to each candidate's own law (`ItemContext.noise_scales`)."""
        eta = torch.empty((self.m, *z.shape[1:]), dtype=z.dtype, device=z.device)
        self.ctx.noise.sample_(eta, self.eot_gen)
        noisy = (z[:, None] + eta[None] * self.ctx.noise_scales(z)).reshape(-1, *z.shape[1:])
        self.generations += len(noisy)
        return noisy

    def _noisy_generations(self, z: torch.Tensor) -> torch.Tensor:
        """G(z_b + eta_j) for every candidate b and m shared draws j: [B * m, ...]."""
        return self.ctx.model.generate(self._noisy_copies(z), self.eot_gen)

    def outputs(self, z: torch.Tensor) -> torch.Tensor:
        """[B, ...] per candidate: G(z, u0) (baseline) or the mean of m noisy generations (smoothed)."""
        if self.variant == "baseline":
            self.generations += len(z)
            return self._generate(z, self.ctx.model_generator("baseline"))
        out = self._noisy_generations(z)
        return out.reshape(len(z), self.m, *out.shape[1:]).mean(1)

    def _class_probs(self, outputs) -> torch.Tensor:
        """The oracle's softmax, or, for an oracle with labels only (text answers), the one-hot label."""
        oracle = self.ctx.oracle
        if hasattr(oracle, "logits"):
            return F.softmax(oracle.logits(outputs), -1)
        return F.one_hot(oracle.classify(outputs).to(self.x.device), self.ctx.num_classes).float()

    def _probs(self, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, K]: the oracle's (baseline) or their average over m draws (smoothed:
        for a label-only oracle, the vote frequencies)."""
        if self.variant == "baseline":
            self.generations += len(z)
            return self._class_probs(self._generate(z, self.ctx.model_generator("baseline")))
        probs = self._class_probs(self._noisy_generations(z))
        return probs.reshape(len(z), self.m, -1).mean(1)

    def _answer_logprob(self, z: torch.Tensor) -> torch.Tensor:
        """log P(clean answer | z) per candidate [B] (baseline), or log of its mean over m shared noise
        draws (smoothed: the soft smoothed objective)."""
        model = self.ctx.model
        if self.variant == "baseline":
            self.generations += len(z)
            return model.answer_logprob(z, self.answer)
        logp = model.answer_logprob(self._noisy_copies(z), self.answer)
        return logp.reshape(len(z), self.m).logsumexp(1) - math.log(self.m)

    def set_target_image(self, image: torch.Tensor) -> None:
        """The latent objective's target: E(image), one image like x (PhotoGuard: flat grey)."""
        with torch.no_grad():
            self.target_latent = self.ctx.model.latents(image[None])[0]

    def _latent_distance(self, z: torch.Tensor) -> torch.Tensor:
        """||E(z_b) - E(t)||^2 per candidate (baseline), or its mean over m shared noise draws (smoothed)."""
        if self.target_latent is None:           # a flat grey target unless the attack set one
            self.set_target_image(torch.full_like(self.x, 0.5))
        self.generations += len(z) if self.variant == "baseline" else 0
        lat = self.ctx.model.latents(z if self.variant == "baseline" else self._noisy_copies(z))
        return (lat - self.target_latent).reshape(len(lat), -1).pow(2).sum(1).reshape(len(z), -1).mean(1)

    def _features(self, out: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.ctx.oracle.features(out), dim=-1)

    # ---------------------------------------------------------------- objective
    def objective(self, z: torch.Tensor) -> torch.Tensor:
        """[B] values to maximise at candidate conditions z [B, *x.shape] or flattened [B, x.numel()]
        (the search space of the black-box attacks); differentiable under grad mode."""
        z = z.reshape(len(z), *self.x.shape)
        self.queries += len(z)
        if self.objective_name == "flip" and self.answer is not None:
            return -self._answer_logprob(z)
        if self.objective_name == "flip":
            probs = self._probs(z).clamp_min(1e-12)
            if self.target is not None:
                return probs[:, self.target].log()
            return -probs[:, self.reference].log()
        if self.objective_name == "event":
            return 1.0 - self._probs(z)[:, self.ctx.item.label]
        if self.objective_name == "latent":
            return -self._latent_distance(z)
        out = self.outputs(z)
        if self.objective_name == "reconstruction":
            return (out - self.x).reshape(len(z), -1).pow(2).sum(1)
        if self.objective_name == "distance":
            if self.space == "feature":
                return (self._features(out) - self._features(self.clean_out[None])).norm(dim=1)
            return (out - self.clean_out).reshape(len(z), -1).norm(dim=1)
        return -(self._features(out) * self._features(self.clean_out[None])).sum(1)   # feature

    # ---------------------------------------------------------------- judgement
    def inside(self, z: torch.Tensor) -> torch.Tensor:
        """z (any shape) clipped to the valid conditions: pixels in [0, 1] for an image condition (each
        coordinate moves towards x's, so a point of the eps-ball stays in it), anything else as it is."""
        return z.clamp(0.0, 1.0) if getattr(self.ctx.model, "condition_kind", None) == "image" else z

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
        else:   # the real smoothed prediction, under the law the defence uses at each point
            law = ctx.noise_at(z)
            (cls, counts), (clean_cls, clean_counts) = self._predict(z, law), self._predict(self.x, ctx.noise)
            event_p = 1.0 - float(counts[label]) / self.eval_n if label is not None else math.nan   # PREDICT's votes
            clean_event = label is not None and float(clean_counts[label]) / self.eval_n < 0.5
            out, clean = (None, None) if self.text else (self._mean_output(z, law), self._mean_output(self.x, ctx.noise))
        abstained = cls == ABSTAIN
        stable = self.reference != ABSTAIN and clean_cls == self.reference     # the judge keeps it at x
        changed = stable and not abstained and cls != self.reference
        # untargeted: the reference is gone, to another class or to an abstention (Salman et al. 2019
        # count an abstention under attack as an error); targeted: the target reached, not there at x;
        # event: it happens at z (smoothed: probability > 1/2) and not at x
        left = stable and (changed or abstained)
        flip = (cls == self.target and clean_cls != self.target) if self.target is not None else left
        event = not clean_event and (event_p > 0.5 if self.variant == "smoothed" else event_p == 1.0)
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


class Attack:
    """Budget, objective and bookkeeping; subclasses implement `search(victim, budget) -> z`."""

    enabled = True
    name = "attack"
    white_box = False         # True: needs gradients through the generator (pgd)

    def __init__(self, *, eps: float, norm: str, objective: str, target: int | None, m: int, eval_n: int,
                 eval_alpha: float, space: str, shift_threshold: float, cos_threshold: float):
        # defaults: the attack's schema in smoothgen_exp.config (AttackConf), filled in by @configured
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        self.budget = Budget(float(eps), norm)
        self.objective, self.target, self.m = objective, target, int(m)
        self.eval_n, self.eval_alpha, self.space = int(eval_n), float(eval_alpha), space
        self.shift_threshold, self.cos_threshold = float(shift_threshold), float(cos_threshold)

    def search(self, victim: Victim, budget: Budget) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode(False)
    def run(self, ctx, variant: str, reference: int) -> dict:
        """Attack one variant of one item; returns its attack_* columns, plus the clean and attacked
        outputs and the attacked condition (`clean_output`, `attacked_output`, `attacked_condition`)."""
        t0 = time.perf_counter()
        victim = Victim(ctx, variant, self.objective, reference, self.target, self.m, self.eval_n,
                        self.eval_alpha, self.space)
        z = self.search(victim, self.budget).detach()
        distance = float((z - victim.x).norm())
        verdict = victim.judge(z, self.shift_threshold, self.cos_threshold)
        row = {**getattr(victim, "notes", {}), "attack": self.name, "attack_objective": self.objective,
               "attack_eps": self.budget.eps if math.isfinite(self.budget.eps) else math.nan,
               "attack_norm": self.budget.norm, "attack_distance": distance,
               "attack_distance_linf": float((z - victim.x).abs().max()), "attack_reference_class": reference,
               "attack_queries": victim.queries, "attack_generations": victim.generations, **verdict,
               "attacked_condition": z}
        row["attack_time_s"] = time.perf_counter() - t0
        return row


def attack_reference(smoothed: dict) -> int:
    """The class the smoothed generator stands for: certified, else predicted, else the top vote (-1: none)."""
    certified = bool(smoothed.get("certified"))
    return next((c for c in (smoothed.get("prediction", -1) if certified else -1,
                             smoothed.get("smoothed_prediction", -1), smoothed.get("top_class", -1))
                 if c != -1), -1)
