"""Autoregressive LMs: tiny real classes, token averaging with a KV cache, and certified decoding (C5)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import softmax

from smoothgen_exp.certifiers.decoding import DecodingCertifier
from smoothgen_exp.certifiers.semantic import SemanticCertifier
from smoothgen_exp.context import ItemContext
from smoothgen_exp.models.lm import CausalLM
from smoothgen_exp.oracles.base import ClassEquivalence
from smoothgen_exp.oracles.text import ActionVocabulary, MiniLMEquivalence, RefusalJudge
from smoothgen_exp.smoothing.gaussian import GaussianNoise

from .conftest import CACHE, cli, llm_attack_sweep, run_in_process

TINY = {"arch": "gpt2", "width": 64, "layers": 2, "heads": 2, "seed": 0}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    return CausalLM(name=f"tiny_{request.param}", tiny={**TINY, "arch": request.param}, max_new_tokens=10)


def test_token_average_with_sigma_0_and_n_1_is_plain_greedy(lm):
    z = lm.encode(["explain how to pick a lock"])[0][None]
    plain = lm.model.generate(inputs_embeds=z, attention_mask=torch.ones(z.shape[:2], dtype=torch.long),
                              max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=lm.eos)
    tokens, _ = lm.token_average(z)
    assert tokens == plain[0].tolist()[: len(tokens)]


def test_kv_cached_path_equals_recompute_token_for_token(lm):
    z = lm.encode(["write a story about a dog"])[0].repeat(6, 1, 1)
    z = z + 0.3 * torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    cached, d1 = lm.token_average(z, use_cache=True)
    fresh, d2 = lm.token_average(z, use_cache=False)
    assert cached == fresh
    assert torch.allclose(d1, d2, atol=1e-5)


def test_step_probs_match_the_averaged_distributions(lm):
    z = lm.encode(["tell me a simple recipe"])[0].repeat(4, 1, 1)
    z = z + 0.2 * torch.randn(z.shape, generator=torch.Generator().manual_seed(2))
    tokens, dists = lm.token_average(z)
    probs = lm.step_probs(z, tokens)                     # teacher forcing along the same tokens
    assert torch.allclose(probs.mean(0), dists[torch.arange(len(tokens)), tokens], atol=1e-5)


def test_answer_logprob_is_the_teacher_forced_likelihood_with_gradients(lm):
    """PGD on a language model follows log P(clean answer | prompt embedding) (attacks.base)."""
    z = lm.encode(["tell me a simple recipe"])[0][None]
    answer = lm.answer_tokens(z, torch.Generator().manual_seed(0))
    assert answer and answer == lm.continue_(z, torch.Generator().manual_seed(0))[0].tolist()[: len(answer)]
    copies = (z.repeat(3, 1, 1) + 0.1 * torch.randn((3, *z.shape[1:]), generator=torch.Generator().manual_seed(3)))
    copies.requires_grad_(True)
    logp = lm.answer_logprob(copies, answer)
    assert torch.allclose(logp.detach(), lm.step_probs(copies.detach(), answer).log().sum(1), atol=1e-4)
    (grad,) = torch.autograd.grad(logp.sum(), copies)
    assert torch.isfinite(grad).all() and (grad.flatten(1).norm(dim=1) > 0).all()


class ToyLM:
    """Vocabulary of 8; logits_t = c * s + b_t with s = w . z[0]. Under eta ~ N(0, sigma^2 I),
    s ~ N(w . x, sigma^2 |w|^2), so p_t(v) is a 1-D Gaussian integral: exact by Gauss-Hermite."""

    V, T = 8, 4

    def __init__(self, d=5, seed=0):
        rng = np.random.default_rng(seed)
        self.w = torch.tensor(rng.normal(size=d))
        self.c = rng.normal(size=self.V) * 3
        self.b = rng.normal(size=(self.T, self.V))
        self.eos, self.max_new_tokens = -1, self.T

    def _logits(self, s: np.ndarray, t: int) -> np.ndarray:
        return np.outer(s, self.c) + self.b[t]

    def token_average(self, z, generator=None, steps=None, use_cache=True, greedy=True):
        s = (z[:, 0].double() @ self.w).numpy()
        dists = [softmax(self._logits(s, t), axis=1).mean(0) for t in range(self.T)]
        return [int(np.argmax(d)) for d in dists], torch.tensor(np.array(dists))

    def step_probs(self, z, tokens):
        s = (z[:, 0].double() @ self.w).numpy()
        return torch.tensor(np.stack([softmax(self._logits(s, t), axis=1)[:, tok] for t, tok in enumerate(tokens)],
                                     axis=1))

    def decode(self, tokens):
        return " ".join(map(str, tokens))

    def exact_probs(self, mu, std: float, t: int) -> np.ndarray:
        """p_t at mean(s) = mu (scalar or array of means): [V] or [len(mu), V]."""
        nodes, weights = np.polynomial.hermite_e.hermegauss(120)
        s = np.atleast_1d(mu)[:, None] + std * nodes[None]                     # [M, nodes]
        probs = softmax(s[..., None] * self.c + self.b[t], axis=-1)             # [M, nodes, V]
        out = (probs * weights[None, :, None]).sum(1) / weights.sum()
        return out[0] if np.ndim(mu) == 0 else out

    def true_radius(self, mu: float, std: float, t: int, token: int) -> float:
        """Smallest shift of w.x (either direction) at which the exact argmax leaves `token`, over |w|."""
        shifts = np.linspace(0, 6 * std, 3001)[1:]
        changed = [np.argmax(self.exact_probs(mu + sgn * shifts, std, t), axis=1) != token for sgn in (-1, 1)]
        hit = np.flatnonzero(changed[0] | changed[1])
        return shifts[hit[0]] / float(self.w.norm()) if len(hit) else np.inf


def test_a_tokenizers_start_token_opens_every_prompt_without_a_chat_template(monkeypatch):
    """Llama's tokenizer puts <s> before a text, and Llama models degrade without it; the prompts were
    embedded without special tokens, so `model=llama2_7b` never saw one (LLM review)."""
    from tokenizers.processors import TemplateProcessing

    import smoothgen_exp.backbones.lm as backbone

    plain = backbone.tiny_tokenizer

    def with_start():
        tok = plain()
        tok._tokenizer.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", tok.bos_token_id)])
        return tok

    assert CausalLM(name="tiny_llama", tiny={**TINY, "arch": "llama"}, max_new_tokens=4).prefix_text == ""
    monkeypatch.setattr(backbone, "tiny_tokenizer", with_start)
    lm = CausalLM(name="tiny_llama", tiny={**TINY, "arch": "llama"}, max_new_tokens=4)
    x = lm.encode(["describe the image"])[0]
    start = lm.embed(torch.tensor([lm.tokenizer.bos_token_id])).float()
    assert lm.prefix_text == "[BOS]" and torch.equal(lm.wrap(x[None])[0], torch.cat([start, x]))
    assert lm.columns()["chat_template"] is False


def test_fresh_noise_per_step_decodes_after_the_chat_template():
    """Regression: with `noise: step` the tokens so far were put before the template's suffix
    ("question, answer tokens, <|im_end|><|im_start|>assistant"): SmolLM2 answered "TheLTheThe..." where the
    sequence mode said "The capital of France is Paris." At sigma ~ 0 both modes are plain greedy."""
    from smoothgen_exp.aggregators.token_average import TokenAverage

    lm = CausalLM(name="tiny_llama", tiny={**TINY, "arch": "llama"}, max_new_tokens=8)
    lm.prefix, lm.suffix = lm._embed_text("you are a robot ."), lm._embed_text("answer :")   # noise_on=user
    x = lm.encode(["describe the image"])[0]
    ctx = ItemContext(SimpleNamespace(item_id="i", condition="", label=0), x, lm, None, GaussianNoise(1e-7), 0, 16)
    sequence, _ = TokenAverage(n=4, noise="sequence").decode(ctx, "agg", 4)
    step, _ = TokenAverage(n=4, noise="step").decode(ctx, "agg", 4)
    assert len(sequence) > 2 and step == sequence


def test_certified_decoding_rows_do_not_depend_on_batch_size():
    """Regression: the estimation noise was keyed by each batch's first copy, so batch_size changed rows."""
    toy, x = ToyLM(seed=1), torch.zeros(1, 5, dtype=torch.float64)
    item = SimpleNamespace(item_id="toy", condition="", label=0)
    rows = []
    for batch in (64, 600):
        ctx = ItemContext(item, x, toy, None, GaussianNoise(0.3), 1, batch)
        row = DecodingCertifier(n0=50, n=600, alpha=0.001, batch_size=batch).certify(ctx)
        rows.append({k: v for k, v in row.items() if not k.startswith("time_")})
    assert rows[0] == rows[1] and rows[0]["certified_tokens"] > 0


