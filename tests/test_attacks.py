"""Attacks on toys with known optima, budgets, the semantic lexicon, and zero certificate violations."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from smoothgen_exp.attacks.base import Victim
from smoothgen_exp.attacks.nes import NES
from smoothgen_exp.attacks.pgd import PGD
from smoothgen_exp.attacks.random_search import RandomSearch
from smoothgen_exp.attacks.semantic import SemanticAttack, load_lexicon
from smoothgen_exp.certifiers.check import check_certificate
from smoothgen_exp.certifiers.cohen import CohenCertifier
from smoothgen_exp.context import ItemContext
from smoothgen_exp.data.digits import WORDS
from smoothgen_exp.seeding import row_seeds
from smoothgen_exp.smoothing.gaussian import GaussianNoise

from .conftest import TINY, run_in_process

D = 5


class LinearModel:
    """G(z) = A z. The L2 distance objective ||A delta|| peaks at delta = eps * (top right-singular vector)."""

    output_range = (-100.0, 100.0)
    output_shape = (3,)

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(3, D, generator=g, dtype=torch.float64)

    def generate(self, z, gen, shared=False):
        return z @ self.a.T


class StepModel:
    """G(z) = [w.z, -w.z]: the oracle's class is 1[w.z > 0]; the smoothed class is robust within |w.x|/|w|."""

    output_range = (-100.0, 100.0)
    output_shape = (2,)

    def generate(self, z, gen, shared=False):
        s = z[:, 0:1] * 50.0
        return torch.cat([-s, s], 1)


class LogitOracle:
    num_classes = 2

    def logits(self, out):
        return out[:, :2]

    def classify(self, out):
        return self.logits(out).argmax(1)

    def features(self, out):
        return F.normalize(out, dim=-1)


def ctx_for(model, x, sigma=0.5, label=1, seed=0):
    item = SimpleNamespace(item_id=f"toy{seed}", condition="", label=label)
    return ItemContext(item, x, model, LogitOracle(), GaussianNoise(sigma), seed, 500)


def test_pgd_finds_the_top_singular_direction():
    model = LinearModel()
    x = torch.zeros(D, dtype=torch.float64)
    ctx = ctx_for(model, x)
    eps = 0.7
    attack = PGD(eps=eps, objective="distance", steps=60, restarts=2, step_size=0.25)
    victim = Victim(ctx, "baseline", "distance", 0, None, 4, 100, 0.001)
    z = attack.search(victim, attack.budget)
    v1 = torch.linalg.svd(model.a).Vh[0]
    assert abs(float(F.cosine_similarity(z - x, v1, dim=0))) > 0.999
    assert float((z - x).norm()) == pytest.approx(eps, rel=1e-6)
    assert float((model.a @ (z - x)).norm()) == pytest.approx(eps * float(torch.linalg.svdvals(model.a)[0]), rel=1e-4)


@pytest.mark.parametrize("attack_cls", [NES, RandomSearch])
def test_black_box_attacks_raise_the_objective_within_budget(attack_cls):
    model = LinearModel()
    x = torch.zeros(D, dtype=torch.float64)
    attack = attack_cls(eps=0.5, objective="distance", queries=300)
    victim = Victim(ctx_for(model, x), "baseline", "distance", 0, None, 4, 100, 0.001)
    start = float(victim.objective(x[None]))
    z = attack.search(victim, attack.budget)
    best = float((model.a @ (z - x)).norm())
    optimum = 0.5 * float(torch.linalg.svdvals(model.a)[0])
    assert best > start + 0.5 * optimum                  # real progress from the clean point
    assert victim.queries <= 300 + 1
    assert float((z - x).norm()) <= 0.5 + 1e-9
    if attack_cls is NES:
        assert best > 0.9 * optimum                     # NES follows the gradient nearly to the optimum


