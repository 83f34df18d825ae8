"""Content policy: which detectors run, what happens on a hit, and redaction.

Pure layer of the shared library (the "Safety Module" of the ScaleLLM paper). A policy is
configured as `{detectors: [names], prompt_action, output_action, blocklist}`;
a model's policy and an API key's policy combine with `merge` (the stricter
action wins, detector sets and blocklists are united). `scan` runs a policy's
detectors and resolves overlaps; `redact` replaces each match with
`[REDACTED:<CATEGORY>]`. The only I/O is `load_blocklist`, which reads the term
file a caller names.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

from frugal.content_checks.detectors import DETECTORS
from frugal.content_checks.detectors.blocklist import CATEGORY as BLOCKLIST
from frugal.content_checks.match import Detector, Match
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import shape_of

PolicyAction = Literal["log", "redact", "block"]
OutputAction = Literal["redact", "block"]
_STRICTNESS: dict[str, int] = {"log": 0, "redact": 1, "block": 2}
_Action = TypeVar("_Action", PolicyAction, OutputAction)


class ContentPolicy(BaseModel):
    """What to look for in prompts and outputs, and what to do on a hit.

    prompt_action: "block" refuses the request, "redact" forwards it redacted,
    "log" forwards it unchanged and only records the categories.
    output_action: "redact" rewrites the streamed output, "block" ends the
    stream with an error at the first hit.
    check_output: false leaves answers unchecked (the prompt checks still apply):
    no hold-back of the first tokens, for models whose output needs no checks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    detectors: tuple[str, ...] = ()
    prompt_action: PolicyAction = "redact"
    output_action: OutputAction = "redact"
    check_output: bool = True
    blocklist: tuple[str, ...] = ()

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(DETECTORS.names()))
        if unknown:
            raise ValueError(f"unknown detectors {unknown}; known: {list(DETECTORS.names())}")
        return tuple(name for name in DETECTORS.names() if name in names)

    @field_validator("blocklist")
    @classmethod
    def _clean_terms(cls, terms: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(term.strip() for term in terms if term.strip())


def _unique(terms: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept: list[str] = []
    for term in terms:
        if term.casefold() not in seen:
            seen.add(term.casefold())
            kept.append(term)
    return tuple(kept)


def _stricter(first: _Action, second: _Action) -> _Action:
    return second if _STRICTNESS[second] > _STRICTNESS[first] else first


def merge(model_policy: ContentPolicy, key_policy: ContentPolicy) -> ContentPolicy:
    """The policy for a request: the stricter action wins; detectors and terms are united."""
    return ContentPolicy(
        detectors=model_policy.detectors + key_policy.detectors,
        prompt_action=_stricter(model_policy.prompt_action, key_policy.prompt_action),
        output_action=_stricter(model_policy.output_action, key_policy.output_action),
        check_output=model_policy.check_output or key_policy.check_output,
        blocklist=model_policy.blocklist + key_policy.blocklist,
    )


DEFAULT_POLICY = ContentPolicy(
    detectors=tuple(name for name in DETECTORS.names() if name != BLOCKLIST),
    prompt_action="redact",
    output_action="redact",
)


@lru_cache(maxsize=128)
def _build_detectors(names: tuple[str, ...], blocklist: tuple[str, ...]) -> tuple[Detector, ...]:
    options = DetectorOptions(blocklist=blocklist)
    return tuple(DETECTORS.build(name, options) for name in names)


def detectors_for(policy: ContentPolicy) -> tuple[Detector, ...]:
    """The policy's detectors, built once per distinct configuration (one automaton each)."""
    return _build_detectors(policy.detectors, policy.blocklist)


def resolve_overlaps(matches: Iterable[Match]) -> list[Match]:
    """Non-overlapping matches in text order: the longest wins, then the earliest.

    Greedy in that order; a choice only excludes matches overlapping it, so the
    outcome within a cluster of overlapping matches never depends on others.
    """
    chosen: list[Match] = []  # sorted by start, pairwise disjoint
    starts: list[int] = []
    for match in sorted(set(matches), key=lambda m: (-m.length, m.start, m.category)):
        index = bisect_right(starts, match.start)
        clear_before = index == 0 or chosen[index - 1].end <= match.start
        clear_after = index == len(chosen) or match.end <= chosen[index].start
        if clear_before and clear_after:
            chosen.insert(index, match)
            starts.insert(index, match.start)
    return chosen


def find_all(text: str, detectors: Sequence[Detector], start: int = 0) -> list[Match]:
    """Every detector's raw matches starting at or after `start` (overlaps included)."""
    triggers = [trigger for detector in detectors for trigger in detector.triggers]
    if triggers:
        shape_of(text).search(triggers)
    return [match for detector in detectors for match in detector.find(text, start)]


def scan(text: str, policy: ContentPolicy) -> list[Match]:
    """The sensitive spans of `text` under `policy`, non-overlapping, in order."""
    return resolve_overlaps(find_all(text, detectors_for(policy)))


def placeholder(category: str) -> str:
    return f"[REDACTED:{category}]"


def redact(text: str, matches: Iterable[Match]) -> str:
    """`text` with every match replaced by `[REDACTED:<CATEGORY>]`."""
    pieces: list[str] = []
    position = 0
    for match in resolve_overlaps(matches):
        pieces.append(text[position : match.start])
        pieces.append(placeholder(match.category))
        position = match.end
    pieces.append(text[position:])
    return "".join(pieces)


def load_blocklist(path: str | Path) -> tuple[str, ...]:
    """Terms from a UTF-8 file, one per line; blank lines and `#` comments are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return _unique(
        line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    )
