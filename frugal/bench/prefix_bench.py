"""`frugal bench prefix`: least-request against prefix-aware routing on the Mooncake trace,
wall clock (I/O layer: orchestration).

Each way of routing gets a fresh stack (Redis, eight sim `tp8` workers with prefix caches,
safety filter, control plane, Envoy) started by `frugal up`'s code, the same scaled replay
(frugal.bench.prefix_plan), and is stopped whatever happens. Figures: TTFT from the client,
cache hits from the engines' own counters, each replica's load (its running sequences,
sampled every `LOAD_SAMPLE_S` through the replay, averaged) against the mean. Results
in DIR/prefix.json and DIR/prefix.md; child logs in DIR/prefix-stack.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import httpx
import yaml

from control_plane.config_file import load_config
from control_plane.load_sampler import engine_samples
from frugal.bench import machine
from frugal.bench.driver import BenchRequest
from frugal.bench.goals import PREFIX_HIT_GOAL, PREFIX_LOAD_GOAL, below, met, ms
from frugal.bench.http_driver import HttpDriver, Target
from frugal.bench.load import open_loop, warm_up
from frugal.bench.ports import PortPicker
from frugal.bench.prefix_plan import (
    INSIDE,
    MODEL,
    REPLICAS,
    PrefixRequest,
    prefix_config,
    prefix_ports,
)
from frugal.bench.progress import ProgressBar
from frugal.bench.stats import RequestSample, summarise
from frugal.cli.stack import StackFiles
from frugal.cli.supervisor import Supervisor
from frugal.cli.up import api_url, start_stack
from frugal.wire import engine_metrics_port

LOG_NAME = "prefix-stack.log"
WARMUP_REQUESTS = 4
QUERIED = "frugal_engine_prefix_cache_queried_tokens_total"
HITS = "frugal_engine_prefix_cache_hit_tokens_total"
RUNNING = "frugal_engine_num_requests_running"
LOAD_SAMPLE_S = 0.5


@dataclass(frozen=True)
class PrefixOutcome:
    inside: str
    requests: int
    errors: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    throughput_tok_s: float
    hit_rate: float  # of the prompt tokens looked up, in whole blocks, found cached
    load_ratio: float  # the busiest replica's mean running sequences over the replicas' mean


async def _engine_counters(ports: Sequence[int]) -> list[dict[str, float]]:
    """Each replica's counters, read with the control plane's parser."""
    async with httpx.AsyncClient(timeout=5) as client:
        texts = [
            (await client.get(f"http://127.0.0.1:{engine_metrics_port(p)}/metrics")).text
            for p in ports
        ]
    return [engine_samples(text) for text in texts]


async def _sample_running(ports: Sequence[int], every_s: float, stop: asyncio.Event) -> list[float]:
    """Each replica's running sequences averaged over readings every `every_s` until `stop`."""
    totals = [0.0] * len(ports)
    readings = 0
    while not stop.is_set():
        for index, values in enumerate(await _engine_counters(ports)):
            totals[index] += values.get(RUNNING, 0.0)
        readings += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return [total / readings for total in totals] if readings else totals


def outcome(
    inside: str,
    samples: Sequence[RequestSample],
    duration_s: float,
    counters: tuple[Sequence[dict[str, float]], Sequence[dict[str, float]]],
    running: Sequence[float],
) -> PrefixOutcome:
    """One run's figures: each replica's counters before and after the replay, and its
    mean running sequences over it."""
    summary = summarise(samples, duration_s)
    before, after = counters
    delta = [
        {name: a.get(name, 0.0) - b.get(name, 0.0) for name in (QUERIED, HITS)}
        for b, a in zip(before, after, strict=True)
    ]
    queried = sum(d[QUERIED] for d in delta)
    mean = sum(running) / len(running) if running else 0.0
    return PrefixOutcome(
        inside=inside,
        requests=summary.requests,
        errors=summary.errors,
        ttft_p50_ms=summary.ttft_p50_ms,
        ttft_p99_ms=summary.ttft_p99_ms,
        throughput_tok_s=summary.throughput_tok_s,
        hit_rate=sum(d[HITS] for d in delta) / queried if queried else 0.0,
        load_ratio=max(running) / mean if mean else 0.0,
    )


