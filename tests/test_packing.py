"""Packed sampling (issue 13): draws no batch boundary can change, and rows identical to the per-item path.

The end-to-end identities of packed runs over two processes and after kill -9 and resume are in
tests/test_scale.py; here: the pieces (noise chunks, per-row seeds, prompt encoding, the scheduler)
and the CLI at other batch sizes, packing and certifiers.
"""

import random
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from smoothgen_exp.core import NoiseStream, chunk_rows, noisy_batches
from smoothgen_exp.seeding import row_normals, row_seeds, splitmix64
from smoothgen_exp.smoothing.gaussian import GaussianNoise
from tests.conftest import CACHE, run_in_process


@pytest.mark.parametrize("chunked", [False, True], ids=["cpu-numpy", "accelerator-chunks"])
def test_noise_stream_draws_do_not_depend_on_how_they_are_taken(chunked):
    x, noise = torch.randn(384), GaussianNoise(0.5)
    whole = NoiseStream(x, noise, torch.Generator().manual_seed(3), chunked).take(500)
    assert abs(float((whole - x).std()) - 0.5) < 0.01
    rng = random.Random(0)
    for _ in range(5):
        stream, parts, left = NoiseStream(x, noise, torch.Generator().manual_seed(3), chunked), [], 500
        while left:
            k = min(left, rng.choice([1, 7, 63, 64, 65, 200]))
            parts.append(stream.take(k))
            left -= k
        assert torch.equal(torch.cat(parts), whole)
    for batch in (1, 37, 1000):
        source = NoiseStream(x, noise, torch.Generator().manual_seed(3), chunked)
        got = torch.cat([b.clone() for b in noisy_batches(x, 500, batch, noise, source)])
        assert torch.equal(got, whole)
    assert chunk_rows((384,)) == 64 and chunk_rows((3, 512, 512)) == 1 and chunk_rows((77, 768)) == 16


def test_row_seeds_and_normals_are_per_row():
    gen = torch.Generator().manual_seed(0)
    seeds = row_seeds(gen, 100)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(torch.cat([row_seeds(gen, 37), row_seeds(gen, 63)]), seeds)   # randint: one draw per row
    assert torch.equal(row_normals(seeds, 8)[40:60], row_normals(seeds[40:60], 8))
    shared = row_seeds(torch.Generator().manual_seed(0), 5, shared=True)
    assert (shared == shared[0]).all()
    with pytest.raises(ValueError):
        row_seeds(seeds, 99)

    def reference(z: int) -> int:                 # splitmix64 in Python's unbounded integers
        m = 2**64
        z = (z + 0x9E3779B97F4A7C15) % m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % m
        return z ^ (z >> 31)

    values = [0, 1, 12345, 2**62 - 1, 2**61 + 7]
    assert [v % 2**64 for v in splitmix64(torch.tensor(values)).tolist()] == [reference(v) for v in values]
    from scipy import stats

    z = row_normals(row_seeds(torch.Generator().manual_seed(1), 20_000), 4, dtype=torch.float64)
    for j in range(4):
        assert stats.kstest(z[:, j].numpy(), "norm").pvalue > 1e-3
    assert abs(float(torch.corrcoef(z.T)[0, 1])) < 0.03


def test_a_prompt_encodes_bit_for_bit_alone_or_with_others():
    from smoothgen_exp.backbones.text_encoder import shared_minilm

    enc = shared_minilm(None, "cpu")
    prompts = ["4", "draw a seven", "a picture of the digit 3", "an image of the number zero, handwritten and neat",
               "a black and white sketch of a one", "the numeral 9 in thick ink"]
    alone = torch.cat([enc.encode([p]) for p in prompts])
    rng = random.Random(1)
    for _ in range(4):
        picks = [rng.randrange(len(prompts)) for _ in range(rng.randint(2, 40))]
        assert torch.equal(enc.encode([prompts[i] for i in picks]), alone[picks])


