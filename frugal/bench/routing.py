"""The routing benchmark of the ScaleLLM paper's section 6 (I/O layer: orchestration).

For each policy a fresh stack (Redis, five sim engine workers, safety filter, control plane,
Envoy) is started by the same code as `frugal up`, driven through the closed-loop levels and
the trace replay, and stopped, whatever happens. Child logs go to DIR/routing-stack.log; the
results to DIR/routing.json, routing.md and routing.png.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from control_plane.config_file import load_config
from frugal.bench import group_share, machine
from frugal.bench.driver import BenchRequest
from frugal.bench.fleet import MODEL, group_clusters, routing_config
from frugal.bench.http_driver import HttpDriver, Target
from frugal.bench.load import closed_loop, envoy_stats, open_loop, warm_up
from frugal.bench.plan import MAX_TOKENS_CHOICES, LevelPlan, RoutingPlan
from frugal.bench.plots import plot_routing
from frugal.bench.ports import PortPicker
from frugal.bench.progress import ProgressBar
from frugal.bench.records import TRACE_LOAD, Load, build_record
from frugal.bench.report import ReportHeader, render
from frugal.bench.stats import RequestSample, summarise
from frugal.bench.trace import ReplayRequest, filler_prompt, parse_trace, scale, window
from frugal.cli.stack import StackFiles
from frugal.cli.supervisor import Supervisor
from frugal.cli.up import api_url, start_stack

LOG_NAME = "routing-stack.log"
LOG_TAIL_LINES = 60
# A few requests after start-up, so Envoy's connections to the engines exist before timing.
WARMUP_REQUESTS = 8
CLOSED_LOOP_PROMPT = filler_prompt(64)
MAX_REPLAY_CONNECTIONS = 1024


class BenchmarkFailed(Exception):
    pass


@dataclass
class StackLog:
    """Every child's output, prefixed with the policy and the child's name."""

    file: TextIO
    policy: str = ""

    def write(self, name: str, line: str) -> None:
        self.file.write(f"[{self.policy}] [{name}] {line}\n")


def load_replay(plan: RoutingPlan) -> list[ReplayRequest]:
    if plan.trace is None:
        return []
    with plan.trace.path.open(newline="") as lines:
        requests = parse_trace(lines)
    return scale(window(requests, plan.trace.start, plan.trace.requests), plan.trace.scaling)


@dataclass(frozen=True)
class Measured:
    samples: list[RequestSample]
    duration_s: float
    group_share: dict[str, float]
    cpu_busy: float | None


async def _measure(
    admin: str, work: Coroutine[Any, Any, tuple[list[RequestSample], float]]
) -> Measured:
    """Run one level, with Envoy's per-group request counters and the CPU clock around it."""
    clusters = group_clusters()
    before = group_share.upstream_requests(await envoy_stats(admin), clusters)
    cpu_before = machine.cpu_times()
    samples, duration = await work
    cpu = machine.busy_fraction(cpu_before, machine.cpu_times())
    after = group_share.upstream_requests(await envoy_stats(admin), clusters)
    return Measured(samples, duration, group_share.shares(before, after), cpu)


async def run_policy(
    policy: str, plan: RoutingPlan, replay: Sequence[ReplayRequest], log: StackLog
) -> list[dict[str, Any]]:
    log.policy = policy
    supervisor = Supervisor(sink=log.write)
    with tempfile.TemporaryDirectory(prefix="frugal-bench-") as directory:
        root = Path(directory)
        data = routing_config(
            policy, PortPicker().stack_ports(), time_scale=plan.time_scale,
            redis_dir=str(root / "redis"),
        )  # fmt: skip
        config_path = root / "frugal.yaml"
        config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(config_path)
        admin = f"http://127.0.0.1:{config.envoy.admin_port}"
        try:
            print(f"policy {policy}: starting the stack", file=sys.stderr, flush=True)
            key = await start_stack(config, config_path, StackFiles(root / "var"), supervisor)
            target = Target(api_url(config), {"authorization": f"Bearer {key}"}, MODEL)
            async with HttpDriver(target, WARMUP_REQUESTS) as driver:
                await warm_up(driver, WARMUP_REQUESTS)
            records = []
            for level in plan.levels:
                records.append(await _run_level(policy, plan, level, target, admin))
            if replay:
                records.append(await _run_trace(policy, plan, replay, target, admin))
            return records
        except Exception as error:
            raise BenchmarkFailed(f"policy {policy}: {type(error).__name__}: {error}") from error
        finally:
            print(f"policy {policy}: stopping the stack", file=sys.stderr, flush=True)
            await asyncio.shield(supervisor.stop())