def test_pgd_finds_the_flip_on_the_baseline_and_respects_linf():
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.2                                          # class 1, boundary at distance 0.2
    ctx = ctx_for(StepModel(), x)
    row = PGD(eps=0.3, norm="linf", steps=10).run(ctx, "baseline", reference=1)
    assert row["attack_success"] and row["attack_class"] == 0
    assert row["attack_distance_linf"] <= 0.3 + 1e-12


@pytest.mark.parametrize("attack", [PGD(eps=0.4, steps=10, m=8, eval_n=2000),
                                    NES(eps=0.4, queries=200, m=8, eval_n=2000),
                                    RandomSearch(eps=0.4, queries=200, m=8, eval_n=2000)])
def test_no_success_inside_a_known_robust_radius(attack):
    """Smoothed class 1 is robust within |w.x| = 0.6 (true radius); attacks at eps = 0.4 must fail."""
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.6
    ctx = ctx_for(StepModel(), x, sigma=0.5)
    row = attack.run(ctx, "smoothed", reference=1)
    assert not row["attack_success"] and not row["attack_class_changed"]
    # a sound certificate of radius 0.5 (p_lower = Phi(1) < the true Phi(1.2)) is checked, not violated
    certificate = {"certified": True, "abstained": False, "radius": 0.5, "prediction": 1, "p_lower": 0.8413,
                   "certificate_valid": True}
    check = check_certificate(CohenCertifier(), ctx, certificate, row["attacked_condition"], 2000, 0.001)
    assert check["attack_within_radius"] and check["certificate_checked"] and not check["certificate_violation"]
    # in the noise's units (sigma = 0.5), what the check compared: the L2 distance of z and the radius
    attacked = float((row["attacked_condition"].to(x) - x).norm())
    assert check["attack_reach"] == pytest.approx(attacked / 0.5) and check["certificate_reach"] == 0.5 / 0.5
    # and outside it (eps = 1.0 > 0.6), PGD does flip the smoothed class
    if isinstance(attack, PGD):
        far = PGD(eps=1.0, steps=20, m=16, eval_n=2000).run(ctx, "smoothed", 1)
        assert far["attack_success"]
        assert not check_certificate(CohenCertifier(), ctx, certificate, far["attacked_condition"], 2000,
                                     0.001)["attack_within_radius"]


class SeededLinearModel(LinearModel):
    """G(z, u) = A z + u, u ~ N(0, I) from each row's own seed: a generator with randomness of its own."""

    def generate(self, z, gen, shared=False):
        seeds = row_seeds(gen, len(z), shared)
        u = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(int(s)), dtype=z.dtype) for s in seeds])
        return z @ self.a.T + u


def test_the_smoothed_objective_scores_identical_candidates_alike():
    """Review: the m noise draws were shared by the candidates of one call, the generator's own draws were
    not, so four copies of x scored further apart than NES's antithetic differences. Both are shared now."""
    x = torch.zeros(D, dtype=torch.float64)
    victim = Victim(ctx_for(SeededLinearModel(), x), "smoothed", "distance", 0, None, 4, 100, 0.001)
    with torch.no_grad():
        scores = victim.objective(torch.stack([x + 0.1] * 4))
    assert float(scores.max() - scores.min()) == 0.0 and float(scores[0]) > 0.0


def test_the_smoothed_event_is_a_decision_at_eval_alpha():
    """Review: the share of PREDICT's votes off the label decided the event (> 1/2 at z, < 1/2 at x), so at
    eval_n = 500 a point with P(event) = 0.48 "succeeded" on 18% of seeds. Now one-sided Clopper-Pearson
    bounds at eval_alpha decide: 260 of 500 votes off the label is no event at 0.001, 300 is."""
    from smoothgen_exp.attacks.judge import event_decisions
    from smoothgen_exp.stats import cp_lower, cp_upper

    def counts(off: int) -> torch.Tensor:          # label 1; votes off it go to class 0
        return torch.tensor([off, 500 - off])

    assert cp_lower(260, 500, 0.001) < 0.5 < cp_lower(300, 500, 0.001)
    assert event_decisions(counts(260), counts(100), 1, 500, 0.001) == (False, False)
    assert event_decisions(counts(300), counts(100), 1, 500, 0.001) == (True, False)
    # at x: absent only where its upper bound is below 1/2 (225 of 500 off the label: 0.52 may be above)
    assert cp_upper(225, 500, 0.001) > 0.5 and event_decisions(counts(300), counts(225), 1, 500, 0.001) == (True, True)
    assert event_decisions(counts(500), counts(0), None, 500, 0.001) == (False, True)     # no label: no event