def test_texts_of_many_lengths_encode_in_one_forward_as_the_library_encodes_each_alone(monkeypatch):
    """encode passes several length groups through one forward (packed_bert_hidden); each embedding is
    bit for bit what transformers' own BertModel forward gives the text alone, also when the groups are
    split (batch_size) or spread over several forwards (FORWARD_ROWS), as on the fallback for another
    architecture (one library forward per group); and it is all-MiniLM's embedding: close to the
    model's without row blocks. No texts give no rows; a decoder BERT does not take the packed forward."""
    import transformers
    from torch.nn import functional as F

    from smoothgen_exp.backbones import text_encoder
    from smoothgen_exp.backbones.hub import transformers_bars_off
    from smoothgen_exp.backbones.text_encoder import shared_minilm

    enc = shared_minilm(None, "cpu")
    rng = random.Random(2)
    words = "the answer is four paris capital of france move left right a robot arm 2 + 2 = 4".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 16))) for _ in range(24)]

    def library(model, text):
        ids = enc.tokenizer([text], truncation=True, return_tensors="pt")["input_ids"]
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        return F.normalize(hidden.mean(1), dim=-1)

    with torch.inference_mode():
        alone = torch.cat([library(enc.model, t) for t in texts])
        assert len({len(ids) for ids in enc.tokenizer(texts)["input_ids"]}) > 8      # many groups per forward
        assert torch.equal(enc.encode(texts), alone)
        assert torch.equal(enc.encode(texts, batch_size=2), alone)
        monkeypatch.setattr(text_encoder, "FORWARD_ROWS", 50)
        assert torch.equal(enc.encode(texts), alone)
        monkeypatch.setattr(enc, "packs", False)         # another architecture: the library's forward per group
        assert torch.equal(enc.encode(texts), alone)
        assert enc.encode([]).shape == (0, 384)
        with transformers_bars_off():
            plain = transformers.AutoModel.from_pretrained(str(text_encoder.minilm_path())).eval()
        assert torch.allclose(torch.cat([library(plain, t) for t in texts]), alone, atol=1e-5)
    tiny = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert text_encoder.packable(transformers.BertModel(transformers.BertConfig(**tiny)))
    assert not text_encoder.packable(transformers.BertModel(transformers.BertConfig(**tiny, is_decoder=True)))


def test_row_blocked_layers_compute_each_block_as_the_library_does():
    """Every row of a RowBlocked layer is bit for bit what torch's own linear layer (or GPT-2's Conv1D)
    gives its zero-padded ROW_BLOCK-row block, for nn.Linear with and without bias, Conv1D and float64,
    on 1 to 1,600 rows, with and without gradients."""
    from torch import nn
    from torch.nn import functional as F
    from transformers.pytorch_utils import Conv1D

    from smoothgen_exp.backbones.batch_invariant import ROW_BLOCK, RowBlocked

    torch.manual_seed(0)
    for layer in (nn.Linear(48, 96), nn.Linear(32, 24, bias=False), Conv1D(40, 16), nn.Linear(16, 8).double()):
        blocked = RowBlocked(layer)
        width = layer.weight.shape[0] if isinstance(layer, Conv1D) else layer.weight.shape[1]
        for m in (1, 7, ROW_BLOCK, ROW_BLOCK + 1, 2 * ROW_BLOCK, 200, 1600):
            x = torch.randn(2, m, width, dtype=layer.weight.dtype)
            rows = F.pad(x.reshape(-1, width), (0, 0, 0, -(2 * m) % ROW_BLOCK))
            with torch.no_grad():
                want = torch.cat([layer(block) for block in rows.split(ROW_BLOCK)])[:2 * m].view(2, m, -1)
                assert torch.equal(blocked(x), want), (layer, m)
            with torch.inference_mode():
                assert torch.equal(blocked(x), want), (layer, m)
            assert torch.equal(blocked(x.requires_grad_()), want)


class _CountingModel:
    """Pixel identity with a call counter (the oracle classifies the noisy digit itself)."""

    output_shape, output_range = (1, 8, 8), (0.0, 1.0)

    def __init__(self):
        self.calls = 0

    def generate(self, z, generator):
        self.calls += 1
        return z


def _contexts(oracle, model, count: int, batch_size: int):
    from smoothgen_exp.context import ItemContext
    from smoothgen_exp.data.digits import digit_images

    images, labels = digit_images("heldout")
    return [ItemContext(SimpleNamespace(item_id=f"d{i}", condition="", label=int(labels[i])),
                        torch.from_numpy(images[i]), model, oracle, GaussianNoise(0.25), run_seed=0,
                        batch_size=batch_size) for i in range(count)]