def _record(policy: str, load: Load, plan: RoutingPlan, measured: Measured) -> dict[str, Any]:
    return build_record(
        policy,
        load,
        summarise(measured.samples, measured.duration_s),
        time_scale=plan.time_scale,
        group_share=measured.group_share,
        cpu_busy=measured.cpu_busy,
    )


def closed_loop_request(index: int) -> BenchRequest:
    """The index-th closed-loop request: max_tokens drawn (seeded by the index) from a small
    fixed distribution."""
    return BenchRequest(CLOSED_LOOP_PROMPT, random.Random(index).choice(MAX_TOKENS_CHOICES), index)


async def _run_level(
    policy: str, plan: RoutingPlan, level: LevelPlan, target: Target, admin: str
) -> dict[str, Any]:
    progress = ProgressBar(f"policy {policy}, load {level.concurrency}", level.requests)
    async with HttpDriver(target, level.concurrency) as driver:
        work = closed_loop(
            driver, level.concurrency, closed_loop_request, progress.advance, total=level.requests
        )
        measured = await _measure(admin, work)
    return _record(policy, level.concurrency, plan, measured)


async def _run_trace(
    policy: str, plan: RoutingPlan, replay: Sequence[ReplayRequest], target: Target, admin: str
) -> dict[str, Any]:
    progress = ProgressBar(f"policy {policy}, trace", len(replay))
    schedule = [
        (r.at_s, BenchRequest(filler_prompt(r.prompt_words), r.max_tokens, index))
        for index, r in enumerate(replay)
    ]
    async with HttpDriver(target, min(MAX_REPLAY_CONNECTIONS, len(replay))) as driver:
        measured = await _measure(admin, open_loop(driver, schedule, progress.advance))
    return _record(policy, TRACE_LOAD, plan, measured)


def _log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def write_outputs(out: Path, records: list[dict[str, Any]], plan: RoutingPlan) -> None:
    levels = ", ".join(f"{lv.concurrency} x {lv.requests_per_client}" for lv in plan.levels)
    header = ReportHeader(
        machine=machine.describe_machine(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        time_scale=plan.time_scale,
        trace=plan.trace.describe() if plan.trace else "",
        levels=f"concurrency x requests per client: {levels}",
    )
    (out / "routing.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "routing.md").write_text(render(records, header))
    plot_routing(records, out / "routing.png", time_scale=plan.time_scale)


async def run_routing_benchmark(plan: RoutingPlan, out: Path) -> list[dict[str, Any]]:
    """Every policy in turn, each on its own stack; writes the three outputs and returns the
    records. On a failure the tail of the children's log is in the exception's message."""
    out.mkdir(parents=True, exist_ok=True)
    replay = load_replay(plan)
    log_path = out / LOG_NAME
    records: list[dict[str, Any]] = []
    with log_path.open("w", buffering=1) as log_file:
        log = StackLog(log_file)
        for policy in plan.policies:
            try:
                records += await run_policy(policy, plan, replay, log)
            except BenchmarkFailed as failure:
                log_file.flush()
                tail = _log_tail(log_path)
                message = f"{failure}\n--- last lines of {log_path} ---\n{tail}"
                raise BenchmarkFailed(message) from failure
    write_outputs(out, records, plan)
    return records
