"""Quality metrics: FID through torchmetrics with the oracle's features, text metrics, retention."""

import math
from types import SimpleNamespace

import pytest
import sacrebleu
import torch

from smoothgen_exp.data.digits import digit_images
from smoothgen_exp.errors import WeightsNotFound
from smoothgen_exp.metrics.quality import fid_score, make_fid
from smoothgen_exp.metrics.text import ROUGE_TYPES, TextQuality, bleu, minilm_similarity, rouge, text_quality

from .conftest import CACHE, run_in_process


def test_fid_of_a_set_with_itself_is_zero_and_grows_under_a_shift(oracle):
    real = torch.from_numpy(digit_images("heldout")[0])
    fids = []
    for shift in (0.0, 0.1, 0.3):
        fid = make_fid("oracle", oracle, (1, 8, 8), None)
        fid.update(real, real=True)
        fid.update((real + shift).clamp(0, 1), real=False)
        fids.append(float(fid.compute()))
    assert abs(fids[0]) < 1e-6
    assert 0 < fids[1] < fids[2]


def test_fid_from_fewer_samples_than_features_warns(oracle, caplog, monkeypatch):
    """The oracle's features have 128 dimensions: FID from 20 generated digits is mostly bias (it is far
    above the same generator's FID from the full set) and says so; from the full set it does not."""
    real = torch.from_numpy(digit_images("heldout")[0])
    scores = []
    for n in (20, len(real)):
        fid = make_fid("oracle", oracle, (1, 8, 8), None)
        fid.update(real, real=True)
        fid.update(real[:n], real=False)
        caplog.clear()
        scores.append(fid_score(fid, "metric_fid_x"))
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(warned) == (n <= 128) and all("20 generated samples" in w for w in warned)
    assert scores[0] > 10 * max(scores[1], 1e-6)
    # every rank computes the same synced FID: only rank 0 warns (each rank printed it before)
    monkeypatch.setenv("RANK", "1")
    caplog.clear()
    fid = make_fid("oracle", oracle, (1, 8, 8), None)
    fid.update(real, real=True)
    fid.update(real[:20], real=False)
    fid_score(fid, "metric_fid_x")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # a real set no larger than the features (Inception's 2048 over 360 digits) warns too (review)
    monkeypatch.setenv("RANK", "0")
    caplog.clear()
    fid = make_fid("oracle", oracle, (1, 8, 8), None)
    fid.update(real[:100], real=True)
    fid.update(real, real=False)
    fid_score(fid, "metric_fid_x")
    assert "against 100 real samples, no more than its 128 feature dimensions" in caplog.text


def test_fid_of_one_generated_sample_is_nan_with_a_warning(oracle, caplog):
    """A one-item run of a metric that generates one image per item (tiny_vae's reconstruction FID) stopped
    with torchmetrics' RuntimeError (found by shrinking the vae_table smoke to dataset.limit=1)."""
    real = torch.from_numpy(digit_images("heldout")[0])
    fid = make_fid("oracle", oracle, (1, 8, 8), None)
    fid.update(real, real=True)
    fid.update(real[:1], real=False)
    assert math.isnan(fid_score(fid, "metric_fid_x"))
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "metric_fid_x is NaN: FID needs at least 2 generated samples, and this run made 1"]


@pytest.mark.parametrize("sync", [True, False])
def test_fid_counts_the_samples_it_computes_from(oracle, caplog, sync):
    """Two simulated processes with 100 generated digits each: a synced FID is computed from 200 (> 128
    feature dimensions, no warning); one built with sync_on_compute=False (the attacked outputs, gathered
    on rank 0) from its own 100, and neither compute() nor the count may sync it (review: assigning the
    attribute after construction did not stop compute() from syncing). A synced score is the one of both
    ranks' sets, from one sync of each state (the count once synced them a second time)."""
    real = torch.from_numpy(digit_images("heldout")[0])
    fid, both = (make_fid("oracle", oracle, (1, 8, 8), None, sync_on_compute=sync) for _ in range(2))
    for times, metric in ((1, fid), (2 if sync else 1, both)):
        for _ in range(times):
            metric.update(real, real=True)
            metric.update(real[:100], real=False)
    fid.distributed_available_fn = lambda: True
    synced = []

    def two_ranks(tensor, group=None):
        if not sync:
            raise AssertionError("a FID built with sync_on_compute=False was synced")
        synced.append(tensor)
        return [tensor, tensor]

    fid.dist_sync_fn = two_ranks
    caplog.clear()
    assert fid_score(fid, "metric_fid_x") == pytest.approx(float(both.compute()), rel=1e-9)
    assert any("100 generated samples" in r.getMessage() for r in caplog.records) == (not sync)
    assert len(synced) == (len(fid._defaults) if sync else 0)          # each state synced once


