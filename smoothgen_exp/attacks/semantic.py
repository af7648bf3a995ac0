"""attack=semantic: meaning-preserving word substitution and paraphrase on the text prompt.

Candidates, one edit at a time:
- lexicon: synonyms of a word and paraphrases of a phrase, from the shipped `lexicon.yaml`;
- similarity (off by default, `similar_words` > 0 turns it on): for words outside the lexicon, the
  lexicon vocabulary's words closest to them by MiniLM cosine (>= word_min_similarity). Nearest words
  are not synonyms: on qa_facts they gave big -> small, red -> white, blue -> black, ten -> digit, and
  every one of those prompts kept sentence similarity >= 0.76 ("Which planet is known as the white
  Planet?"), so an attack that counts them changes the question, not its wording. Numbers (any token with
  a digit, number words) and the lexicon's protected words are never replaced this way; edits say
  their source (`attack_edits`: lexicon@i or similarity@i).
Every candidate prompt must keep MiniLM cosine >= min_similarity to the original prompt. With `eps`
set, candidates whose prompt embedding moved by more than eps are discarded.

Search: greedy over positions. Each round evaluates every single-edit candidate of the current prompt
(one query each), keeps the best if it improves the objective, and never edits a position twice; it
stops when the query budget is spent or nothing improves. The record carries the adversarial prompt
and the L2 distance between the clean and adversarial prompt embeddings: a semantic attack lands at a
point of the noised space, so the certified radius applies to it.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import torch
import yaml

from smoothgen_exp.attacks.base import Attack, Victim
from smoothgen_exp.attacks.budget import Budget
from smoothgen_exp.backbones.text_encoder import shared_minilm
from smoothgen_exp.config import configured
from smoothgen_exp.errors import SmoothgenError

LEXICON = Path(__file__).with_name("lexicon.yaml")
NUMBER_WORDS = frozenset(("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                          "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
                          "eighty ninety hundred thousand million billion first second third half").split())


@lru_cache(maxsize=4)
def load_lexicon(path: str = str(LEXICON)) -> dict:
    data = yaml.safe_load(Path(path).read_text())
    return {"words": {k.lower(): list(map(str, v)) for k, v in data["words"].items()},
            "phrases": {k.lower(): list(map(str, v)) for k, v in data["phrases"].items()},
            "protected": {str(w).lower() for w in data.get("protected", [])},
            "fixed_phrases": [str(p).lower() for p in data.get("fixed_phrases", [])]}


def tokenize(prompt: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", prompt)


def detokenize(tokens: list[str]) -> str:
    return re.sub(r"\s+([^\w\s'-])", r"\1", " ".join(tokens))


@configured
class SemanticAttack(Attack):
    name = "semantic"
    edits = "text"              # the model's condition kind it perturbs (checks.check_attack_objective_fits_model)

    def __init__(self, queries: int, max_edits: int, min_similarity: float,
                 word_min_similarity: float, similar_words: int, lexicon: str | None,
                 eps: float | None, **kwargs):
        super().__init__(eps=math.inf if eps is None else eps, **kwargs)
        self.queries, self.max_edits = int(queries), int(max_edits)
        self.min_similarity, self.word_min_similarity = float(min_similarity), float(word_min_similarity)
        self.similar_words = int(similar_words)
        self.lexicon = load_lexicon(lexicon or str(LEXICON))
        self._vocab: list[str] | None = None
        self._vocab_emb: torch.Tensor | None = None

    # ------------------------------------------------------------------ candidates
    def _similar_words(self, word: str) -> list[str]:
        """Lexicon-vocabulary words closest to `word` by MiniLM cosine (the general mechanism)."""
        enc = shared_minilm()
        if self._vocab is None:          # the vocabulary's embeddings, once per attack
            self._vocab = sorted({w for w in self.lexicon["words"] if w not in self.lexicon["protected"]})
            self._vocab_emb = enc.encode(self._vocab)
        vocab = self._vocab
        sims = (enc.encode([word]) @ self._vocab_emb.T)[0]
        order = torch.argsort(sims, descending=True).tolist()
        return [vocab[i] for i in order if vocab[i] != word and float(sims[i]) >= self.word_min_similarity
                ][: self.similar_words]

    def candidates(self, tokens: list[str], frozen: set[int]) -> list[tuple[list[str], int, int, int, str]]:
        """Single edits of `tokens` at positions not in `frozen`.

        Each is (new tokens, position, replaced span length, new span length, source). A word inside one of
        the lexicon's `fixed_phrases` is edited only with the phrase ("white" in "black and white" is no
        colour: "black and pale" changed the meaning; review).
        """
        out = []
        lower = [t.lower() for t in tokens]
        in_phrase = {j for words in map(str.split, self.lexicon["fixed_phrases"]) for i in range(len(lower) - len(words) + 1)
                     if lower[i:i + len(words)] == words for j in range(i, i + len(words))}
        for i, word in enumerate(lower):
            if i in frozen or i in in_phrase or not re.match(r"[\w'-]+$", word):
                continue
            if word in self.lexicon["words"]:
                subs, source = self.lexicon["words"][word], "lexicon"
            elif word in self.lexicon["protected"] or word in NUMBER_WORDS or re.search(r"\d", word) \
                    or not self.similar_words:
                continue
            else:
                subs, source = self._similar_words(word), "similarity"
            out += [(tokens[:i] + [s] + tokens[i + 1:], i, 1, 1, source) for s in subs if s.lower() != word]
        for phrase, paraphrases in self.lexicon["phrases"].items():
            words = phrase.split()
            k = len(words)
            for i in range(len(lower) - k + 1):
                if lower[i:i + k] == words and not frozen & set(range(i, i + k)):
                    out += [(tokens[:i] + p.split() + tokens[i + k:], i, k, len(p.split()), "lexicon")
                            for p in paraphrases]
        return out

    # ------------------------------------------------------------------ search
    @torch.no_grad()
    def search(self, victim: Victim, budget: Budget) -> torch.Tensor:
        ctx = victim.ctx
        if getattr(ctx.model, "condition_kind", None) != "text" or not isinstance(ctx.item.condition, str):
            raise SmoothgenError("attack=semantic: needs a text-conditioned model (model.condition_kind == 'text')")
        enc = shared_minilm()
        original = ctx.item.condition
        orig_sentence = enc.encode([original])
        tokens, frozen = tokenize(original), set()
        best_z, best_value = victim.x, float(victim.objective(victim.x[None]))
        edits, rejected = [], 0
        while len(edits) < self.max_edits and victim.queries < self.queries:
            cands = self.candidates(tokens, frozen)
            if not cands:
                break
            prompts = [detokenize(c[0]) for c in cands]
            keep = (enc.encode(prompts) @ orig_sentence.T)[:, 0] >= self.min_similarity
            # a substitution that changes a language model's token count lands in another space: no L2
            # distance to x exists, so it is rejected (NaN compares False)
            z = torch.stack([e.to(victim.x) if e.shape == victim.x.shape else torch.full_like(victim.x, float("nan"))
                             for e in ctx.model.encode(prompts)])
            keep &= (z - victim.x).flatten(1).norm(dim=1) <= budget.eps
            rejected += int((~keep).sum())
            idx = keep.nonzero()[:, 0].tolist()[: self.queries - victim.queries]
            if not idx:
                break
            values = victim.objective(z[idx])
            j = int(values.argmax())
            if float(values[j]) <= best_value:
                break
            chosen = idx[j]
            best_value, best_z = float(values[j]), z[chosen]
            tokens, pos, old_len, new_len, source = cands[chosen]
            frozen = {q if q < pos else q + new_len - old_len for q in frozen} | set(range(pos, pos + new_len))
            edits.append(f"{source}@{pos}")
        victim.notes = {"attack_prompt": detokenize(tokens) if edits else original,
                        "attack_edits": ";".join(edits), "attack_rejected_candidates": rejected}
        return best_z