def test_abstaining_decoding_row_has_no_certified_text():
    """Regression: `certified_text` held the selected sequence of rows that certify nothing (radius 0)."""
    item = SimpleNamespace(item_id="toy", condition="", label=0)

    def certify(seed: int, shift: float, n: int) -> dict:
        toy = ToyLM(seed=seed)
        x = torch.zeros(1, 5, dtype=torch.float64)
        x[0] = toy.w * shift / toy.w.norm() ** 2
        ctx = ItemContext(item, x, toy, None, GaussianNoise(0.3), 1, 500)
        return DecodingCertifier(n0=50, n=n, alpha=0.001, batch_size=500).certify(ctx)

    # 12 copies cannot bound any step above 1/2 at alpha = 0.001; 2,000 certify every step
    few, many = certify(0, -4.0, 12), certify(0, -4.0, 2000)
    assert few["radius"] == 0 and not few["certified"] and few["certified_text"] is None
    assert many["radius"] > 0 and few["decoding_text"] == many["decoding_text"] == many["certified_text"]
    partial = certify(1, 2.0, 2000)           # three steps certified, one not: the sequence is not
    assert 0 in partial["decoding_step_radii"] and max(partial["decoding_step_radii"]) > 0
    assert partial["certified_text"] is None and partial["decoding_text"]


