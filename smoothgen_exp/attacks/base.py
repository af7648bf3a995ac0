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

Success is judged afterwards (`attacks.judge`): with the real variant at x' beside the same judge at x,
so an unmoved attack never succeeds; the smoothed event is decided at eval_alpha. With
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
from smoothgen_exp.attacks.judge import Judge
from smoothgen_exp.seeding import row_seeds

OBJECTIVES = ("flip", "distance", "feature", "event", "latent", "reconstruction")


class Victim(Judge):
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
        """G(z_b + eta_j, u_j) for every candidate b and m shared draws j: [B * m, ...]. The generator's own
        draw u_j is shared too (one seed per j): otherwise identical candidates scored further apart than
        NES's antithetic differences (review)."""
        noisy = self._noisy_copies(z)
        return self.ctx.model.generate(noisy, row_seeds(self.eot_gen, self.m).repeat(len(z)))

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
        distance = float((z.double() - victim.x.double()).norm())     # as certifiers.check measures it
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