async def run_one(
    inside: str, replay: Sequence[PrefixRequest], time_scale: float, log: TextIO
) -> PrefixOutcome:
    def sink(name: str, line: str) -> None:
        log.write(f"[{inside}] [{name}] {line}\n")

    supervisor = Supervisor(sink=sink)
    with tempfile.TemporaryDirectory(prefix="frugal-bench-prefix-") as directory:
        root = Path(directory)
        ports = prefix_ports(PortPicker())
        data = prefix_config(inside, ports, time_scale=time_scale, redis_dir=str(root / "redis"))
        config_path = root / "frugal.yaml"
        config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(config_path)
        try:
            print(f"{inside}: starting the stack", file=sys.stderr, flush=True)
            key = await start_stack(config, config_path, StackFiles(root / "var"), supervisor)
            target = Target(api_url(config), {"authorization": f"Bearer {key}"}, MODEL)
            async with HttpDriver(target, WARMUP_REQUESTS) as driver:
                await warm_up(driver, WARMUP_REQUESTS)
            before = await _engine_counters(ports.replicas)
            progress = ProgressBar(f"{inside}, Mooncake replay", len(replay))
            schedule = [
                (r.at_s, BenchRequest(r.prompt, r.max_tokens, index))
                for index, r in enumerate(replay)
            ]
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_running(ports.replicas, LOAD_SAMPLE_S, stop))
            async with HttpDriver(target, len(replay)) as driver:
                samples, duration = await open_loop(driver, schedule, progress.advance)
            stop.set()
            running = await sampler
            after = await _engine_counters(ports.replicas)
            return outcome(inside, samples, duration, (before, after), running)
        finally:
            print(f"{inside}: stopping the stack", file=sys.stderr, flush=True)
            await asyncio.shield(supervisor.stop())


def render(outcomes: Sequence[PrefixOutcome], header: Sequence[str]) -> str:
    lines = [
        *header,
        "",
        "| inside the group | requests | errors | cache hits | TTFT p50 / p99 | tok/s | "
        "busiest replica / mean |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.inside} | {o.requests} | {o.errors} | {o.hit_rate:.1%} | "
            f"{ms(o.ttft_p50_ms)} / {ms(o.ttft_p99_ms)} ms | {o.throughput_tok_s:,.0f} | "
            f"{o.load_ratio:.2f} |"
        )
    found = {o.inside: o for o in outcomes}
    least, prefix = found.get("least_request"), found.get("prefix")
    if least is not None and prefix is not None:
        ratio = prefix.hit_rate / least.hit_rate if least.hit_rate else None
        hits_met = ratio is not None and ratio >= PREFIX_HIT_GOAL
        load_met = prefix.load_ratio <= PREFIX_LOAD_GOAL
        lines += [
            "",
            f"Hit rate {'-' if ratio is None else f'{ratio:.2f}x'} least-request's "
            f"(goal >= {PREFIX_HIT_GOAL}: {met(hits_met)}); TTFT p50 "
            f"lower: {met(below(prefix.ttft_p50_ms, least.ttft_p50_ms))}; p99 no worse: "
            f"{met(below(prefix.ttft_p99_ms, least.ttft_p99_ms, equal=True))}; busiest "
            f"replica <= {PREFIX_LOAD_GOAL}x the mean: {met(load_met)}",
        ]
    return "\n".join(lines) + "\n"


async def run_prefix_benchmark(
    replay: Sequence[PrefixRequest], out: Path, time_scale: float, compression: float
) -> list[PrefixOutcome]:
    """Both ways of routing in turn, each on its own stack; writes prefix.json / prefix.md."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOG_NAME).open("w", buffering=1) as log:
        outcomes = [await run_one(inside, replay, time_scale, log) for inside in INSIDE]
    header = [
        "# Prefix-aware routing against least-request, wall clock (`frugal bench prefix`)",
        "",
        f"- machine: {machine.describe_machine()}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- replay: the Mooncake trace's first {len(replay)} requests, arrivals compressed "
        f"{compression:g}x, scaled 1/16 (frugal/bench/prefix_plan.py); {REPLICAS} sim tp8 "
        f"replicas in one group, prefix caches on, every simulated duration x{time_scale:g}",
    ]
    (out / "prefix.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    (out / "prefix.md").write_text(render(outcomes, header))
    return outcomes