def test_an_attack_on_the_sphere_of_the_radius_is_checked():
    """Review: an attack projected onto ||delta|| = R in float32 measured up to ~3e-9 beyond the float64 R
    and went unchecked (3 of 10 items at eps = R). The promise holds at every distance, so a rounding's
    worth past R is checked; distances are measured in float64."""
    x = torch.zeros(D, dtype=torch.float32)
    x[0] = 0.6
    ctx = ctx_for(StepModel(), x, sigma=0.5)
    certificate = {"certified": True, "abstained": False, "radius": 0.5, "prediction": 1, "p_lower": 0.8413,
                   "certificate_valid": True}
    z = x.clone()
    z[0] -= 0.5 * (1 + 3e-7)                        # float32 rounding's worth past R
    check = check_certificate(CohenCertifier(), ctx, certificate, z, 500, 0.001)
    assert check["attack_within_radius"] and check["certificate_checked"] and not check["certificate_violation"]
    z[0] = 0.6 - 0.5 * 1.01                          # past R by more than rounding: not within it
    assert not check_certificate(CohenCertifier(), ctx, certificate, z, 500, 0.001)["attack_within_radius"]
    # the rounding of z's coordinates scales with ||z||, not with R: at R = 0.005 a relative slack alone left
    # 60 of 200 attacks on the sphere unchecked (diff review); all are within now
    from smoothgen_exp.attacks.budget import Budget, project

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, generator=gen)
    ctx = ctx_for(StepModel(), x, sigma=0.5)
    for radius in (0.1, 0.005):
        row = {**certificate, "radius": radius}
        within = [check_certificate(CohenCertifier(), ctx, row, x + project(torch.randn(1, 64, generator=gen),
                                                                            Budget(eps=radius, norm="l2"))[0],
                                    2, 0.001)["attack_within_radius"] for _ in range(200)]
        assert all(within), (radius, within.count(False))


def test_a_word_inside_a_fixed_phrase_is_edited_only_with_the_phrase():
    """Review: "a black and white sketch" became "a black and pale sketch" (white's synonyms). Words inside
    the other phrases keep their own edits ("a handwritten digit" -> "a handwritten numeral"; diff review)."""
    attack = SemanticAttack(queries=40, max_edits=3, eval_n=100, m=4)

    def edits(prompt: str) -> list[str]:
        return [" ".join(new) for new, *_ in attack.candidates(prompt.split(), frozen=set())]

    found = edits("a black and white sketch of a 7")
    assert "a monochrome sketch of a 7" in found and "a black and white drawing of a 7" in found
    assert not [e for e in found if e.startswith("a black and ") and "white" not in e]
    assert "a pale sketch of a 7" in edits("a white sketch of a 7")
    assert "a handwritten numeral 7" in edits("a handwritten digit 7")


