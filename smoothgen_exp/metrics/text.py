"""Text quality: BLEU (sacrebleu), ROUGE-1/2/L (rouge-score) and MiniLM embedding similarity.

metrics=text (`TextQuality`) scores a language model's answers, from the run's records: the smoothed
answer (the aggregator's `output_text`: the majority class's representative, or the token-averaged
decode) against the baseline answer, and each against the item's canonical answer when the dataset has
one (qa_facts, robot_commands: `reference_answer`), with retention = smoothed / baseline score against
the canonical answer. BLEU is corpus-level (0-100); ROUGE and MiniLM are means over items (0-1).

ROUGE-Lsum needs NLTK's sentence-splitter data, which is not available offline; it is skipped
explicitly rather than computed on unsplit text. The MiniLM similarity is a BERTScore-style semantic
similarity: the mean cosine between the sentence embeddings of each hypothesis and its reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from smoothgen_exp.config import configured

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


@configured
class TextQuality:
    enabled = True
    requires = {"model": "text outputs"}

    def setup(self, oracle, dataset, model, reference: bool = True) -> None:
        # the canonical answer of each class (answers datasets), read per item as its label's
        self.answers = getattr(dataset, "classes", None)

    def item(self, ctx, aggregator, aggregated: dict) -> dict[str, dict]:
        """The item's canonical answer on both rows (the texts themselves are already recorded)."""
        label = ctx.item.label
        answer = self.answers[label] if self.answers is not None and 0 <= label < len(self.answers) else None
        columns = {} if answer is None else {"reference_answer": answer}
        return {"baseline": columns, "smoothed": dict(columns)}

    def summary(self, records) -> dict[str, float]:
        by_item = {v: records[records.variant == v].set_index("item_id") for v in ("baseline", "smoothed")}
        items = by_item["baseline"].index.intersection(by_item["smoothed"].index)
        baseline, smoothed = (by_item[v].loc[items, "output_text"].fillna("").astype(str).tolist()
                              for v in ("baseline", "smoothed"))
        pairs = {"smoothed_vs_baseline": (smoothed, baseline)}
        if "reference_answer" in by_item["baseline"] and by_item["baseline"].loc[items, "reference_answer"].notna().all():
            answers = by_item["baseline"].loc[items, "reference_answer"].astype(str).tolist()
            pairs |= {"baseline_vs_answer": (baseline, answers), "smoothed_vs_answer": (smoothed, answers)}
        result = {f"metric_{k}_{name}": v for name, (hyp, ref) in pairs.items() for k, v in text_quality(hyp, ref).items()}
        if "smoothed_vs_answer" in pairs:
            for k in ("bleu", *ROUGE_TYPES, "minilm_similarity"):
                base = result[f"metric_{k}_baseline_vs_answer"]
                result[f"retention_{k}"] = result[f"metric_{k}_smoothed_vs_answer"] / base if base > 0 else float("nan")
        return result