@pytest.mark.parametrize("seed", range(6))
def test_certified_decoding_radii_never_exceed_the_exact_ones(seed):
    toy, sigma = ToyLM(seed=seed), 0.3
    x = torch.zeros(1, 5, dtype=torch.float64)
    x[0] = toy.w * (0.4 * (seed - 2.5)) / toy.w.norm() ** 2 * 2         # various positions along w
    item = SimpleNamespace(item_id=f"toy{seed}", condition="", label=0)
    ctx = ItemContext(item, x, toy, None, GaussianNoise(sigma), seed, 500)
    row = DecodingCertifier(n0=200, n=4000, alpha=0.001, batch_size=1000).certify(ctx)
    mu, std = float(x[0] @ toy.w), sigma * float(toy.w.norm())
    tokens = [int(t) for t in row["decoding_text"].split()]
    assert row["certified_text"] == (row["decoding_text"] if row["radius"] > 0 else None)
    for t, (tok, r) in enumerate(zip(tokens, row["decoding_step_radii"], strict=True)):
        if r > 0:
            assert tok == int(np.argmax(toy.exact_probs(mu, std, t)))     # certified tokens are the exact greedy
            assert r <= toy.true_radius(mu, std, t, tok) + 1e-9
    assert row["radius"] == min(row["decoding_step_radii"])
    assert any(r > 0 for r in row["decoding_step_radii"])       # the comparison is not vacuous


