"""dataset=qa_facts | robot_commands: prompts with one expected answer each, from a project-written CSV.

Columns: `prompt`, `answer` (the canonical answer; `|` separates accepted spellings, the first one names
the class: "8|eight", "Kyiv|Kiev"), and optional others (`category`). The classes are the distinct
canonical answers in file order, plus a last class "other" (an answer matching none of them);
`oracle=answers` maps a generated answer to them (`oracles.text.AnswerVocabulary`, reading the same
file). Item ids are `q<row>`.

- qa_facts.csv (140 rows): capitals, small arithmetic, well-known facts.
- robot_commands.csv (64 rows): instructions for a service robot, eight actions (the RS-for-VLM
  paper's vision-language-action case without the image); the system prompt lists the actions.
"""

from __future__ import annotations

import csv
from pathlib import Path

from smoothgen_exp.config import configured
from smoothgen_exp.data.base import Item, ItemList
from smoothgen_exp.errors import SmoothgenError

HERE = Path(__file__).parent


def answers_file(path: str | None, name: str) -> Path:
    """`path`, or the shipped `<name>.csv`."""
    p = Path(path) if path else HERE / f"{name}.csv"
    if not p.is_file():
        raise SmoothgenError(f"dataset.path={p}: no such CSV file")
    return p


def read_answers(path: Path) -> tuple[list[dict], list[list[str]], list[int]]:
    """(rows, classes, labels): the CSV's rows, its distinct answers in file order (each a list of
    spellings), and each row's class index."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"prompt", "answer"} <= set(rows[0]):
        raise SmoothgenError(f"dataset.path={path}: needs `prompt` and `answer` columns")
    classes: dict[str, list[str]] = {}            # first spelling, lower-cased -> spellings, in file order
    labels = []
    for r in rows:
        spellings = [s.strip() for s in r["answer"].split("|") if s.strip()]
        if not spellings:
            raise SmoothgenError(f"dataset.path={path}: an empty answer for {r['prompt']!r}")
        key = spellings[0].lower()
        if key not in classes:
            classes[key] = spellings
        labels.append(list(classes).index(key))
    return rows, list(classes.values()), labels


@configured
class AnswersCSV(ItemList):
    item_kind = "prompts"
    canonical_answers = True          # oracle=answers reads them (checks.CAPABILITIES)

    @staticmethod
    def class_names(conf) -> list[str]:
        """What the labels index: the CSV's distinct answers in file order."""
        return [c[0] for c in read_answers(answers_file(conf.path, conf.name))[1]]

    def __init__(self, name: str, path: str | None, system_prompt: str | None, limit: int | None):
        self.name, self.path = name, answers_file(path, name)
        rows, classes, labels = read_answers(self.path)
        self.classes = [c[0] for c in classes] + ["other"]
        self.spellings = [*classes, ["other"]]        # every accepted spelling of each class (metrics=text)
        self.num_classes = len(self.classes)
        # what a chat model is told before each prompt (model configs read it as ${dataset.system_prompt})
        self.system_prompt = system_prompt
        items = [Item(f"q{i:04d}", r["prompt"], label) for i, (r, label) in enumerate(zip(rows, labels, strict=True))]
        self.items = items[:limit] if limit is not None else items