def test_fid_never_downloads(oracle):
    with pytest.raises(WeightsNotFound, match="fid_weights"):
        make_fid("inception", oracle, (1, 8, 8), None)


def test_bleu_equals_sacrebleu_on_a_fixed_pair():
    hyp, ref = ["the cat sat on the mat today"], ["the cat sat on the mat"]
    assert bleu(hyp, ref) == pytest.approx(sacrebleu.corpus_bleu(hyp, [ref]).score)
    assert bleu(ref, ref) == pytest.approx(100.0)


def test_bleu_scores_a_short_exact_answer_in_full():
    """Review: corpus BLEU without effective order is 0 where the corpus has no 4-grams, so a correct
    one-word answer scored 0 ("Paris" against "Paris") and retention_bleu was NaN on qa_facts. Where every
    order has n-grams, the score is sacrebleu's default BLEU."""
    import sacrebleu

    from smoothgen_exp.metrics.text import bleu

    assert bleu(["Paris"], ["Paris"]) == pytest.approx(100.0)
    assert bleu(["Paris", "Rome"], [["Paris", "paris"], "Madrid"]) < bleu(["Paris", "Madrid"], [["Paris", "paris"], "Madrid"])
    long = ["the cat sat on the mat today", "a small dog ran across the big green park"]
    refs = ["the cat sat on a mat today", "a little dog ran across the big green park"]
    assert bleu(long, refs) == pytest.approx(sacrebleu.corpus_bleu(long, [refs]).score)


def test_an_fid_over_digits_of_some_classes_only_warns(caplog):
    """Review: the real set holds all ten digits, so dataset.limit=4 (digits 0-3) scored FID 328 against 53
    at limit 10; the score measured the class mix. A mix that is not balanced over the ten digits warns."""
    import logging

    import pandas as pd

    from smoothgen_exp.metrics.quality import warn_unbalanced_classes

    def rows(labels):
        return pd.DataFrame({"variant": ["smoothed"] * len(labels) + ["baseline"] * len(labels), "label": labels * 2})

    with caplog.at_level(logging.WARNING):
        warn_unbalanced_classes(rows(list(range(10)) * 4), "metric_fid_*")
        assert not caplog.records
        warn_unbalanced_classes(rows([0, 1, 2, 3]), "metric_fid_*")
    assert "not balanced (0: 1, 1: 1, 2: 1, 3: 1)" in caplog.text


def test_rouge_and_similarity():
    scores = rouge(["a small black cat"], ["a small black cat"])
    assert set(scores) == set(ROUGE_TYPES) and "rougeLsum" not in scores
    assert all(v == pytest.approx(1.0) for v in scores.values())
    assert rouge(["completely different words"], ["a small black cat"])["rouge1"] == 0.0
    assert minilm_similarity(["a small cat"], ["a small cat"]) == pytest.approx(1.0, abs=1e-5)
    close = minilm_similarity(["a tiny kitten"], ["a small cat"])
    far = minilm_similarity(["the stock market fell"], ["a small cat"])
    assert close > far
    assert set(text_quality(["a"], ["a"])) == {"bleu", *ROUGE_TYPES, "minilm_similarity"}


def test_quality_columns_and_retention_in_a_run(tiny_run):
    import json

    import pandas as pd

    run_dir, _ = tiny_run
    df = pd.read_parquet(run_dir / "records")
    assert df.metric_digit_prob.between(0, 1).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("metric_fid_baseline", "metric_fid_smoothed", "retention_fid", "retention_digit_prob"):
        assert key in summary
    assert summary["retention_digit_prob"] == pytest.approx(
        summary["metric_digit_prob_smoothed"] / summary["metric_digit_prob_baseline"])
    # unfiltered noisy generations beside the majority vote's oracle-filtered outputs (image review)
    smoothed = df[df.variant == "smoothed"]
    assert smoothed.metric_digit_prob_noisy.between(0, 1).all() and df[df.variant == "baseline"].metric_digit_prob_noisy.isna().all()
    assert summary["metric_digit_prob_noisy"] == pytest.approx(smoothed.metric_digit_prob_noisy.astype(float).mean())
    assert summary["retention_digit_prob_noisy"] == pytest.approx(
        summary["metric_digit_prob_noisy"] / summary["metric_digit_prob_baseline"])
    assert {"metric_fid_noisy", "retention_fid_noisy"} <= set(summary)


def test_majority_outputs_are_judged_by_the_oracle_that_chose_them(tmp_path):
    """The smoothed digit probability under aggregator=majority is conditional on the oracle's own vote: at
    sigma 0.5 it stayed near the baseline's while one noisy generation lost most of it (image review)."""
    _, summary = run_in_process("metrics=digits", "dataset.limit=8", "certifier.n0=10", "certifier.n=100",
                                "metrics.samples_per_item=4", "smoothing.sigma=0.5", "progress=false",
                                f"cache_dir={CACHE}", run_dir=tmp_path)
    assert summary["retention_digit_prob_noisy"] < 0.6 < summary["retention_digit_prob"]