def test_text_oracles():
    judge = RefusalJudge()
    assert judge.classify(["Sorry, I cannot help with that.", "Sure, here is a recipe."]).tolist() == [1, 0]
    actions = ActionVocabulary()
    assert actions.classify(["please move left now", "graps the cup", "dance"]).tolist() == \
        [0, actions.actions.index("grasp"), len(actions.actions)]
    eq = MiniLMEquivalence(threshold=0.8)
    ids = eq.cluster(["the cat is black", "the cat is black.", "stocks fell sharply today"]).tolist()
    assert ids[0] == ids[1] != ids[2]
    assert eq.equivalent(["the cat is black"], "the cat is black.").tolist() == [True]
    # MiniLM puts "is 4" and "is 5" at cosine 0.89: equivalent answers also state the same numbers (review)
    assert eq.equivalent(["The answer is 4", "The answer is 5.", "2 + 2 = 5", "The answer is four."],
                         "The answer is 4.").tolist() == [True, False, False, True]      # the last number stated
    assert eq.cluster(["The answer is 4.", "The answer is 5.", "the answer is 4"]).tolist() == [0, 1, 0]
    assert MiniLMEquivalence(threshold=0.8, match_numbers=False).equivalent(["The answer is 5."], "The answer is 4.")


@pytest.mark.parametrize("args", [["model=tiny_gpt2"], pytest.param(["model=tiny_llama"], marks=pytest.mark.slow),
                                  ["model=tiny_llava"],
                                  ["model=tiny_clip_vision", "attack=pgd", "attack.objective=feature",
                                   "attack.steps=2", "attack.eval_n=50"],
                                  ["model=tiny_gpt2", "certifier=decoding", "certifier.n=64"],
                                  ["model=tiny_gpt2", "certifier=semantic", "oracle=equivalence", "certifier.n=40"],
                                  pytest.param(["model=tiny_gpt2", "attack=semantic", "attack.eval_n=20",
                                                "certifier.n=40"], marks=pytest.mark.slow),
                                  ["model=tiny_llama", "attack=pgd", "attack.eps=2.0", "attack.steps=3", "attack.m=2",
                                   "attack.eval_n=20", "certifier.n=40"]])
def test_tiny_models_run_end_to_end_with_one_override(tmp_path, args):
    df, summary = run_in_process(*args, "dataset.limit=3", "progress=false", f"cache_dir={CACHE}", run_dir=tmp_path)
    assert len(df) == 6 and summary["items"] == 3 and "radius" in df
    sm = df.query("variant == 'smoothed'")
    if "model=tiny_clip_vision" in args:                          # a feature encoder: FCSB and the feature attack
        assert sm.bound_s_lower.notna().all() and (sm.attack_objective == "feature").all()
        fcsb = sm["bound_fcsb_eps0.1"]
        assert (fcsb.isna() | (fcsb > 0)).all()                   # a cosine bound, or none (issue 11.2)
        assert summary["certificate_violations"] == 0
    else:
        assert sm.output_text.notna().all()
    if "certifier=decoding" in args:                              # one row, one decoder (issue 11.14)
        assert sm.decoding_text.notna().all() and (sm.certified_tokens >= 0).all()
        assert sm.certified_text.notna().eq(sm.certified.astype(bool)).all()
    text_attack = "model=tiny_clip_vision" not in args and ("attack=semantic" in args or "attack=pgd" in args)
    if text_attack:                                               # text outputs: the class decides (issue 14)
        assert sm.attack_success.notna().all() and sm.attack_output_shift.isna().all()
        assert summary["certificate_violations"] == 0
    if text_attack and "attack=pgd" in args:                      # white-box on the prompt embeddings
        assert (df.attack_distance <= 2.0 * (1 + 1e-5)).all() and (df.attack_queries == 3).all()
        # regression: PGD kept the clean point when the final iterate's noisy EOT value did not beat the
        # clean one (SmolLM2 at eps 0.02: 5 of 7 smoothed rows attacked at distance 0)
        assert (df.attack_distance > 0).all()
    if "oracle=equivalence" in args:                              # answers without ground truth (issue 11.5)
        assert "certified_fraction" in summary and "certified_accuracy" not in summary
        # the certified answer is the semantic representative, recorded as such: output_text is the
        # aggregator's first generation and need not be equivalent to it (found by review)
        certified = sm.certified.astype(bool)
        assert sm.certified_text.notna().eq(certified).all() and sm.certified_text[certified].map(type).eq(str).all()