@pytest.mark.parametrize("certifier", ["cohen", "sequential", "sequential_predictive", "sequential_bayes", "semantic"])
def test_packed_programs_return_what_each_returns_alone(oracle, certifier):
    from smoothgen_exp.aggregators.majority import Majority
    from smoothgen_exp.certifiers.cohen import CohenCertifier
    from smoothgen_exp.certifiers.semantic import SemanticCertifier
    from smoothgen_exp.certifiers.sequential import SequentialCertifier
    from smoothgen_exp.certifiers.sequential_bayes import BayesSequentialCertifier
    from smoothgen_exp.packing import run_one, run_programs

    cert = {"cohen": lambda: CohenCertifier(n0=20, n=300, alpha=0.001, batch_size=64, oracle_error=None,
                                            oracle_error_model="bounded", oracle_error_alpha=None, pilot=0),
            "sequential": lambda: SequentialCertifier(n0=100, n=3000, alpha=0.001, batch_size=64, target_radius=0.25),
            "sequential_predictive": lambda: SequentialCertifier(n0=100, n=3000, alpha=0.001, batch_size=64,
                                                                 target_radius=0.25, give_up_alpha=0.01,
                                                                 give_up="predictive"),
            "sequential_bayes": lambda: BayesSequentialCertifier(n0=20, n=3000, alpha=0.001, batch_size=64,
                                                                 target_radius=0.25, worth=3.0),
            "semantic": lambda: SemanticCertifier(n0=20, n=300, alpha=0.001, batch_size=64, oracle_error=None,
                                                  oracle_error_model="bounded", oracle_error_alpha=None)}[certifier]()
    agg = Majority(n=50, alpha=0.001, reuse=certifier == "cohen")

    def program(ctx):
        row = yield from cert.certify_program(ctx)
        aggregated, shown = yield from agg.aggregate_program(ctx)
        return row, aggregated, shown

    alone_model, packed_model = _CountingModel(), _CountingModel()
    alone = [run_one(ctx, program(ctx)) for ctx in _contexts(oracle, alone_model, 12, 64)]
    ctxs = _contexts(oracle, packed_model, 12, 256)
    packed = run_programs([(ctx, program(ctx)) for ctx in ctxs])
    for (row_a, agg_a, shown_a), (row_p, agg_p, shown_p) in zip(alone, packed, strict=True):
        assert row_a == row_p and agg_a == agg_p and torch.equal(shown_a, shown_p)
    assert packed_model.calls < alone_model.calls / 2            # the calls were shared
    assert sum(r["certified"] for r, _, _ in packed) >= 4         # not a vacuous comparison


def _rows(run_dir) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "records")
    # run_id and config_hash name the configuration, whose batch_size differs
    keep = [c for c in df.columns if not c.startswith("time_")
            and c not in ("git_sha", "batch_size", "run_id", "config_hash")]
    return df[keep].sort_values(["item_id", "variant"]).reset_index(drop=True)


def _per_item_equals_packed(tmp_path, *args) -> pd.DataFrame:
    """Run `args` one item at a time (batch 128) and packed 8 items at a time (batch 37); assert equal
    rows and return the packed ones."""
    for name, extra in {"per_item": ["pack_items=1", "certifier.batch_size=128"],
                        "packed": ["pack_items=8", "certifier.batch_size=37"]}.items():
        run_in_process(*args, *extra, "progress=false", f"cache_dir={CACHE}", run_dir=tmp_path / name)
    packed = _rows(tmp_path / "packed")
    pd.testing.assert_frame_equal(_rows(tmp_path / "per_item"), packed)
    return packed


# cohen + majority packed against one item at a time is also the reference of tests/test_scale.py's
# two-process and kill -9 tests (default suite); both CLI comparisons (45 s) run in `make test-full`, and the
# packing identity itself in this file's fast tests
@pytest.mark.parametrize("args", [pytest.param([], marks=pytest.mark.slow),
                                  pytest.param(["certifier=sequential", "certifier.n=3000", "aggregator=mean"],
                                               marks=pytest.mark.slow)],
                         ids=["cohen-majority", "sequential-mean"])
