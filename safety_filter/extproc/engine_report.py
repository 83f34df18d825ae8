"""What the engine reports about a request, read from the response's headers or trailers.

Conversion layer over Envoy's ext_proc header maps. The workers send the tokens a
request used and their own time as trailers (even when it failed or was cut short)
and, for a unary answer, as response headers too (the transcoder turns gRPC initial
metadata into headers; engine_workers/servicer.py), with what the output checks they
ran found (categories only).
"""

from __future__ import annotations

import math
from typing import TypeAlias

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from frugal import wire
from safety_filter.extproc.messages import header_value

Reported: TypeAlias = ext.HttpHeaders | ext.HttpTrailers


def reported_usage(trailers: Reported) -> tuple[int, int] | None:
    """(prompt, completion) tokens, if the engine reported both."""
    prompt = header_value(trailers, wire.PROMPT_TOKENS)
    completion = header_value(trailers, wire.COMPLETION_TOKENS)
    if prompt.isdigit() and completion.isdigit():
        return int(prompt), int(completion)
    return None


def engine_times(headers: Reported) -> tuple[float | None, float | None]:
    """(engine time, engine time to first token) in ms, each None where not reported."""
    return (
        parse_ms(header_value(headers, wire.ENGINE_MS)),
        parse_ms(header_value(headers, wire.ENGINE_TTFT_MS)),
    )


def parse_ms(text: str) -> float | None:
    """A millisecond value as the engine writes it (`12.345`); None if absent or not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def output_findings(trailers: Reported) -> tuple[list[str], str | None]:
    """(categories the worker's output checks redacted, one per match; the category that
    blocked the answer, or None)."""
    redacted = header_value(trailers, wire.OUTPUT_REDACTED)
    blocked = header_value(trailers, wire.OUTPUT_BLOCKED)
    return [c for c in redacted.split(",") if c], blocked or None