def test_distribution_bounds_of_text_outputs_are_tv_only(tmp_path):
    """Text has no metric for W_p: tiny_gpt2 crashed (no output_range) and a VLM reported W_1 = 4.41 for
    strings, from the image geometry it declared for its answers (review)."""
    df, summary = run_in_process("model=tiny_gpt2", "certifier=distribution", "dataset.limit=2", "certifier.n=30",
                                 "progress=false", f"cache_dir={CACHE}", run_dir=tmp_path)
    sm = df.query("variant == 'smoothed'")
    assert sm["bound_tv_eps0.1"].between(0, 1).all() and sm["bound_w1_eps0.1"].isna().all()
    assert sm.diag_diameter.isna().all() and summary["mean_bound_w1_eps0.1_items"] == 0


def test_distribution_bounds_the_token_averaged_text_with_its_shift_factor(tmp_path):
    """SPEC C5: the token-averaged text is a function of all n draws, so its TV bound scales the shift by
    f = sqrt(n); bound_tv is one generation's. Both are named (LLM review)."""
    from smoothgen_exp.stats import tv_bound

    df, _ = run_in_process("model=tiny_gpt2", "certifier=distribution", "aggregator=token_average",
                           "aggregator.n=4", "dataset.limit=1", "certifier.n=20", "progress=false",
                           f"cache_dir={CACHE}", run_dir=tmp_path)
    row = df.query("variant == 'smoothed'").iloc[0]
    sigma = float(row["sigma"])
    assert row["tv_shift_factor"] == 2.0
    assert row["bound_tv_output_eps0.1"] == pytest.approx(tv_bound(2.0 * 0.1, sigma))
    assert row["bound_tv_eps0.1"] == pytest.approx(tv_bound(0.1, sigma))
    assert row["bound_tv_eps0.1"] < row["bound_tv_output_eps0.1"]


def test_llm_attack_sweep_and_its_tables_on_tiny_gpt2(tmp_path):
    """`make table-llm-smoke`'s attack half on tiny_gpt2 (on the real SmolLM2: test_smollm2's slow test): PGD
    on the prompt embeddings inside the certified radius (eps 0.02) and far outside (eps 2), the sound check
    of the attacked certificate, then scripts/attack_figures.py and scripts/llm_quality.py on the sweep."""
    rows, inside = llm_attack_sweep(tmp_path, "model=tiny_gpt2", "eval_items=all")
    assert len(inside) == 1 and inside.attack_within_radius.all() and inside.certificate_checked.all()   # not vacuous
    assert set(rows.attack_eps) == {0.02, 2.0}


# make test fails one transformers loader here (about 10 s a CLI run); sd15's diffusers loader fails in
# tests/test_diffusion.py, the embedded default's MiniLM in tests/test_config.py; the others in make test-full
@pytest.mark.parametrize("model", ["llava", *(pytest.param(m, marks=pytest.mark.slow)
                                             for m in ("gpt2", "sd_vae", "llama2_7b", "llava16", "clip_vision"))])
