"""Text quality: BLEU (sacrebleu), ROUGE-1/2/L (rouge-score) and MiniLM embedding similarity.

ROUGE-Lsum needs NLTK's sentence-splitter data, which is not available offline; it is skipped
explicitly rather than computed on unsplit text. The MiniLM similarity is a BERTScore-style semantic
similarity: the mean cosine between the sentence embeddings of each hypothesis and its reference.
"""

from __future__ import annotations

from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")   # rougeLsum skipped: needs nltk punkt data (offline)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, default tokenisation), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measures over pairs, 0-1."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        for key, score in scorer.score(ref, hyp).items():
            totals[key] += score.fmeasure
    return {k: v / max(1, len(hypotheses)) for k, v in totals.items()}


def minilm_similarity(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean cosine between all-MiniLM-L6-v2 embeddings of each hypothesis and its reference."""
    from smoothgen_exp.backbones.text_encoder import shared_minilm

    enc = shared_minilm()
    return float((enc.encode(list(hypotheses)) * enc.encode(list(references))).sum(1).mean())


def text_quality(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {"bleu": bleu(hypotheses, references), **rouge(hypotheses, references),
            "minilm_similarity": minilm_similarity(hypotheses, references)}
