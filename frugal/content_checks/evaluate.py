"""Recall and precision of a content policy on a labelled corpus.

Pure core (`evaluate`, `format_table`) plus a thin CLI:
`python -m frugal.content_checks.evaluate tests/fixtures/content/corpus.jsonl
[--blocklist FILE]` prints a markdown table. Rows are JSON lines
`{"text", "category", "label", "start", "end"}`; a positive counts as found only
when a match of its category covers its whole span. Every other match, in a
positive or a negative row, is a false positive of the category it claims.
The policy is DEFAULT_POLICY plus BLOCKLIST with the terms of `--blocklist`
(default: blocklist.txt next to the corpus, when there is one).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from frugal.content_checks.match import Match
from frugal.content_checks.policy import (
    DEFAULT_POLICY,
    ContentPolicy,
    load_blocklist,
    scan,
)


class CorpusRow(BaseModel):
    """One labelled text; positives name the span of their sensitive value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    category: str | None
    label: Literal["positive", "negative"]
    start: int | None = None
    end: int | None = None

    @model_validator(mode="after")
    def _positives_have_spans(self) -> CorpusRow:
        if self.label == "positive" and (
            self.category is None or self.start is None or self.end is None
        ):
            raise ValueError("a positive row needs a category, start and end")
        return self


@dataclass
class CategoryScore:
    positives: int = 0
    negatives: int = 0
    true_positives: int = 0
    false_negatives: int = 0
    false_positives: int = 0

    @property
    def recall(self) -> float:
        found = self.true_positives + self.false_negatives
        return self.true_positives / found if found else 1.0

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    def add(self, other: CategoryScore) -> None:
        self.positives += other.positives
        self.negatives += other.negatives
        self.true_positives += other.true_positives
        self.false_negatives += other.false_negatives
        self.false_positives += other.false_positives


@dataclass
class Evaluation:
    by_category: dict[str, CategoryScore] = field(default_factory=dict)

    def score(self, category: str) -> CategoryScore:
        return self.by_category.setdefault(category, CategoryScore())

    @property
    def overall(self) -> CategoryScore:
        total = CategoryScore()
        for score in self.by_category.values():
            total.add(score)
        return total


def _covers(match: Match, row: CorpusRow) -> bool:
    assert row.start is not None and row.end is not None
    return match.category == row.category and match.start <= row.start and row.end <= match.end


def _score_row(evaluation: Evaluation, row: CorpusRow, matches: list[Match]) -> None:
    if row.category is not None:
        score = evaluation.score(row.category)
        score.positives += row.label == "positive"
        score.negatives += row.label == "negative"
    expected = None
    if row.label == "positive":
        expected = next((m for m in matches if _covers(m, row)), None)
        assert row.category is not None
        if expected is None:
            evaluation.score(row.category).false_negatives += 1
        else:
            evaluation.score(row.category).true_positives += 1
    for match in matches:
        if match is not expected:
            evaluation.score(match.category).false_positives += 1


def evaluate(corpus_rows: Iterable[CorpusRow], policy: ContentPolicy) -> Evaluation:
    """Per-category true/false positives and false negatives of `policy` on the rows."""
    evaluation = Evaluation()
    for row in corpus_rows:
        _score_row(evaluation, row, scan(row.text, policy))
    return evaluation


def format_table(evaluation: Evaluation) -> str:
    lines = [
        "| category | positives | negatives | TP | FN | FP | recall | precision |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*sorted(evaluation.by_category.items()), ("**overall**", evaluation.overall)]
    for name, s in rows:
        lines.append(
            f"| {name} | {s.positives} | {s.negatives} | {s.true_positives} | "
            f"{s.false_negatives} | {s.false_positives} | {s.recall:.3f} | {s.precision:.3f} |"
        )
    return "\n".join(lines)


def read_corpus(path: Path) -> list[CorpusRow]:
    with path.open(encoding="utf-8") as lines:
        return [CorpusRow.model_validate(json.loads(line)) for line in lines if line.strip()]


def corpus_policy(blocklist: Sequence[str]) -> ContentPolicy:
    """DEFAULT_POLICY with the blocklist detector and `blocklist` terms added."""
    return DEFAULT_POLICY.model_copy(
        update={
            "detectors": (*DEFAULT_POLICY.detectors, "BLOCKLIST"),
            "blocklist": tuple(blocklist),
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--blocklist", type=Path, default=None)
    args = parser.parse_args(argv)
    blocklist_path: Path = args.blocklist or args.corpus.with_name("blocklist.txt")
    terms = load_blocklist(blocklist_path) if blocklist_path.exists() else ()
    print(format_table(evaluate(read_corpus(args.corpus), corpus_policy(terms))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