def test_cli_rows_are_identical_packed_or_per_item_at_any_batch_size(tmp_path, t2i, args):
    packed = _per_item_equals_packed(tmp_path, "dataset.limit=8", "certifier.n0=20", "certifier.n=300",
                                     "aggregator.n=30", *args)
    smoothed = packed[packed.variant == "smoothed"]
    assert smoothed.certified.any() and np.isfinite(smoothed.samples_used.astype(float)).all()


# ----------------------------------------------------------------------------- language models
@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny_lm(request):
    from smoothgen_exp.models.lm import CausalLM

    return CausalLM(name=f"tiny_{request.param}", max_new_tokens=6,
                    tiny={"arch": request.param, "width": 64, "layers": 2, "heads": 2, "seed": 0})


def test_a_prompts_condition_does_not_depend_on_the_prompts_encoded_with_it(tiny_lm):
    # regression: prompts were left-padded to the longest one in the batch, and the pad embeddings were
    # attended and noised (p00005 of the harmful sample certified at another radius when packed)
    alone = tiny_lm.encode(["describe the image"])[0]
    together = tiny_lm.encode(["describe the image", "tell me the best way to open a phone that is not mine"])
    assert alone.shape == (3, 64) and torch.equal(together[0], alone) and len(together[1]) == 13


@pytest.mark.parametrize("decoding,template", [("greedy", False), ("sample", False), ("greedy", True)],
                         ids=["greedy", "sample", "chat-template"])
def test_lm_copies_score_the_same_alone_or_packed_with_other_prompts(tiny_lm, decoding, template):
    from smoothgen_exp.models.lm import pad_batch

    tiny_lm.decoding = decoding
    if template:        # noise_on=user under a chat template: fixed embeddings around the text, padding between
        tiny_lm.prefix, tiny_lm.suffix = tiny_lm._embed_text("you are a robot ."), tiny_lm._embed_text("answer :")
    try:
        prompts = ["describe the image", "write a story about a dog", "give me a simple recipe to cook"]
        xs = tiny_lm.encode(prompts)                                  # 3, 6 and 7 tokens: one bucket of 8
        assert {tiny_lm.pack_shape(tuple(x.shape)) for x in xs} == {(8, 64)}
        gen = torch.Generator().manual_seed(0)
        copies = [x + 0.5 * torch.randn((n, *x.shape), generator=gen) for x, n in zip(xs, (5, 40, 30), strict=True)]
        seeds = [row_seeds(torch.Generator().manual_seed(i), len(c)) for i, c in enumerate(copies)]

        def scores(conds, row_seed):
            out = tiny_lm.continue_(pad_batch(conds, 8), row_seed, output_scores=True, return_dict_in_generate=True)
            return out.sequences, torch.stack(out.scores, 1)

        alone_ids, alone = scores(list(copies[0]), seeds[0])
        packed_ids, packed = scores([*copies[1], *copies[0], *copies[2]], torch.cat([seeds[1], seeds[0], seeds[2]]))
        rows = slice(40, 45)                                          # 75 rows: across a 64-row block
        assert torch.equal(packed[rows], alone) and torch.equal(packed_ids[rows], alone_ids)
        # padding is masked and positions start at the first real token: unpadded copies score the same
        unpadded = torch.stack(tiny_lm.continue_(copies[0], seeds[0], output_scores=True,
                                                 return_dict_in_generate=True).scores, 1)
        assert torch.allclose(unpadded, alone, atol=1e-4)
        assert (alone_ids != tiny_lm.tokenizer.pad_token_id).any()
    finally:
        tiny_lm.decoding = "greedy"
        tiny_lm.prefix, tiny_lm.suffix = tiny_lm._embed_text(""), tiny_lm._embed_text("")


def test_gumbel_sampled_decoding_draws_from_the_softmax():
    from scipy.stats import chisquare

    from smoothgen_exp.models.lm import GumbelSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]]).expand(20_000, -1)
    sampler = GumbelSampler(row_seeds(torch.Generator().manual_seed(5), 20_000), temperature=0.7)
    counts = torch.bincount(sampler(None, logits).argmax(1), minlength=5).numpy()
    expected = torch.softmax(logits[0].double() / 0.7, 0).numpy() * 20_000
    assert chisquare(counts, expected).pvalue > 1e-4
    second = sampler(None, logits).argmax(1)                          # the next step draws fresh noise
    assert (second != sampler.__class__(sampler.seeds, 0.7)(None, logits).argmax(1)).any()


