"""Text quality: BLEU (sacrebleu), ROUGE-1/2/L (rouge-score) and MiniLM embedding similarity.

metrics=text (`TextQuality`) scores a language model's answers, from the run's records: the smoothed
answer (the aggregator's `output_text`: the majority class's representative, or the token-averaged
decode) against the baseline answer, and each against the item's canonical answer when the dataset has
one (qa_facts, robot_commands: `reference_answer`), with retention = smoothed / baseline score against
the canonical answer. BLEU is corpus-level (0-100, effective order: `bleu`); ROUGE and MiniLM are means
over items (0-1).
Against the canonical answer every accepted spelling is a reference ("20|twenty"): BLEU is
multi-reference (sacrebleu), ROUGE and MiniLM take the best-matching spelling per item.

ROUGE-Lsum needs NLTK's sentence-splitter data, which is not available offline; it is skipped
explicitly rather than computed on unsplit text. The MiniLM similarity is a BERTScore-style semantic
similarity: the mean cosine between the sentence embeddings of each hypothesis and its reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from smoothgen_exp.config import configured

# one item's reference: one text, or every accepted spelling of it
Reference = str | Sequence[str]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")   # rougeLsum skipped: needs nltk punkt data (offline)


def _spellings(references: Sequence[Reference]) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def bleu(hypotheses: Sequence[str], references: Sequence[Reference]) -> float:
    """Corpus BLEU (sacrebleu, default tokenisation), 0-100; an item with several references is scored
    against all of them (sacrebleu's multi-reference BLEU, None where an item has fewer). With effective
    order: n-gram orders of which the corpus has none are left out of the mean (where every order has
    n-grams it is sacrebleu's default BLEU). Without it, answers under 4 tokens (every canonical answer
    of qa_facts and robot_commands) scored 0 even when exactly right ("Paris" against "Paris"; review)."""
    from sacrebleu.metrics import BLEU

    refs = _spellings(references)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max(map(len, refs), default=1))]
    return float(BLEU(effective_order=True).corpus_score(list(hypotheses), streams).score)


def rouge(hypotheses: Sequence[str], references: Sequence[Reference]) -> dict[str, float]:
    """Mean ROUGE F-measures over items, 0-1, each against its best-matching reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, refs in zip(hypotheses, _spellings(references), strict=True):
        for key, score in scorer.score_multi(refs, hyp).items():
            totals[key] += score.fmeasure
    return {k: v / max(1, len(hypotheses)) for k, v in totals.items()}


def minilm_similarity(hypotheses: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over items of the cosine between all-MiniLM-L6-v2 embeddings of the hypothesis and its
    best-matching reference."""
    from smoothgen_exp.backbones.text_encoder import shared_minilm

    enc, refs = shared_minilm(), _spellings(references)
    flat = enc.encode([r for spellings in refs for r in spellings])
    hyp = enc.encode(list(hypotheses))
    best, start = [], 0
    for i, spellings in enumerate(refs):
        best.append(float((flat[start:start + len(spellings)] @ hyp[i]).max()))
        start += len(spellings)
    return sum(best) / max(1, len(best))


def text_quality(hypotheses: Sequence[str], references: Sequence[Reference]) -> dict[str, float]:
    return {"bleu": bleu(hypotheses, references), **rouge(hypotheses, references),
            "minilm_similarity": minilm_similarity(hypotheses, references)}


@configured
class TextQuality:
    enabled = True
    requires = {"model": "text outputs"}

    def setup(self, oracle, dataset, model, reference: bool = True) -> None:
        # the canonical answer of each class (answers datasets), read per item as its label's
        self.answers = getattr(dataset, "classes", None)
        self.spellings = getattr(dataset, "spellings", None)

    def item(self, ctx, aggregator, aggregated: dict) -> dict[str, dict]:
        """The item's canonical answer on both rows (the texts themselves are already recorded)."""
        label = ctx.item.label
        answer = self.answers[label] if self.answers is not None and 0 <= label < len(self.answers) else None
        columns = {} if answer is None else {"reference_answer": answer}
        if answer is not None and self.spellings is not None:
            columns["reference_answers"] = "|".join(self.spellings[label])     # every accepted spelling
        return {"baseline": columns, "smoothed": dict(columns)}

    def summary(self, records) -> dict[str, float]:
        import pandas as pd

        by_item = {v: records[records.variant == v].set_index("item_id") for v in ("baseline", "smoothed")}
        items = by_item["baseline"].index.intersection(by_item["smoothed"].index)
        baseline, smoothed = (by_item[v].loc[items, "output_text"].fillna("").astype(str).tolist()
                              for v in ("baseline", "smoothed"))
        pairs = {"smoothed_vs_baseline": (smoothed, baseline)}
        if "reference_answer" in by_item["baseline"] and by_item["baseline"].loc[items, "reference_answer"].notna().all():
            answers = by_item["baseline"].loc[items, "reference_answer"].astype(str).tolist()
            if "reference_answers" in by_item["baseline"]:          # all spellings, where the rows have them
                spelt = by_item["baseline"].loc[items, "reference_answers"]
                answers = [a if pd.isna(s) else str(s).split("|") for a, s in zip(answers, spelt, strict=True)]
            pairs |= {"baseline_vs_answer": (baseline, answers), "smoothed_vs_answer": (smoothed, answers)}
        result = {f"metric_{k}_{name}": v for name, (hyp, ref) in pairs.items() for k, v in text_quality(hyp, ref).items()}
        if "smoothed_vs_answer" in pairs:
            for k in ("bleu", *ROUGE_TYPES, "minilm_similarity"):
                base = result[f"metric_{k}_baseline_vs_answer"]
                result[f"retention_{k}"] = result[f"metric_{k}_smoothed_vs_answer"] / base if base > 0 else float("nan")
        return result
