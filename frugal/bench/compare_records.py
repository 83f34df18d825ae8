"""The records of results.json: one per system x concurrency (pure layer).

REQUIRED_KEYS are the benchmark's contract (wall milliseconds, tokens per wall second); the
rest are extras with the same meaning. USAGE_KEYS (compare_counters.LevelUsage) are known
for the Frugal systems only and None for the others.
"""

from __future__ import annotations

from typing import Any

from frugal.bench.compare_counters import LevelUsage
from frugal.bench.stats import LevelSummary

REQUIRED_KEYS = (
    "system",
    "concurrency",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tbt_p50_ms",
    "e2e_p50_ms",
    "throughput_tok_s",
    "gateway_ms_p50",
    "engine_ms_p50",
    "errors",
)
USAGE_KEYS = (
    "processes",
    "cpu_us_per_request",
    "cpu_us_per_token",
    "python_messages_per_request",
    "redis_commands_per_request",
    "redis_round_trips_per_request",
)
EXTRA_KEYS = (
    "requests",
    "timeouts",
    "tokens",
    "duration_s",
    "requests_per_s",
    "ttft_p90_ms",
    "tbt_p90_ms",
    "tbt_p99_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
    "cpu_busy",
    "error_reasons",
    *USAGE_KEYS,
)
_TIMES = (
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tbt_p50_ms",
    "e2e_p50_ms",
    "gateway_ms_p50",
    "engine_ms_p50",
    "ttft_p90_ms",
    "tbt_p90_ms",
    "tbt_p99_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def build_record(
    system: str,
    concurrency: int,
    summary: LevelSummary,
    cpu_busy: float | None = None,
    usage: LevelUsage | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {key: _round(getattr(summary, key)) for key in _TIMES}
    values.update(
        system=system,
        concurrency=concurrency,
        throughput_tok_s=round(summary.throughput_tok_s, 2),
        errors=summary.errors,
        requests=summary.requests,
        timeouts=summary.timeouts,
        tokens=summary.tokens,
        duration_s=round(summary.duration_s, 3),
        requests_per_s=round(summary.requests_per_s, 3),
        cpu_busy=_round(cpu_busy),
        error_reasons=summary.error_reasons,
    )
    values.update(dict.fromkeys(USAGE_KEYS) if usage is None else usage.as_record())
    return {key: values[key] for key in REQUIRED_KEYS + EXTRA_KEYS}


def problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with a record read back from results.json (empty when well-formed)."""
    found = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in record]
    found += [f"unknown key {k!r}" for k in record if k not in REQUIRED_KEYS + EXTRA_KEYS]
    concurrency = record.get("concurrency")
    if not (isinstance(concurrency, int) and concurrency > 0):
        found.append(f"concurrency {concurrency!r} is not a positive int")
    if not isinstance(record.get("errors"), int):
        found.append("errors is not an int")
    for key in (*_TIMES, "throughput_tok_s"):
        value = record.get(key)
        if value is not None and not isinstance(value, int | float):
            found.append(f"{key} is not a number")
    return found
