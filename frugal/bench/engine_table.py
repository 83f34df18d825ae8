"""table.md of `frugal bench engine`: each level of both systems, then frugal / in-process
(pure layer).

The ratios are what the benchmark states: above 1 for TTFT and TBT means the full chain is
slower, below 1 for tokens/s means it delivers less. It never asserts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frugal.bench.engine_plan import FRUGAL, IN_PROCESS

Record = dict[str, Any]  # one compare_records record: a system at one concurrency


@dataclass(frozen=True)
class EngineHeader:
    machine: str
    load_average: str  # of the machine when the run started: what else was running
    date: str
    model: str
    workload: str
    sharing: str  # what shares the CPUs in each system


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


def ratios(records: Sequence[Record]) -> list[dict[str, Any]]:
    """frugal / in-process at each level both systems ran."""
    index = {(str(r["system"]), int(r["concurrency"])): r for r in records}
    levels = sorted({level for system, level in index if system == FRUGAL})
    found = []
    for level in levels:
        full, base = index.get((FRUGAL, level)), index.get((IN_PROCESS, level))
        if full is None or base is None:
            continue
        found.append(
            {
                "concurrency": level,
                "ttft_p50": _ratio(full["ttft_p50_ms"], base["ttft_p50_ms"]),
                "tbt_p50": _ratio(full["tbt_p50_ms"], base["tbt_p50_ms"]),
                "throughput_tok_s": _ratio(full["throughput_tok_s"], base["throughput_tok_s"]),
            }
        )
    return found


def _levels_table(records: Sequence[Record]) -> list[str]:
    lines = [
        "| streams | system | TTFT p50 (ms) | TTFT p90 (ms) | TBT p50 (ms) | tokens/s "
        "| requests | errors | CPU busy |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(records, key=lambda r: int(r["concurrency"])):
        busy = "-" if r["cpu_busy"] is None else f"{r['cpu_busy'] * 100:.0f} %"
        lines.append(
            f"| {r['concurrency']} | {r['system']} | {_num(r['ttft_p50_ms'])} | "
            f"{_num(r['ttft_p90_ms'])} | {_num(r['tbt_p50_ms'])} | "
            f"{r['throughput_tok_s']:.1f} | {r['requests']} | {r['errors']} | {busy} |"
        )
    return lines


def _ratios_table(found: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| streams | TTFT p50 | TBT p50 | tokens/s |",
        "|---:|---:|---:|---:|",
    ]
    for r in found:
        lines.append(
            f"| {r['concurrency']} | {_num(r['ttft_p50'], 2)} | {_num(r['tbt_p50'], 2)} | "
            f"{_num(r['throughput_tok_s'], 2)} |"
        )
    return lines


def render(records: Sequence[Record], header: EngineHeader) -> str:
    lines = [
        "# The full chain against the backend in-process",
        "",
        f"- machine: {header.machine}; load average when the run started: {header.load_average}",
        f"- date: {header.date}",
        f"- model: {header.model}",
        f"- workload: {header.workload}",
        "- systems: `in-process` the backend built in the benchmark's own process, requests "
        "straight into `generate` (no gRPC, no HTTP); `frugal` Envoy, the safety filter "
        "(API key, rate limit, token quota, prompt and output checks), the control plane, "
        "Redis and one engine worker of the same profile, over HTTP with an API key",
        f"- sharing the CPUs: {header.sharing}",
        "- tokens/s: completion tokens of the level over its wall time; TBT: per request, "
        "first to last token over tokens - 1, median over requests",
        "",
        "## Levels",
        "",
        *_levels_table(records),
        "",
        "## frugal / in-process",
        "",
        "Above 1 for TTFT and TBT: the full chain is slower; below 1 for tokens/s: it "
        "delivers less.",
        "",
        *_ratios_table(ratios(records)),
    ]
    return "\n".join(lines) + "\n"