def test_semantic_attack_only_makes_approved_edits_within_budget(t2i, oracle):
    attack = SemanticAttack(queries=40, max_edits=3, eval_n=100, m=4)
    lex = load_lexicon()
    prompts = ["a small pixelated seven", "show me a 3", "the figure two, written by hand"]
    for digit, prompt in zip((7, 3, 2), prompts, strict=True):
        item = SimpleNamespace(item_id=prompt, condition=prompt, label=digit)
        x = t2i.encode([prompt])[0]
        ctx = ItemContext(item, x, t2i, oracle, GaussianNoise(0.1), 0, 100)
        row = attack.run(ctx, "baseline", reference=digit)
        assert row["attack_queries"] <= 40 + 1
        edits = [e for e in row["attack_edits"].split(";") if e]
        assert all(e.split("@")[0] in ("lexicon", "similarity") for e in edits)
        adv = row["attack_prompt"].lower()
        assert WORDS[digit] in adv or str(digit) in adv or (digit == 0 and "nought" in adv)
        for other in set(range(10)) - {digit}:             # the digit itself is never changed
            assert WORDS[other] not in adv.split()
        sim = float(t2i.encoder.encode([prompt]) @ t2i.encoder.encode([row["attack_prompt"]]).T)
        assert sim >= attack.min_similarity - 1e-6
        z_adv = t2i.encode([row["attack_prompt"]])[0]
        assert row["attack_distance"] == pytest.approx(float((z_adv - x).norm()), abs=1e-5)
    assert "protected" in lex and "seven" in lex["protected"]


ATTACK_RUNS = {
    "pgd-in": ["attack=pgd", "attack.eps=0.05", "attack.steps=5"],
    "pgd-out": ["attack=pgd", "attack.eps=0.6", "attack.steps=5"],
    "nes-in": ["attack=nes", "attack.eps=0.05", "attack.queries=60"],
    "nes-out": ["attack=nes", "attack.eps=0.6", "attack.queries=60"],
    "random-in": ["attack=random_search", "attack.eps=0.05", "attack.queries=60"],
    "random-out": ["attack=random_search", "attack.eps=0.6", "attack.queries=60"],
    "semantic": ["attack=semantic", "attack.queries=30"],
    "pgd-distance": ["attack=pgd", "attack.objective=distance", "attack.eps=0.3", "attack.steps=3"],
    "pgd-feature": ["attack=pgd", "attack.objective=feature", "attack.eps=0.3", "attack.steps=3"],
    "pgd-event": ["attack=pgd", "attack.objective=event", "attack.eps=0.3", "attack.steps=3"],
}


@pytest.fixture(scope="module")
def attack_runs(tmp_path_factory, t2i):
    out = {}
    for name, args in ATTACK_RUNS.items():
        run_dir = tmp_path_factory.mktemp("attacks") / name
        out[name] = run_in_process(*TINY, "certifier.n=300", "attack.m=8", "attack.eval_n=200", "metrics=none",
                                   *args, run_dir=run_dir)
    return out


def test_zero_certificate_violations_on_the_default(attack_runs):
    for name, (df, summary) in attack_runs.items():
        assert summary["certificate_violations"] == 0, name
        sm = df[df.variant == "smoothed"]
        assert not sm.certificate_violation.any(), name
        # a row never checked has no verdict (null), not "checked, no violation" (found by a new user)
        assert sm.certificate_violation[~sm.certificate_checked.astype(bool)].isna().all(), name
        for col in ("attack_success", "attack_eps", "attack_norm", "attack_distance", "attack_queries",
                    "attack_output_shift", "attack_time_s"):
            assert col in df, (name, col)
        assert "attack_w2_smoothed" in summary and "attack_success_rate_baseline" in summary
        # attacks that returned x itself are counted, and none of them is a checked point
        assert summary["attack_unmoved_smoothed"] == int((sm.attack_distance == 0).sum()), name
        assert not (sm.attack_within_radius.astype(bool) & (sm.attack_distance == 0)).any(), name
        assert "attack_abstain_rate_smoothed" in summary and sm.attack_abstained.notna().all(), name
    # perturbations inside the radii were tried and checked, and large ones outside them succeeded on the baseline
    inside = attack_runs["pgd-in"][0].query("variant == 'smoothed' and attack_within_radius")
    assert len(inside) and inside.certificate_checked.all()
    assert (inside.certificate_check_upper >= inside.certificate_promise).all()
    assert attack_runs["pgd-out"][1]["attack_success_rate_baseline"] > 0
    assert all(d <= 0.05 * (1 + 1e-6) for d in attack_runs["pgd-in"][0].attack_distance)  # float32
    assert not math.isnan(attack_runs["semantic"][0].attack_distance.iloc[0])
    for objective in ("distance", "feature", "event"):
        assert (attack_runs[f"pgd-{objective}"][0].attack_objective == objective).all()


