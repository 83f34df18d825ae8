"""Output checks on an answer, run where the tokens are made.

Pure layer over the shared content checks (frugal.content_checks, which the safety
filter uses too, so a worker's image needs no safety filter). The safety filter
decides which checks a request gets (its model's and key's content policy) and
sends them in the request's `output_checks`; the worker runs each text delta
through a StreamRedactor before it writes the event, so the answer needs no second
pass through a filter process on its way out (one hop per token instead of two:
docs/benchmarks/compare). `redact` releases text once no
match can still start in it, redacted; `block` stops at the first match, and the
stream ends with a content-policy error event. A unary answer goes through the same
redactor whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from frugal.content_checks import ContentPolicy, OutputAction, StreamRedactor, StreamResult

OUTPUT_ACTIONS: dict[str, OutputAction] = {"redact": "redact", "block": "block"}


@lru_cache(maxsize=256)
def _policy(
    detectors: tuple[str, ...], action: OutputAction, blocklist: tuple[str, ...]
) -> ContentPolicy:
    return ContentPolicy(detectors=detectors, output_action=action, blocklist=blocklist)


class OutputGuard:
    """One per streamed answer: `feed` each text delta, then `finish`."""

    def __init__(self, policy: ContentPolicy) -> None:
        self._redactor = StreamRedactor(policy)
        self.redacted: list[str] = []  # categories of what was redacted, in order
        self.blocked: str | None = None

    @classmethod
    def for_checks(
        cls, detectors: Sequence[str], action: str, blocklist: Sequence[str]
    ) -> OutputGuard | None:
        """The guard for a request's checks; None when there is nothing to check.
        Raises ValueError (pydantic's) for an unknown detector or action."""
        if not detectors:
            return None
        if action not in OUTPUT_ACTIONS:
            raise ValueError(f"unknown output action {action!r}")
        return cls(_policy(tuple(detectors), OUTPUT_ACTIONS[action], tuple(blocklist)))

    def feed(self, text: str) -> str:
        """The text that may go out now (redacted); after a block, the text before it."""
        return self._released(self._redactor.feed(text))

    def check_whole(self, text: str) -> str | None:
        """A unary answer's whole text, checked at once: redacted, or None when blocked."""
        released = self.feed(text) + self.finish()
        return None if self.blocked is not None else released

    def finish(self) -> str:
        """Release what is still held (redacted): the answer has ended."""
        return self._released(self._redactor.finish())

    def _released(self, result: StreamResult) -> str:
        self.redacted += (match.category for match in result.redacted)
        if result.blocked is not None:
            self.blocked = result.blocked.category
        return result.text
