"""The straightforward path of the content checks: every pattern searched over the whole text.

What `scan` did before pattern triggers (frugal/content_checks/pattern.py): each regex
searched from the last accepted match, a rejected candidate skipped one character at a
time. The fast path must give exactly these matches; the property tests
(tests/unit/test_checks_triggers.py) compare the two and the prompt-checks benchmark
(tests/benchmarks/prompt_checks.py) times them side by side.
"""

from __future__ import annotations

from frugal.content_checks import ContentPolicy, Match, detectors_for, resolve_overlaps
from frugal.content_checks.pattern import PatternDetector, PatternSpec


def reference_spec_find(spec: PatternSpec, category: str, text: str, start: int = 0) -> list[Match]:
    found: list[Match] = []
    pos = start
    while (candidate := spec.regex.search(text, pos)) is not None:
        end: int | None = candidate.end()
        if spec.validate is not None:
            end = spec.validate(text, candidate.start(), candidate.end())
        if end is None or end <= candidate.start():
            pos = candidate.start() + 1
            continue
        found.append(Match(category, candidate.start(), end))
        pos = end
    return found


def reference_find_all(text: str, policy: ContentPolicy, start: int = 0) -> list[Match]:
    """Every detector's raw matches (overlaps included), in the order `find_all` gives them."""
    found: list[Match] = []
    for detector in detectors_for(policy):
        if not isinstance(detector, PatternDetector):
            found.extend(detector.find(text, start))
            continue
        matches: list[Match] = []
        for spec in detector.specs:
            assert isinstance(spec, PatternSpec)
            matches.extend(reference_spec_find(spec, detector.name, text, start))
        found.extend(sorted(matches, key=lambda m: (m.start, -m.end)))
    return found


def reference_scan(text: str, policy: ContentPolicy) -> list[Match]:
    return resolve_overlaps(reference_find_all(text, policy))
