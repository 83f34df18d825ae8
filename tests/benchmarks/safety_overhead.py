"""Benchmark: what the safety chain adds to TTFT and time between tokens, at 1, 64 and 256 streams.

Run: `make bench-safety` (or `.venv/bin/python -m tests.benchmarks.safety_overhead`).
Three stacks, one after the other, on the same machine and the same simulated fleet
(4 tp2-profile replicas, the step model of docs/simulator.md with every duration multiplied by
--time-scale so a 2-core machine can carry the chunk rate; jitter 0):
  off      safety_filter.enforce false: request parsing and routing only;
  full     keys, request and token quotas over Redis (in the request processor), content checks on
           the prompt and on the output (the default policy);
  full-x2  the same chain served by two safety_filter processes.
At each concurrency, N clients each stream requests back to back for --rounds rounds.
Prints medians over streams (TTFT to the first content chunk, mean gap between content
chunks per stream) and the ratios to `off`; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.sse_stream import timed_chat_stream
from tests.helpers.stack import FrugalStack, consecutive_free_ports, replicas, stack_config

MODEL = "sim-bench"
PROMPT = "Summarise the ScaleLLM paper for a colleague who runs LLM inference in production."
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"enforce": False},
    "full": {"enforce": True},
    "full-x2": {"enforce": True, "processes": 2},
}


@dataclass
class Level:
    ttft_ms: list[float] = field(default_factory=list)
    tbt_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    seconds: float = 0.0


async def one_stream(client: httpx.AsyncClient, tokens: int, level: Level) -> None:
    try:
        timed = await timed_chat_stream(client, MODEL, PROMPT, tokens)
    except httpx.HTTPError:
        level.errors += 1
        return
    if timed.last_event != "data: [DONE]" or not timed.arrivals:
        level.errors += 1
        return
    level.ttft_ms.append((timed.arrivals[0] - timed.start) * 1000)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(timed.arrivals)]
    if gaps:
        level.tbt_ms.append(statistics.fmean(gaps))
    level.tokens += len(timed.arrivals)


async def run_level(stack: FrugalStack, concurrency: int, rounds: int, tokens: int) -> Level:
    level = Level()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=stack.auth, timeout=120, limits=limits
    ) as client:

        async def worker() -> None:
            for _ in range(rounds):
                await one_stream(client, tokens, level)

        await one_stream(client, tokens, Level())  # warm the connections and caches
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        level.seconds = time.perf_counter() - started
    return level


async def run_variant(
    name: str, levels: list[int], rounds: int, tokens: int, time_scale: float
) -> dict[int, Level]:
    profile = {"a_ms": 8.4, "b_ms": 0.13, "c_ms": 0.03, "max_batch": 128, "jitter": 0.0}
    group = {"name": "tp2", "profile": "tp2", "replicas": replicas(4)}
    models = [{"name": MODEL, "groups": [group]}]
    with tempfile.TemporaryDirectory() as directory:
        data = stack_config(models, {"tp2": {**profile, "time_scale": time_scale}})
        variant = VARIANTS[name]
        processes = variant.get("processes", 1)
        data["safety_filter"].update(
            variant,
            port=consecutive_free_ports(processes),
            metrics_port=consecutive_free_ports(processes),
        )
        # Unlimited demo key for the load: request and token limits are exercised,
        # never reached.
        data["limits"] = {"local_requests_per_second": 100_000}
        stack = FrugalStack(Path(directory), data)
        try:
            await stack.start()
            await _unlimited_key(stack)
            return {c: await run_level(stack, c, rounds, tokens) for c in levels}
        finally:
            await stack.stop()


async def _unlimited_key(stack: FrugalStack) -> None:
    if not stack.config.safety_filter.enforce:
        return
    spec = {"name": "bench", "tenant": "bench", "tpm": 100_000_000}
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        stack.api_key = (await admin.post("/admin/v1/keys", json=spec)).json()["key"]


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, dict[int, Level]], args: argparse.Namespace) -> str:
    lines = [
        f"sim tp2 x4, time_scale {args.time_scale} (simulated ms = wall ms / {args.time_scale}),"
        f" {args.tokens} tokens a stream, {args.rounds} rounds a client; medians over streams",
        "",
        "| variant | streams | TTFT p50 ms | TBT p50 ms | tok/s | errors "
        "| TTFT vs off | TBT vs off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_level in results.items():
        for concurrency, level in by_level.items():
            base = results["off"][concurrency]
            ttft, tbt = _p50(level.ttft_ms), _p50(level.tbt_ms)
            lines.append(
                f"| {name} | {concurrency} | {ttft:.1f} | {tbt:.2f} "
                f"| {level.tokens / level.seconds:.0f} | {level.errors} "
                f"| {ttft - _p50(base.ttft_ms):+.1f} ms ({ttft / _p50(base.ttft_ms):.2f}x) "
                f"| {tbt - _p50(base.tbt_ms):+.2f} ms ({tbt / _p50(base.tbt_ms):.2f}x) |"
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    results = {}
    for name in VARIANTS:
        results[name] = await run_variant(
            name, args.levels, args.rounds, args.tokens, args.time_scale
        )
    return report(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--time-scale", type=float, default=10.0)
    args = parser.parse_args()
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