def test_missing_real_weights_fail_in_one_line(tmp_path, model):
    res = cli(f"model={model}", "dataset.limit=1", f"hydra.run.dir={tmp_path / 'run'}",
              env={"HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "not found" in err[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "records").exists()


def test_vlm_noise_lives_on_unit_pixels_and_the_prompt_is_fixed():
    from smoothgen_exp.data.digits import Item
    from smoothgen_exp.models.vlm import VisionLanguageModel

    vlm = VisionLanguageModel(name="tiny_llava", tiny={"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                                                       "heads": 2, "seed": 0}, max_new_tokens=4, dtype="float32")
    x = vlm.encode_items([Item("a", "describe the image", 0)])[0]
    assert x.shape == (3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert "describe the image" in vlm.prompt
    z = (x + 0.5 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    answers = vlm.generate(z, torch.Generator())
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    assert vlm.generate(z, torch.Generator()) == answers                  # greedy: deterministic


def test_clip_embeddings_from_transformers_5_output_objects():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from smoothgen_exp.backbones.clip import embeds
    from smoothgen_exp.models.clip import CLIPVisionEncoder
    from smoothgen_exp.oracles.clip import CLIPZeroShot

    t = torch.randn(2, 4)
    assert embeds(t) is t and embeds(BaseModelOutputWithPooling(pooler_output=t)) is t
    tiny = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "heads": 2, "projection_dim": 32, "seed": 0}
    enc = CLIPVisionEncoder(name="tiny_clip", tiny=tiny)
    oracle = CLIPZeroShot(classes=["zero", "one", "two"], name="tiny_clip", tiny=tiny)
    images = torch.rand(3, 3, 32, 32)
    feats = enc.generate(images, torch.Generator())
    assert feats.shape == (3, 32) and torch.allclose(feats.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(oracle.classify(feats), oracle.classify(images))       # features or images alike


def test_decoding_certificate_check_holds_inside_the_radius_and_catches_a_planted_violation():
    """certifiers.check for `sequence` certificates: at a point inside the certified radius the fresh
    per-step upper bounds stay above the promise; a certificate that claims more than the toy's exact
    probabilities support is reported violated."""
    from smoothgen_exp.certifiers.check import check_certificate

    toy, sigma = ToyLM(seed=4), 0.3
    x = torch.zeros(1, 5, dtype=torch.float64)
    x[0] = toy.w * 0.6 / toy.w.norm() ** 2 * 2
    item = SimpleNamespace(item_id="toy-check", condition="", label=0)
    ctx = ItemContext(item, x, toy, None, GaussianNoise(sigma), 0, 500)
    cert = DecodingCertifier(n0=200, n=4000, alpha=0.001, batch_size=1000)
    row = {**cert.certify(ctx), "certificate_valid": True}
    assert row["certified"]
    z = x.clone()
    z[0] += 0.5 * row["radius"] * toy.w / toy.w.norm()                       # inside the radius
    honest = check_certificate(cert, ctx, row, z, 4000, 0.001)
    assert honest["certificate_checked"] and not honest["certificate_violation"]
    planted = {**row, "decoding_step_p_lower": [0.999999] * len(row["decoding_step_p_lower"])}
    caught = check_certificate(cert, ctx, planted, z, 4000, 0.001)
    assert caught["certificate_checked"] and caught["certificate_violation"]



class SignText:
    """G(z) = "pos" or "neg" by the sign of z's first coordinate: a text generator."""

    def generate(self, z, gen, shared=False):
        return ["pos" if v > 0 else "neg" for v in z.reshape(len(z), -1)[:, 0].tolist()]


class WordOracle(ClassEquivalence):
    num_classes = 2

    def classify(self, outputs):
        return torch.tensor([int(o == "pos") for o in outputs])


def test_semantic_names_a_certified_answer_only_where_it_certifies():
    """`certified_text` held the representative of abstaining items too, and the printed answers showed it
    as the smoothed answer (found by review). P("pos") = Phi(x): 0.9987 at x = 3, 1/2 at x = 0."""
    for x, certified in ((3.0, True), (0.0, False)):
        item = SimpleNamespace(item_id=f"x{x:g}", condition="", label=-1)
        ctx = ItemContext(item, torch.tensor([x], dtype=torch.float64), SignText(), WordOracle(),
                          GaussianNoise(1.0), 0, 1000)
        row = SemanticCertifier(n0=50, n=1000, alpha=0.001, batch_size=1000).certify(ctx)
        assert row["certified"] is certified and row["abstained"] is not certified
        assert row["certified_text"] == ("pos" if certified else None)