def test_an_abstention_under_attack_leaves_the_reference_and_an_unmoved_attack_checks_nothing():
    """Found by a new user: NES drove the smoothed prediction to abstain (65% of its votes off the digit)
    and the row said attack_success false; and an attack that returned x itself (distance 0) counted as a
    certificate checked within the radius. At the step's boundary w.x = 0 the votes split evenly, so
    PREDICT abstains; at x (w.x = 0.6, sigma 0.5) it says class 1."""
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.6
    ctx = ctx_for(StepModel(), x)
    victim = Victim(ctx, "smoothed", "flip", 1, None, 4, 2000, 0.001)
    on_boundary = victim.judge(torch.zeros(D, dtype=torch.float64), 1.0, 0.5)
    assert on_boundary["attack_class"] == -1 and on_boundary["attack_abstained"]
    assert on_boundary["attack_success"] and not on_boundary["attack_class_changed"]
    clean = victim.judge(x, 1.0, 0.5)
    assert not clean["attack_success"] and not clean["attack_abstained"]
    certificate = {"certified": True, "abstained": False, "radius": 0.5, "prediction": 1, "p_lower": 0.8413,
                   "certificate_valid": True}
    unmoved = check_certificate(CohenCertifier(), ctx, certificate, x.clone(), 2000, 0.001)
    assert not unmoved["attack_within_radius"] and not unmoved["certificate_checked"]
    assert unmoved["certificate_violation"] is None
    # where PREDICT abstains at x itself (close votes, a small eval_n), an abstention at z is not the
    # attack's doing: an unmoved attack scored a success before (found by review)
    close = torch.zeros(D, dtype=torch.float64)
    close[0] = 0.05                                              # P(class 1) = Phi(0.1) = 0.54
    near = Victim(ctx_for(StepModel(), close), "smoothed", "flip", 1, None, 4, 20, 0.001)
    for z in (close, torch.zeros(D, dtype=torch.float64)):
        verdict = near.judge(z, 1.0, 0.5)
        assert verdict["attack_abstained"] and not verdict["attack_success"]


def test_an_unmoved_attack_never_succeeds_where_the_judge_is_off_the_reference_at_x():
    """The smoothed reference (the aggregator's class, or the top selection vote) can differ from what
    PREDICT says at x itself; an attack of eps 1e-4 then "succeeded" on 5 to 11 of 60 digits (review).
    Here PREDICT says class 1 at x (p = Phi(0.4) = 0.66 over 300 votes) and the reference is 0; on the
    boundary it abstains or picks either class, whatever the reference."""
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.2
    row = PGD(eps=1e-4, steps=2, m=8, eval_n=300).run(ctx_for(StepModel(), x, sigma=0.5), "smoothed", reference=0)
    assert row["attack_class"] == row["attack_clean_class"] == 1 and not row["attack_success"]
    assert not row["attack_class_changed"]                     # nor "moved" (the diff review)
    # the event objective too: class 0 at x, label 1, so the event already happens at x (the diff review)
    for variant in ("baseline", "smoothed"):
        row = PGD(eps=1e-4, steps=2, m=8, eval_n=300, objective="event").run(
            ctx_for(StepModel(), -x, sigma=0.5, label=1), variant, reference=0)
        assert row["attack_event_p"] > 0.5 and not row["attack_success"], (variant, row)
    x[0] = 0.0
    for reference in (0, 1):
        row = PGD(eps=1e-4, steps=2, m=8, eval_n=200).run(ctx_for(StepModel(), x, sigma=0.5), "smoothed", reference)
        assert not row["attack_success"], row
    # a class the judge keeps at x and loses at z still counts
    x[0] = 0.2
    row = PGD(eps=0.5, steps=10, m=8, eval_n=500).run(ctx_for(StepModel(), x, sigma=0.25), "smoothed", reference=1)
    assert row["attack_success"] and row["attack_clean_class"] == 1 and row["attack_class"] in (-1, 0)