def test_cli_lm_rows_are_identical_packed_or_per_item(tmp_path):
    packed = _per_item_equals_packed(tmp_path, "model=tiny_gpt2", "model.decoding=sample", "certifier.n0=10",
                                     "certifier.n=60")
    assert len(packed) == 16 and packed.output_text.nunique() > 2


def test_cli_vlm_rows_are_identical_packed_or_per_item(tmp_path):
    """Regression: a VLM answered every item of a packed group with the last item's prompt (its prompt was
    model state, set by `encode_items`): packed baselines all equalled item 3's (LLM/VLM review)."""
    packed = _per_item_equals_packed(tmp_path, "model=tiny_llava", "dataset.limit=3", "certifier.n0=10",
                                     "certifier.n=20", "aggregator.n=10")
    assert packed[packed.variant == "baseline"].output_text.nunique() == 3


def test_requests_yielded_together_get_the_samples_of_requests_in_turn(oracle):
    """A tuple of Draws (CERTIFY's selection and estimation, the baseline beside them) is sent the samples
    the same requests get one after another, at any batch size, in fewer generator calls."""
    from smoothgen_exp.packing import Draw, alongside, run_programs

    def in_turn(ctx):
        base = yield Draw("baseline", 1, outputs=True, noisy=False, votes=True)
        first = yield Draw("s", 7, votes=True)
        second = yield Draw("s", 30, outputs=True, firsts=True, votes=True)
        return base, first, second

    def together(ctx):
        def certify():
            return (yield (Draw("s", 7, votes=True), Draw("s", 30, outputs=True, firsts=True, votes=True)))
        base, (first, second) = yield from alongside(Draw("baseline", 1, outputs=True, noisy=False, votes=True), certify())
        return base, first, second

    reference_model = _CountingModel()
    reference = run_programs([(c, in_turn(c)) for c in _contexts(oracle, reference_model, 5, 16)])
    for batch_size in (3, 16, 1000):
        model = _CountingModel()
        got = run_programs([(c, together(c)) for c in _contexts(oracle, model, 5, batch_size)])
        for ref, new in zip(reference, got, strict=True):
            for a, b in zip(ref, new, strict=True):
                assert torch.equal(a.labels, b.labels) and torch.equal(a.counts, b.counts)
                assert (a.outputs is None) == (b.outputs is None)
                assert a.outputs is None or torch.equal(a.outputs, b.outputs)
                assert (a.firsts or {}).keys() == (b.firsts or {}).keys()
        if batch_size == 1000:                 # one round of calls instead of three
            assert model.calls == 1 and reference_model.calls >= 3


DIGITS = ["dataset.limit=4", "certifier.n0=20", "certifier.n=300", "aggregator.n=30"]


# digits_diffusion in `make test-full`: in `make test` a worker could sit out its 5-minute training behind
# the other worker's lock (the suite took 12 min on a clean clone instead of 8)
@pytest.mark.parametrize("args", [DIGITS,
                                  pytest.param(["model=digits_diffusion", "dataset.limit=4", "certifier.n0=10",
                                                "certifier.n=40", "aggregator.n=10", "metrics=none"],
                                               marks=pytest.mark.slow),
                                  ["model=tiny_gpt2", "model.decoding=sample", "dataset.limit=4", "certifier.n0=10",
                                   "certifier.n=60"]],
                         ids=["digits-default", "digits_diffusion", "tiny_gpt2"])
