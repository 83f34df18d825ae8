"""Sensitive-content detection for prompts and streamed LLM output.

Pure layer of the shared library (the ScaleLLM paper's Safety Module), used by
the safety filter (prompts, unary answers) and the engine workers (streamed
output): no I/O except `load_blocklist`, which reads the term file a caller names.
- match.py: `Match` (category + span, never the text) and the `Detector` protocol;
- detectors/: one module per category, registered by name in `DETECTORS`;
- pattern.py, shape.py: regex detectors, and the triggers that keep them fast
  on long texts by searching each pattern only near places it could match;
- policy.py: `ContentPolicy`, `merge`, `DEFAULT_POLICY`, `scan`, `redact`;
- stream.py: `StreamRedactor`, which redacts a stream chunk by chunk with the
  same result as redacting the whole text;
- evaluate.py: recall / precision on a labelled corpus.
"""

from frugal.content_checks.detectors import DETECTORS
from frugal.content_checks.match import Detector, Match
from frugal.content_checks.policy import (
    DEFAULT_POLICY,
    ContentPolicy,
    OutputAction,
    PolicyAction,
    detectors_for,
    load_blocklist,
    merge,
    redact,
    resolve_overlaps,
    scan,
)
from frugal.content_checks.registry import DetectorOptions, DetectorRegistry, UnknownDetectorError
from frugal.content_checks.stream import StreamRedactor, StreamResult

__all__ = [
    "DEFAULT_POLICY",
    "DETECTORS",
    "ContentPolicy",
    "Detector",
    "DetectorOptions",
    "DetectorRegistry",
    "Match",
    "OutputAction",
    "PolicyAction",
    "StreamRedactor",
    "StreamResult",
    "UnknownDetectorError",
    "detectors_for",
    "load_blocklist",
    "merge",
    "redact",
    "resolve_overlaps",
    "scan",
]
