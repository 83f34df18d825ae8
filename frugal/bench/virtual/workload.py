"""What the virtual fleet is asked to serve: closed loops and the shipped traces (pure layer).

A closed loop keeps `concurrency` clients busy: each sends its next request the moment
its last one finished, with the wall-clock benchmark's sizes (its 64-word prompt, an
output of 16, 32 or 64 tokens drawn with a seed). A trace replays its requests at their
own times and lengths (virtual time needs no compression or scaling); a fleet many times
the trace's own is loaded by several copies of it at once (`tiled`), and a later stretch of
a trace is replayed from its own start (`window`).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine_workers.tokenizer import count_tokens
from frugal.bench.plan import MAX_TOKENS_CHOICES
from frugal.bench.routing import CLOSED_LOOP_PROMPT
from frugal.bench.trace import parse_trace
from frugal.bench.virtual.fleet import VirtualFleet
from frugal.bench.virtual.replica import VirtualRequest

CLOSED_LOOP_PROMPT_TOKENS = count_tokens(CLOSED_LOOP_PROMPT)


@dataclass(frozen=True)
class TraceRow:
    at_s: float
    prompt_tokens: int
    output_tokens: int
    blocks: tuple[int, ...] = ()  # the prompt's 512-token blocks (Mooncake's hash_ids)


def azure_trace(path: Path) -> list[TraceRow]:
    with path.open() as lines:
        return [
            TraceRow(r.offset_s, max(1, r.context_tokens), max(1, r.generated_tokens))
            for r in parse_trace(lines)
        ]


def mooncake_trace(path: Path) -> list[TraceRow]:
    """Mooncake's JSONL: `timestamp` (ms), `input_length`, `output_length` and `hash_ids`,
    the ids of the prompt's 512-token blocks (equal ids: equal blocks with equal prefixes)."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            rows.append(
                TraceRow(
                    record["timestamp"] / 1000.0,
                    max(1, int(record["input_length"])),
                    max(1, int(record["output_length"])),
                    tuple(int(block) for block in record.get("hash_ids", ())),
                )
            )
    first = min((r.at_s for r in rows), default=0.0)
    return sorted(
        (TraceRow(r.at_s - first, r.prompt_tokens, r.output_tokens, r.blocks) for r in rows),
        key=lambda r: r.at_s,
    )


def window(rows: Sequence[TraceRow], start: int, count: int) -> list[TraceRow]:
    """Requests `start` to `start + count` of a trace (fewer where it ends), their times
    shifted so that the first arrives at 0: a later stretch of the trace replayed alone."""
    chosen = sorted(rows, key=lambda r: r.at_s)[start : start + count]
    first = chosen[0].at_s if chosen else 0.0
    return [TraceRow(r.at_s - first, r.prompt_tokens, r.output_tokens, r.blocks) for r in chosen]


def tiled(rows: Sequence[TraceRow], copies: int, seed: int) -> list[TraceRow]:
    """`copies` users of the trace at once, as a fleet `copies` times larger would serve.

    Copy k's block ids are its own (offset past every id of the trace), so no copy finds
    another's prefixes in a cache, and its times are the trace's shifted by a seeded offset,
    wrapping around the trace's span, so that the copies' bursts do not coincide and the load
    stays as even over the span as the trace's own. The first copy is the trace itself. A
    conversation whose turns straddle a copy's wrap point has its later turns first.
    """
    ordered = sorted(rows, key=lambda r: r.at_s)
    if copies <= 1 or not ordered:
        return ordered
    start, span = ordered[0].at_s, ordered[-1].at_s - ordered[0].at_s
    stride = 1 + max((block for r in ordered for block in r.blocks), default=0)
    rng = random.Random(seed)
    out = list(ordered)
    for copy in range(1, copies):
        shift = rng.uniform(0.0, span)
        for r in ordered:
            at = start + ((r.at_s - start + shift) % span if span > 0 else 0.0)
            blocks = tuple(block + copy * stride for block in r.blocks)
            out.append(TraceRow(at, r.prompt_tokens, r.output_tokens, blocks))
    return sorted(out, key=lambda r: r.at_s)


def trace_arrivals(rows: Sequence[TraceRow]) -> Iterator[VirtualRequest]:
    for index, row in enumerate(rows):
        yield VirtualRequest(
            index, row.at_s, row.prompt_tokens, row.output_tokens, blocks=row.blocks
        )


class ClosedLoop:
    """`concurrency` clients, each sending its next request when its last one is done."""

    def __init__(self, concurrency: int, *, seed: int = 0, until_s: float) -> None:
        self.concurrency = concurrency
        self._rng = random.Random(seed)
        self._until_s = until_s
        self._indices = itertools.count()
        self._fleet: VirtualFleet | None = None

    def _request(self, at_s: float) -> VirtualRequest:
        output = self._rng.choice(MAX_TOKENS_CHOICES)
        return VirtualRequest(next(self._indices), at_s, CLOSED_LOOP_PROMPT_TOKENS, output)

    def run(self, fleet: VirtualFleet) -> list[VirtualRequest]:
        self._fleet = fleet
        first = (self._request(0.0) for _ in range(self.concurrency))
        return fleet.run(iter(list(first)), until_s=self._until_s, on_done=self._next)

    def _next(self, done: VirtualRequest) -> None:
        assert self._fleet is not None
        if done.finished_s is not None and done.finished_s < self._until_s:
            self._fleet.submit(self._request(done.finished_s))