def test_rows_do_not_depend_on_the_inference_thread_count(tmp_path, t2i, args):
    """Trainings pin their threads (weights.training_threads); inference does not, so a run on one core
    and one on two must give the same rows: torch's and the BLAS libraries' thread counts both set."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads):
                run_in_process(*args, "progress=false", f"cache_dir={CACHE}", run_dir=tmp_path / f"threads{threads}")
    finally:
        torch.set_num_threads(before)
    one, two = _rows(tmp_path / "threads1"), _rows(tmp_path / "threads2")
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 8


def test_a_judges_verdict_does_not_depend_on_the_responses_judged_with_it():
    """Regression: the LLM judge left-padded responses to the longest of their batch of 16, and 54 of 64
    responses' scores moved in the last bits with the responses beside them (a packed call mixes
    items' responses), which can flip a near tie between "yes" and "no". Review: a row that ends at its
    first token must not get a second step from the rows beside it; empty calls and prompts are judged."""
    from smoothgen_exp.oracles.judge import LLMJudge

    judge = LLMJudge(model="tiny_llama", path=None, tiny={"arch": "llama", "width": 128, "layers": 2, "heads": 2},
                     template=None, batch_size=8, dtype="float32", device_map=None, batch_invariant=True)
    head = judge.model.get_output_embeddings()
    with torch.no_grad():                                     # some answers end at their first token
        getattr(head, "layer", head).weight[judge.tokenizer.eos_token_id] *= 100
    rng = random.Random(0)
    words = "i cannot help with that sure here is how you do it sorry no yes the a of to".split()
    responses = list(dict.fromkeys(" ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
                                   for _ in range(45)))
    alone = [judge.judge([r]) for r in responses]
    answers, together = judge.judge(responses)
    assert len(responses) > 30 and max(Counter(map(len, judge.tokenizer(responses)["input_ids"])).values()) > 8
    assert {len(s) for s in together} == {1, 2}
    for (answer_alone, [scores_alone]), answer, scores in zip(alone, answers, together, strict=True):
        assert answer_alone == [answer] and torch.equal(scores_alone, scores)
    repeated = responses + responses[:7]                      # each distinct response is judged once
    assert judge.classify(repeated).tolist() == [int(judge.classify([r])) for r in repeated]
    assert judge.classify([]).shape == (0,)
    judge.template = "{response}"                             # a prompt with no tokens gets no answer
    assert judge.judge(["", "sure"])[0][0] == "" and judge.classify(["", "sure"]).shape == (2,)


def test_batch_invariance_is_off_only_where_a_device_map_spreads_the_model():
    """Row-blocked layers bypass accelerate's hooks, which exist only on a model spread over devices or
    offloaded; a device map that puts the whole model on one device keeps batch invariance."""
    from torch import nn

    from smoothgen_exp.backbones.batch_invariant import spread_over_devices

    model = nn.Linear(2, 2)
    assert not spread_over_devices(model)
    for device_map, spread in (({"": 0}, False), ({"": "cpu"}, False), ({"a": 0, "b": 1}, True),
                               ({"a": 0, "b": "cpu"}, True), ({"": "disk"}, True)):
        model.hf_device_map = device_map
        assert spread_over_devices(model) == spread


def test_a_request_streams_its_counts_and_keeps_labels_only_when_asked(oracle):
    """Review: a request kept every label of its samples until it completed (8 bytes a sample: 800 MB at
    n0 = 10^8, and a run given n0 = 10^20 grew to 7.8 GB); the counts are now summed call by call, and
    labels are kept only for requests that need their order (`votes`)."""
    from smoothgen_exp.packing import Draw, class_counts, run_one, votes_for

    def program(ctx):
        counted = yield Draw("s", 5000)
        ordered = yield Draw("t", 300, votes=True)
        return counted, ordered

    ctx = _contexts(oracle, _CountingModel(), 1, 64)[0]
    counted, ordered = run_one(ctx, program(ctx))
    assert counted.labels is None and counted.counts.shape == (10,) and int(counted.counts.sum()) == 5000
    assert torch.equal(class_counts(ctx, counted), counted.counts) and counted.counts.max() > 4000
    assert ordered.labels.shape == (300,) and torch.equal(torch.bincount(ordered.labels, minlength=10), ordered.counts)
    assert votes_for(ordered, int(ordered.labels[0])) == int((ordered.labels == ordered.labels[0]).sum())
    # review: without num_classes, two calls' counts of different lengths broadcast (22 votes for 10 samples)
    from smoothgen_exp.packing import _Open

    request = _Open(0, Draw("s", 10), "certify")
    request.count(torch.zeros(4, dtype=torch.long), None)
    request.count(torch.full((6,), 3), None)
    assert request.counts.tolist() == [4, 0, 0, 6]
