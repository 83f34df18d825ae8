"""table.md: the comparison in the shape of the ScaleLLM paper's Table 1 (pure layer).

Rows are concurrency levels, columns systems; cells give the value and, in brackets, its
ratio to the baseline (the FastAPI gateway). Above them, issue 10's targets, each with the
measured value and whether it was met (compare_targets.py); below them, what each Frugal
stack spent per request: CPU per process kind, Python and Redis round trips, the ledger
against the engines, and the errors by status and code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frugal.bench.compare_fleet import LITELLM_RPM, LITELLM_TPM, VARIANTS
from frugal.bench.compare_plan import BASELINE
from frugal.bench.compare_targets import REPORTED, ledger_line, targets

Record = dict[str, Any]
Check = Mapping[str, Any]
SYSTEM_DESCRIPTIONS = {
    "direct": "gRPC straight to the engines, no gateway",
    **{name: variant.description for name, variant in VARIANTS.items()},
    "fastapi": "a FastAPI + uvicorn gateway calling the same workers over gRPC, no keys and "
    "no checks (the paper's baseline, frugal/bench/baselines/fastapi_gateway.py)",
    "litellm": "LiteLLM's proxy (one worker) in front of Frugal's bare route, with its master "
    f"key checked on every request and per-deployment limits of rpm {LITELLM_RPM:,} and tpm "
    f"{LITELLM_TPM:,} enforced by its usage-based-routing-v2 router (in memory; virtual keys "
    "with limits of their own need LiteLLM's Postgres database, which is not here)",
}
TBT_DEFINITION = (
    "TBT is each request's mean gap between content events, less its shortest gap, over the "
    "whole tokens an event carries (tokens // events): an output filter's hold-back, which "
    "sends the first token late and flushes the last one at the end, cannot make it look "
    "faster"
)
CPU_KINDS = (
    ("safety_filter", "safety filter"),
    ("envoy", "Envoy"),
    ("control_plane", "control plane"),
    ("redis", "Redis"),
)


@dataclass(frozen=True)
class CompareHeader:
    machine: str
    date: str
    engines: str  # e.g. "4 sim workers (tp2 profile, time scale 1)"
    workload: str
    long_prompts: bool = False


def _index(records: Sequence[Record]) -> dict[tuple[str, int], Record]:
    return {(str(r["system"]), int(r["concurrency"])): r for r in records}


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{value / base:.2f}"


def _targets_table(records: Sequence[Record], checks: Sequence[Check], long: bool) -> list[str]:
    met_text = {True: "met", False: "**missed**", None: "-"}
    lines = ["| target (full chain) | goal | measured | |", "|---|---|---:|---|"]
    for target in targets(records, checks, long_prompts=long):
        verdict = REPORTED if target.goal == REPORTED else met_text[target.met]
        goal = "-" if target.goal == REPORTED else target.goal
        lines.append(f"| {target.name} | {goal} | {target.measured} | {verdict} |")
    return lines


def _systems(records: Sequence[Record], measured: bool = False) -> list[str]:
    """Systems in run order; with `measured`, only those whose stacks were read (Frugal's)."""
    return list(
        dict.fromkeys(
            str(r["system"]) for r in records if not measured or r.get("processes") is not None
        )
    )


def _grid(
    records: Sequence[Record],
    cell: Callable[[Record, Record | None], str],
    systems: Sequence[str] | None = None,
) -> list[str]:
    systems = list(systems if systems is not None else _systems(records))
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


def _cpu_cell(kind: str) -> Callable[[Record, Record | None], str]:
    def cell(record: Record, base: Record | None) -> str:
        per_request = (record.get("cpu_us_per_request") or {}).get(kind)
        per_token = (record.get("cpu_us_per_token") or {}).get(kind)
        processes = (record.get("processes") or {}).get(kind, 0)
        count = f" [{processes}]" if kind == "safety_filter" else ""
        return f"{_num(per_request, 0)} / {_num(per_token, 1)}{count}"

    return cell


def _python_cell(record: Record, base: Record | None) -> str:
    calls = record.get("python_messages_per_request") or {}
    parts = " + ".join(_num(calls.get(k), 2) for k in ("ext_authz", "ratelimit", "ext_proc"))
    return f"{parts} = {_num(calls.get('total'), 2)}"


def _redis_cell(record: Record, base: Record | None) -> str:
    return (
        f"{_num(record.get('redis_round_trips_per_request'), 2)} / "
        f"{_num(record.get('redis_commands_per_request'), 2)}"
    )


def _errors(record: Record) -> str:
    if not record["errors"]:
        return ""
    reasons = record.get("error_reasons") or {}
    why = f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else ""
    return f", **{record['errors']} errors**{why}"


def _error_lines(records: Sequence[Record]) -> list[str]:
    lines = [
        f"- {r['system']} at {r['concurrency']} streams: "
        + ", ".join(f"{k}: {v}" for k, v in sorted((r.get("error_reasons") or {}).items()))
        for r in records
        if r["errors"]
    ]
    return lines or ["- none"]


def _trips(trips: Mapping[str, Any] | None) -> str:
    if not trips:
        return "not measured"
    python = trips["python"]
    parts = ", ".join(f"{k} {python[k]:g}" for k in python if k != "total")
    messages = trips.get("messages", {}).get("total")
    sent = "" if messages is None else f", {messages:g} messages"
    redis, commands = trips.get("redis_round_trips"), trips.get("redis_commands")
    return (
        f"Python {python['total']:g} round trips ({parts}{sent}); "
        f"Redis {_num(redis, 0)} round trips, {_num(commands, 0)} commands"
    )


def _check_lines(checks: Sequence[Check]) -> list[str]:
    lines = []
    for check in checks:
        name = check["system"]
        lines.append(f"- `{name}` before the engine: {_trips(check.get('before_engine'))}")
        lines.append(f"- `{name}` after the engine: {_trips(check.get('after_engine'))}")
        if check.get("ledger"):
            lines.append(f"- `{name}` ledger == engines: {ledger_line(check['ledger'])}")
    return lines or ["- no Frugal system ran"]


def _idle_lines(checks: Sequence[Check]) -> list[str]:
    lines = []
    for check in checks:
        idle = check.get("idle_cpu_ms_per_s") or {}
        parts = ", ".join(f"{title} {_num(idle.get(kind))} ms/s" for kind, title in CPU_KINDS)
        lines.append(f"- `{check['system']}`: {parts}")
    return lines or ["- not measured"]


def _usage_sections(records: Sequence[Record], checks: Sequence[Check]) -> list[str]:
    measured = _systems(records, measured=True)
    if not measured:
        return []
    lines = [
        "## CPU per request / per streamed token (us, from /proc)",
        "",
        "utime + stime of every process of the kind (/proc/PID/stat) over the level, less "
        "what the kind spends idle over the same time, per request sent and per token "
        "streamed; [n] is the number of safety filter processes. /proc counts 10 ms ticks, "
        "so a level's figure is good to about +-10 ms / its requests (the target uses all "
        "levels together). Idle CPU, watched after the warm-up and left out:",
        "",
        *_idle_lines(checks),
        "",
    ]
    for kind, title in CPU_KINDS:
        lines += [f"### {title}", "", *_grid(records, _cpu_cell(kind), measured), ""]
    lines += [
        "## Python messages per request: ext_authz + rate limit service + ext_proc = total",
        "",
        "From Envoy's counters (ext_authz and ratelimit decisions, ext_proc.stream_msgs_sent).",
        "",
        *_grid(records, _python_cell, measured),
        "",
        "## Redis per request: round trips / commands",
        "",
        "Round trips are the client reads Redis processed (a pipeline or a script is one); "
        "commands as `INFO commandstats` counts them (a script's calls too), the readings' "
        "own INFO calls left out; the control plane's background reads are included.",
        "",
        *_grid(records, _redis_cell, measured),
        "",
        "## Round trips of one request, and the usage ledger",
        "",
        "Before the engine: from the request's start until Envoy starts it towards an engine; "
        "after: the rest (medians over a few requests sent one at a time after the levels). "
        "Redis round trips leave out the stack's own background rate (key and policy cache "
        "refreshes, the control plane), watched for 2 s with no request under way, times "
        "the window. Ledger: the tokens charged to the benchmark's key against the engines' "
        "own counters (prompt and generated tokens) over the system's whole run.",
        "",
        *_check_lines(checks),
        "",
    ]
    return lines


def render(records: Sequence[Record], header: CompareHeader, checks: Sequence[Check] = ()) -> str:
    described = [f"`{s}` {SYSTEM_DESCRIPTIONS[s]}" for s in _systems(records)
                 if s in SYSTEM_DESCRIPTIONS]  # fmt: skip
    lines = [
        "# Frugal against direct gRPC and the gateways users would otherwise pick",
        "",
        f"- machine: {header.machine}",
        f"- date: {header.date}",
        f"- engines: {header.engines}",
        f"- workload: {header.workload}",
        "- systems: " + "; ".join(described),
        f"- ratios in brackets are to `{BASELINE}`: below 1 is faster for latencies, above 1 "
        "is more for throughput; all values are wall-clock medians unless said",
        "",
        "## Targets",
        "",
        *_targets_table(records, checks, header.long_prompts),
        "",
        "## TTFT p50 / TBT p50 (ms)",
        "",
        TBT_DEFINITION + ".",
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
        "",
        "## Errors by status and code",
        "",
        *_error_lines(records),
        "",
        *_usage_sections(records, checks),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