def test_text_quality_scores_smoothed_answers_against_baseline_and_canonical_answers():
    import pandas as pd

    records = pd.DataFrame([
        {"item_id": "q0", "variant": "baseline", "output_text": "The capital of France is Paris.", "reference_answer": "Paris"},
        {"item_id": "q0", "variant": "smoothed", "output_text": "Paris.", "reference_answer": "Paris"},
        {"item_id": "q1", "variant": "baseline", "output_text": "It is Berlin.", "reference_answer": "Berlin"},
        {"item_id": "q1", "variant": "smoothed", "output_text": "It is Berlin.", "reference_answer": "Berlin"},
    ])
    got = TextQuality().summary(records)
    # per item ROUGE-1 F against the answer: baseline 2/7 and 1/2, smoothed 1 and 1/2
    assert got["metric_rouge1_baseline_vs_answer"] == pytest.approx((2 / 7 + 1 / 2) / 2)
    assert got["metric_rouge1_smoothed_vs_answer"] == pytest.approx(0.75)
    assert got["retention_rouge1"] == pytest.approx(0.75 / ((2 / 7 + 1 / 2) / 2))
    assert got["metric_bleu_smoothed_vs_baseline"] == pytest.approx(bleu(["Paris.", "It is Berlin."],
                                                                         ["The capital of France is Paris.", "It is Berlin."]))
    # without canonical answers (harmful prompts): agreement with the baseline only, no retention
    alone = TextQuality().summary(records.drop(columns="reference_answer"))
    assert "metric_rouge1_smoothed_vs_baseline" in alone and not any(k.startswith("retention") for k in alone)


def test_text_quality_scores_against_every_accepted_spelling():
    """Regression: BLEU, ROUGE and MiniLM compared answers with the first spelling only, so "twenty" scored
    0 against "20|twenty"."""
    import pandas as pd

    from smoothgen_exp.data.answers import AnswersCSV

    spelt = "the answer is 20|the answer is twenty"
    rows = [{"item_id": "q0", "variant": v, "output_text": f"the answer is {t}", "reference_answer": "the answer is 20",
             "reference_answers": spelt} for v, t in (("baseline", "20"), ("smoothed", "twenty"))]
    rows += [{"item_id": "q1", "variant": v, "output_text": "it is Paris", "reference_answer": "it is Paris",
              "reference_answers": "it is Paris"} for v in ("baseline", "smoothed")]
    got = TextQuality().summary(pd.DataFrame(rows))
    assert got["metric_rouge1_smoothed_vs_answer"] == got["metric_rouge1_baseline_vs_answer"] == 1.0
    assert got["metric_minilm_similarity_smoothed_vs_answer"] == pytest.approx(1.0, abs=1e-5)
    hyps = ["the answer is twenty", "it is Paris"]
    assert got["metric_bleu_smoothed_vs_answer"] == pytest.approx(100.0) == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [["the answer is 20", "it is Paris"], ["the answer is twenty", None]]).score)
    assert bleu(hyps, ["the answer is 20", "it is Paris"]) < 80          # the first spelling alone
    # the rows carry the dataset's spellings: qa_facts accepts "Kyiv|Kiev"
    data = AnswersCSV(name="qa_facts", path=None, system_prompt=None, limit=None)
    metric = TextQuality()
    metric.setup(None, data, None)
    kyiv = next(i for i in data.items if data.classes[i.label] == "Kyiv")
    row = metric.item(SimpleNamespace(item=kyiv), None, {})["smoothed"]
    assert row == {"reference_answer": "Kyiv", "reference_answers": "Kyiv|Kiev"}


def test_fid_on_a_rank_that_generated_nothing_is_the_synced_score(oracle):
    """More processes than items (distributed.num_processes=2 dataset.limit=1, new-user review): the rank
    with no items holds the synced states but never called update(), which sets what compute() reads
    (torchmetrics' `orig_dtype`), and the run crashed with an AttributeError. Its score is the synced one."""
    real = torch.from_numpy(digit_images("heldout")[0])
    full, empty = (make_fid("oracle", oracle, (1, 8, 8), None, sync_on_compute=False) for _ in range(2))
    full.update(real, real=True)
    full.update(real[:200], real=False)
    for name in full._defaults:                 # what the sync hands the empty rank
        setattr(empty, name, getattr(full, name))
    assert fid_score(empty, "metric_fid_x") == fid_score(full, "metric_fid_x")
