"""table.md: the comparison in the shape of the ScaleLLM paper's Table 1 (pure layer).

Rows are concurrency levels, columns systems; cells give the value and, in brackets, its
ratio to the baseline (the FastAPI gateway). Above them, the issue's targets, each with the
measured value and whether it was met: the benchmark states them, it never asserts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from frugal.bench.compare_plan import BASELINE

Record = dict[str, Any]
FULL_CHAIN, DIRECT = "frugal", "direct"
LATENCY_LEVEL, THROUGHPUT_LEVEL = 64, 256


@dataclass(frozen=True)
class CompareHeader:
    machine: str
    date: str
    engines: str  # e.g. "4 sim workers (tp2 profile, time scale 1)"
    workload: str


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def _index(records: Sequence[Record]) -> dict[tuple[str, int], Record]:
    return {(str(r["system"]), int(r["concurrency"])): r for r in records}


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{value / base:.2f}"


def targets(records: Sequence[Record]) -> list[Target]:
    """The issue's goals for the full chain, against direct gRPC and the FastAPI baseline."""
    index = _index(records)
    full = index.get((FULL_CHAIN, LATENCY_LEVEL))
    direct = index.get((DIRECT, LATENCY_LEVEL))
    found = []
    if full and direct and full["ttft_p50_ms"] is not None and direct["ttft_p50_ms"] is not None:
        added = full["ttft_p50_ms"] - direct["ttft_p50_ms"]
        found.append(
            Target("TTFT p50 added at 64 streams", "<= 1 ms", f"{added:+.2f} ms", added <= 1)
        )
    else:
        found.append(Target("TTFT p50 added at 64 streams", "<= 1 ms", "not measured", None))
    if full and direct and full["tbt_p50_ms"] and direct["tbt_p50_ms"]:
        growth = (full["tbt_p50_ms"] / direct["tbt_p50_ms"] - 1) * 100
        found.append(
            Target("TBT p50 added at 64 streams", "<= 3 %", f"{growth:+.1f} %", growth <= 3)
        )
    else:
        found.append(Target("TBT p50 added at 64 streams", "<= 3 %", "not measured", None))
    busy = index.get((FULL_CHAIN, THROUGHPUT_LEVEL))
    base = index.get((BASELINE, THROUGHPUT_LEVEL))
    if busy and base and base["throughput_tok_s"] > 0:
        ratio = busy["throughput_tok_s"] / base["throughput_tok_s"]
        met = ratio >= 2 and busy["errors"] == 0
        measured = f"{ratio:.2f}x, {busy['errors']} errors"
        found.append(
            Target("throughput vs FastAPI at 256 streams", ">= 2x, 0 errors", measured, met)
        )
    else:
        found.append(
            Target("throughput vs FastAPI at 256 streams", ">= 2x, 0 errors", "not measured", None)
        )
    return found


def _targets_table(records: Sequence[Record]) -> list[str]:
    met_text = {True: "met", False: "**missed**", None: "-"}
    lines = ["| target (full chain) | goal | measured | |", "|---|---|---:|---|"]
    for target in targets(records):
        lines.append(
            f"| {target.name} | {target.goal} | {target.measured} | {met_text[target.met]} |"
        )
    return lines


def _grid(records: Sequence[Record], cell: Callable[[Record, Record | None], str]) -> list[str]:
    systems = list(dict.fromkeys(str(r["system"]) for r in records))
    levels = sorted({int(r["concurrency"]) for r in records})
    index = _index(records)
    lines = [
        "| streams | " + " | ".join(systems) + " |",
        "|---:|" + "---:|" * len(systems),
    ]
    for level in levels:
        base = index.get((BASELINE, level))
        cells = [cell(index[(s, level)], base) if (s, level) in index else "-" for s in systems]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def _latency_cell(record: Record, base: Record | None) -> str:
    ttft, tbt = record["ttft_p50_ms"], record["tbt_p50_ms"]
    text = f"{_num(ttft)} / {_num(tbt, 2)}"
    if base is not None and record["system"] != BASELINE:
        text += f" ({_ratio(ttft, base['ttft_p50_ms'])} / {_ratio(tbt, base['tbt_p50_ms'])})"
    return text + _errors(record)


def _throughput_cell(record: Record, base: Record | None) -> str:
    text = f"{record['throughput_tok_s']:.0f}"
    if base is not None and record["system"] != BASELINE:
        text += f" ({_ratio(record['throughput_tok_s'], base['throughput_tok_s'])})"
    return text + _errors(record)


def _breakdown_cell(record: Record, base: Record | None) -> str:
    return (
        f"{_num(record['e2e_p50_ms'], 0)} = {_num(record['gateway_ms_p50'], 1)} + "
        f"{_num(record['engine_ms_p50'], 0)}"
    )


def _tail_cell(record: Record, base: Record | None) -> str:
    return f"{_num(record['ttft_p99_ms'])} / {_num(record.get('tbt_p99_ms'), 2)}"


def _errors(record: Record) -> str:
    if not record["errors"]:
        return ""
    reasons = record.get("error_reasons") or {}
    why = f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else ""
    return f", **{record['errors']} errors**{why}"


def render(records: Sequence[Record], header: CompareHeader) -> str:
    lines = [
        "# Frugal against direct gRPC and the gateways users would otherwise pick",
        "",
        f"- machine: {header.machine}",
        f"- date: {header.date}",
        f"- engines: {header.engines}",
        f"- workload: {header.workload}",
        "- systems: `direct` gRPC to the engines, no gateway; `frugal` Envoy with the full "
        "safety chain (API key, rate limit, token quota, prompt and output checks); "
        "`frugal-bare` Envoy with the chain off (parse and route only); `fastapi` a FastAPI + "
        "uvicorn gateway calling the same workers over gRPC (the paper's baseline); `litellm` "
        "LiteLLM proxy in front of Frugal's bare route",
        f"- ratios in brackets are to `{BASELINE}`: below 1 is faster for latencies, above 1 "
        "is more for throughput; all values are wall-clock medians unless said",
        "",
        "## Targets",
        "",
        *_targets_table(records),
        "",
        "## TTFT p50 / TBT p50 (ms)",
        "",
        *_grid(records, _latency_cell),
        "",
        "## Throughput (generated tokens/s)",
        "",
        *_grid(records, _throughput_cell),
        "",
        "## End-to-end p50 = gateway + engine (ms)",
        "",
        "Engine time is what the worker reported for the request; gateway time is end-to-end "
        "minus engine time (medians of each, so the sum is approximate).",
        "",
        *_grid(records, _breakdown_cell),
        "",
        "## Tails: TTFT p99 / TBT p99 (ms)",
        "",
        *_grid(records, _tail_cell),
    ]
    return "\n".join(lines) + "\n"
