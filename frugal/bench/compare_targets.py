"""The goals of issue 10, each with its measured value and met / missed (pure layer).

From the per-level records (results.json) and the per-system checks (checks.json: round
trips before and after the engine, the ledger against the engines). The benchmark states
the targets, it never asserts them; one that this run did not measure says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frugal.bench.compare_fleet import BARE, FULL, NOREDACT
from frugal.bench.compare_plan import BASELINE

Record = dict[str, Any]
DIRECT, LITELLM = "direct", "litellm"
LATENCY_LEVEL, THROUGHPUT_LEVEL = 64, 256
LONG_PROMPT_GOALS = ((20, 15.0), (150, 120.0))  # (streams, added TTFT p50 ms), GIE #2928
SAFETY_CPU_GOAL_US = 300.0
REPORTED = "reported"  # a line with a value and no goal


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run, or only reported

    @classmethod
    def missing(cls, name: str, goal: str) -> Target:
        return cls(name, goal, "not measured", None)


def _index(records: Sequence[Record]) -> dict[tuple[str, int], Record]:
    return {(str(r["system"]), int(r["concurrency"])): r for r in records}


def _value(index: Mapping[tuple[str, int], Record], system: str, level: int, key: str) -> Any:
    record = index.get((system, level))
    return None if record is None else record.get(key)


def _added_ttft(
    index: Mapping[tuple[str, int], Record], system: str, over: str, level: int
) -> float | None:
    ttft, base = (
        _value(index, system, level, "ttft_p50_ms"),
        _value(index, over, level, "ttft_p50_ms"),
    )
    return None if ttft is None or base is None else float(ttft - base)


def _ratio_target(
    index: Mapping[tuple[str, int], Record], name: str, goal: str, key: str, other: str,
    level: int, test: Callable[[float], bool],
) -> Target:  # fmt: skip
    mine, theirs = _value(index, FULL, level, key), _value(index, other, level, key)
    if mine is None or not theirs:
        return Target.missing(name, goal)
    ratio = mine / theirs
    return Target(name, goal, f"{mine:.1f} vs {theirs:.1f} ({ratio:.2f}x)", test(ratio))


def _errors_target(records: Sequence[Record]) -> Target:
    name, goal = "errors of the full chain, every level", "0"
    full = [r for r in records if r["system"] == FULL]
    if not full:
        return Target.missing(name, goal)
    errors = sum(int(r["errors"]) for r in full)
    requests = sum(int(r.get("requests") or 0) for r in full)
    reasons: dict[str, int] = {}
    for record in full:
        for reason, count in (record.get("error_reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(count)
    why = f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else ""
    return Target(name, goal, f"{errors} of {requests} requests{why}", errors == 0)


def _ms_target(name: str, goal_ms: float, added: float | None) -> Target:
    goal = f"<= {goal_ms:g} ms"
    if added is None:
        return Target.missing(name, goal)
    return Target(name, goal, f"{added:+.2f} ms", added <= goal_ms)


def safety_cpu_per_request(records: Sequence[Record], system: str = FULL) -> float | None:
    """The safety filter's CPU-us per request over every level of `system` together (the
    /proc tick is 10 ms: only the whole run's requests make it fine enough)."""
    spent = requests = 0.0
    for record in records:
        per_request = (record.get("cpu_us_per_request") or {}).get("safety_filter")
        if record["system"] == system and per_request is not None and record.get("requests"):
            spent += per_request * record["requests"]
            requests += record["requests"]
    return spent / requests if requests else None


def _cpu_target(records: Sequence[Record]) -> Target:
    name = "safety filter CPU per request (full chain, all levels)"
    goal = f"<= {SAFETY_CPU_GOAL_US:g} us"
    per_request = safety_cpu_per_request(records)
    if per_request is None:
        return Target.missing(name, goal)
    processes = max(
        (
            (r.get("processes") or {}).get("safety_filter", 0)
            for r in records
            if r["system"] == FULL
        ),
        default=0,
    )
    measured = f"{per_request:.0f} us ({processes} processes)"
    return Target(name, goal, measured, per_request <= SAFETY_CPU_GOAL_US)


def _round_trips_target(check: Mapping[str, Any] | None) -> Target:
    name = "before the engine (full chain): Python and Redis round trips"
    goal = "<= 1 and <= 1"
    before = (check or {}).get("before_engine")
    if not before:
        return Target.missing(name, goal)
    python = before["python"]
    redis = before.get("redis_round_trips")
    parts = ", ".join(f"{k} {python[k]:g}" for k in python if k != "total")
    measured = f"Python {python['total']:g} ({parts}), Redis {_num(redis)}"
    met = python["total"] <= 1 and redis is not None and redis <= 1
    return Target(name, goal, measured, met)


def ledger_line(ledger: Mapping[str, Any]) -> str:
    """`yes (ledger X tokens, engines Y)` from a check's `ledger` entry."""
    said = {True: "yes", False: "no", None: "not known"}[ledger.get("matches")]
    mine, theirs = ledger.get("ledger") or {}, ledger.get("engines") or {}
    return f"{said} (ledger {_num(mine.get('total'))} tokens, engines {_num(theirs.get('total'))})"


def _ledger_target(check: Mapping[str, Any] | None) -> Target:
    name, goal = "ledger == engines (full chain, the whole run)", "yes"
    ledger = (check or {}).get("ledger")
    if not ledger:
        return Target.missing(name, goal)
    return Target(name, goal, ledger_line(ledger), ledger.get("matches"))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def targets(
    records: Sequence[Record],
    checks: Sequence[Mapping[str, Any]] = (),
    *,
    long_prompts: bool = False,
) -> list[Target]:
    """Every goal of issue 10 for the full chain (`frugal`), in the issue's order."""
    index = _index(records)
    full_check = next((c for c in checks if c.get("system") == FULL), None)
    hold_back = _added_ttft(index, FULL, NOREDACT, 1)
    found = [
        _ms_target(
            "TTFT p50 added by the full chain over frugal-bare at 1 stream, output redaction off",
            1.0, _added_ttft(index, NOREDACT, BARE, 1),
        ),
        Target(
            "output redaction hold-back at 1 stream (frugal - frugal-noredact TTFT p50)",
            REPORTED, "not measured" if hold_back is None else f"{hold_back:+.2f} ms", None,
        ),
        _ratio_target(
            index, f"TTFT p50 at {LATENCY_LEVEL} streams vs FastAPI (ms)", "<= 1x",
            "ttft_p50_ms", BASELINE, LATENCY_LEVEL, lambda ratio: ratio <= 1,
        ),
        _ratio_target(
            index, f"throughput at {THROUGHPUT_LEVEL} streams vs FastAPI (tokens/s)", ">= 1x",
            "throughput_tok_s", BASELINE, THROUGHPUT_LEVEL, lambda ratio: ratio >= 1,
        ),
        _ratio_target(
            index, f"throughput at {THROUGHPUT_LEVEL} streams vs LiteLLM with its key and "
            "rate limits on (tokens/s)", ">= 5x", "throughput_tok_s", LITELLM,
            THROUGHPUT_LEVEL, lambda ratio: ratio >= 5,
        ),
        _errors_target(records),
        _cpu_target(records),
        _round_trips_target(full_check),
        _ledger_target(full_check),
    ]  # fmt: skip
    if long_prompts:
        found += [
            _ms_target(
                f"long prompts: TTFT p50 added over direct gRPC at {level} streams",
                goal_ms, _added_ttft(index, FULL, DIRECT, level),
            )
            for level, goal_ms in LONG_PROMPT_GOALS
        ]  # fmt: skip
    return found