def test_a_smoothed_event_attack_succeeds_where_the_event_is_significant_at_z():
    """End to end through judge(): label 1, so the event is class 0. At x (x[0] = 0.3, sigma = 0.5) the event
    has P = 1 - Phi(0.6) = 0.27, absent; PGD of eps 0.8 reaches z[0] = -0.5, P = Phi(1) = 0.84 (diff review:
    the decision was tested only through event_decisions)."""
    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.3
    row = PGD(eps=0.8, steps=20, m=8, eval_n=500, objective="event").run(ctx_for(StepModel(), x, sigma=0.5, label=1),
                                                                         "smoothed", reference=1)
    assert row["attack_success"] and row["attack_event_p"] > 0.7 and row["attack_clean_class"] == 1


def test_the_smoothed_judge_uses_the_same_draws_at_x_and_at_z():
    """Both PREDICTs came from one judge whose generator advanced between them: at the same x, two calls
    gave different counts on 56 of 60 digits (review). Now a judge at z = x agrees with the one at x."""
    class NoisyStep(StepModel):                       # the generator's own randomness decides near 0
        def generate(self, z, gen, shared=False):    # gen: a torch Generator or per-row seeds (models.protocol)
            u = torch.stack([torch.randn(1, generator=torch.Generator().manual_seed(int(s)), dtype=z.dtype)
                             for s in row_seeds(gen, len(z), shared)])
            s = (z[:, 0:1] + 0.5 * u) * 50.0
            return torch.cat([-s, s], 1)

    x = torch.zeros(D, dtype=torch.float64)
    x[0] = 0.02                                      # p = 0.52: the draws decide between 1 and abstaining
    for seed in range(8):
        victim = Victim(ctx_for(NoisyStep(), x, sigma=0.5, seed=seed), "smoothed", "flip", 1, None, 4, 2000, 0.2)
        verdict = victim.judge(x.clone(), 0.1, 0.5)
        assert verdict["attack_class"] == verdict["attack_clean_class"] and not verdict["attack_success"]


def test_image_attacks_stay_in_the_valid_image_range():
    """PGD, NES and random search left 14 to 19 of 64 pixels outside [0, 1] on tiny_vae (review)."""
    class ImageStep(StepModel):
        condition_kind = "image"

    x = torch.full((D,), 0.98, dtype=torch.float64)
    x[0] = 0.02
    for attack in (PGD(eps=0.5, norm="linf", steps=5), NES(eps=0.5, norm="linf", queries=60),
                   RandomSearch(eps=0.5, norm="linf", queries=60), PGD(eps=1.0, steps=5)):
        ctx = ctx_for(ImageStep(), x.clone(), sigma=0.25)
        victim = Victim(ctx, "baseline", "flip", 1, None, 4, 100, 0.001)
        z = attack.search(victim, attack.budget)
        assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0, attack
        assert float((z - x).abs().max() if attack.budget.norm == "linf" else (z - x).norm()) <= attack.budget.eps + 1e-9


def adaptive_ctx(near: float, far: float):
    """x = 0 and a StepModel context whose noise law depends on the input (smoothing=adaptive's `at`):
    sigma `near` at x (and wherever z[0] <= 1/2), sigma `far` where z[0] > 1/2."""
    class ByPoint:
        def at(self, z, model):
            return GaussianNoise(far if float(z[0]) > 0.5 else near)

    x = torch.zeros(D, dtype=torch.float64)
    ctx = ctx_for(StepModel(), x, sigma=near)
    ctx.smoothing = ByPoint()
    return x, ctx


