"""The records of routing.json: one per policy x load (pure layer).

The first seven keys are the benchmark's contract (REQUIRED_KEYS, wall units); the rest are
extras: the same latencies and throughput in simulated units, and where the traffic went.
"""

from __future__ import annotations

from typing import Any

from frugal.bench.stats import LevelSummary

Load = int | str  # a closed-loop concurrency, or TRACE_LOAD
TRACE_LOAD = "trace"

REQUIRED_KEYS = (
    "policy",
    "load",
    "throughput_tok_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tbt_p50_ms",
    "errors",
)
EXTRA_KEYS = (
    "requests",
    "tokens",
    "duration_s",
    "time_scale",
    "throughput_tok_s_sim",
    "ttft_p50_ms_sim",
    "ttft_p99_ms_sim",
    "tbt_p50_ms_sim",
    "group_share",
    "cpu_busy",
)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _sim_ms(value: float | None, time_scale: float) -> float | None:
    return None if value is None else value / time_scale


def build_record(
    policy: str,
    load: Load,
    summary: LevelSummary,
    *,
    time_scale: float,
    group_share: dict[str, float] | None = None,
    cpu_busy: float | None = None,
) -> dict[str, Any]:
    """A routing.json record. Simulated ms = wall ms / time_scale; simulated throughput =
    tokens per simulated second = wall throughput x time_scale."""
    if isinstance(load, str) and load != TRACE_LOAD:
        raise ValueError(f"load must be a concurrency or {TRACE_LOAD!r}, not {load!r}")
    return {
        "policy": policy,
        "load": load,
        "throughput_tok_s": round(summary.throughput_tok_s, 2),
        "ttft_p50_ms": _round(summary.ttft_p50_ms),
        "ttft_p99_ms": _round(summary.ttft_p99_ms),
        "tbt_p50_ms": _round(summary.tbt_p50_ms),
        "errors": summary.errors,
        "requests": summary.requests,
        "tokens": summary.tokens,
        "duration_s": round(summary.duration_s, 3),
        "time_scale": time_scale,
        "throughput_tok_s_sim": round(summary.throughput_tok_s * time_scale, 2),
        "ttft_p50_ms_sim": _round(_sim_ms(summary.ttft_p50_ms, time_scale), 3),
        "ttft_p99_ms_sim": _round(_sim_ms(summary.ttft_p99_ms, time_scale), 3),
        "tbt_p50_ms_sim": _round(_sim_ms(summary.tbt_p50_ms, time_scale), 3),
        "group_share": {k: round(v, 4) for k, v in (group_share or {}).items()},
        "cpu_busy": _round(cpu_busy, 3),
    }


def problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with a record read back from routing.json (empty when well-formed)."""
    found = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in record]
    found += [f"unknown key {k!r}" for k in record if k not in REQUIRED_KEYS + EXTRA_KEYS]
    load = record.get("load")
    if not (isinstance(load, int) and load > 0) and load != TRACE_LOAD:
        found.append(f"load {load!r} is neither a positive int nor {TRACE_LOAD!r}")
    if not isinstance(record.get("errors"), int):
        found.append("errors is not an int")
    for key in ("throughput_tok_s", "ttft_p50_ms", "ttft_p99_ms", "tbt_p50_ms"):
        value = record.get(key)
        if value is not None and not isinstance(value, int | float):
            found.append(f"{key} is not a number")
    return found