def test_the_judge_uses_the_noise_law_of_the_attacked_point():
    """With input-dependent noise (smoothing=adaptive) the judge used x's law at z, a classifier the
    defence never is (review). Here the law at z = e_0 is sigma 0.01 (PREDICT: class 1 at once), x's is
    sigma 5 (p = Phi(0.2) = 0.58 over 300 votes: it abstains)."""
    x, ctx = adaptive_ctx(near=5.0, far=0.01)
    z = x.clone()
    z[0] = 1.0
    verdict = Victim(ctx, "smoothed", "flip", 0, None, 4, 300, 0.001).judge(z, 0.1, 0.5)
    assert verdict["attack_class"] == 1 and verdict["attack_clean_class"] == -1


def test_the_attack_expectation_uses_each_candidates_noise_law():
    """The adaptive attacker's expectation over noise drew x's law at every candidate, a defence it does not
    face (noted by the attacks review). Each candidate's copies now spread at its own sigma, with the same
    standard draws (common random numbers)."""
    x, ctx = adaptive_ctx(near=2.0, far=0.1)
    z = torch.stack([x, x + 1.0])
    noisy = Victim(ctx, "smoothed", "flip", 0, None, 400, 100, 0.001)._noisy_copies(z).reshape(2, 400, D)
    spread = (noisy - z[:, None]).std(dim=(1, 2))
    assert spread[0] == pytest.approx(2.0, rel=0.05) and spread[1] == pytest.approx(0.1, rel=0.05)
    torch.testing.assert_close((noisy[1] - z[1]) * 20, noisy[0] - z[0])     # the same draws, rescaled
    ctx.smoothing = None                                                      # noise fixed in advance
    fixed = Victim(ctx, "smoothed", "flip", 0, None, 400, 100, 0.001)._noisy_copies(z).reshape(2, 400, D)
    assert (fixed - z[:, None]).std(dim=(1, 2)).sub(2.0).abs().max() < 0.1


def test_semantic_candidates_come_from_the_lexicon_by_default_and_never_replace_numbers():
    """MiniLM nearest words are not synonyms: they turned "big" into "small", "Red Planet" into "white
    Planet" and "10" into "digit" on qa_facts, and the attack counted the changed questions (review)."""
    from smoothgen_exp.attacks.semantic import tokenize

    tokens = tokenize("What is 10 plus ten on a big red planet?")
    assert {c[-1] for c in SemanticAttack(eval_n=10, m=2).candidates(tokens, set())} <= {"lexicon"}
    cands = SemanticAttack(eval_n=10, m=2, similar_words=3).candidates(tokens, set())
    assert "similarity" in {c[-1] for c in cands}                 # opted in, the mechanism is live ...
    assert not {tokens.index("10"), tokens.index("ten")} & {c[1] for c in cands}   # ... but not on numbers


def test_the_attacked_baseline_is_the_recorded_baselines_generator():
    """The attack drew the baseline's internal u0 from another stream than the recorded baseline row: with a
    stochastic generator its class at x could differ from the row's (1 of 60 digits_diffusion items; the diff
    review). Now G(x, u0) is the row's output."""
    class NoisyStep(StepModel):
        def generate(self, z, gen, shared=False):
            u = torch.randn(len(z), 1, generator=gen, dtype=z.dtype)
            s = (z[:, 0:1] + 0.5 * u) * 50.0
            return torch.cat([-s, s], 1)

    x = torch.zeros(D, dtype=torch.float64)
    for seed in range(10):
        ctx = ctx_for(NoisyStep(), x, sigma=0.5, seed=seed)
        row_class = int(ctx.oracle.classify(ctx.baseline_output()[None])[0])
        verdict = Victim(ctx, "baseline", "flip", row_class, None, 4, 100, 0.001).judge(x.clone(), 0.1, 0.5)
        assert verdict["attack_clean_class"] == row_class
