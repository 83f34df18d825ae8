"""`frugal bench compare`: the same workload through every system, side by side (I/O layer).

The engines start once (sim workers, unless the plan names engines that already run) and
every system is measured against them in turn, each started before its levels and stopped
after, so no idle gateway competes for the CPU. A Frugal stack is read before and after
each level (CPU per process, Python and Redis round trips: compare_probe.py), and after its
levels a few requests one at a time show what a request costs before and after the engine,
and the usage ledger is held against the engines' token counters. Child logs go to
DIR/compare-stack.log; the results to DIR/results.json (per level), checks.json (per
Frugal system), table.md, throughput.png and latency_breakdown.png.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx

from control_plane.model import FrugalConfig
from frugal.bench import machine
from frugal.bench.compare_counters import (
    EngineTokens,
    LevelUsage,
    StackReading,
    ledger_check,
    level_usage,
)
from frugal.bench.compare_fleet import engines_config
from frugal.bench.compare_plan import ComparePlan
from frugal.bench.compare_plots import (
    BREAKDOWN_PNG,
    THROUGHPUT_PNG,
    plot_breakdown,
    plot_throughput,
)
from frugal.bench.compare_probe import TICKS_PER_S, StackProbe
from frugal.bench.compare_records import build_record
from frugal.bench.compare_systems import SYSTEMS, SystemContext, SystemFailed, SystemRun
from frugal.bench.compare_table import CompareHeader, render
from frugal.bench.driver import BenchRequest
from frugal.bench.grpc_driver import GrpcDriver
from frugal.bench.load import RequestFactory, closed_loop, warm_up
from frugal.bench.ports import PortPicker
from frugal.bench.progress import ProgressBar
from frugal.bench.stats import LevelSummary, summarise
from frugal.cli.stack import engine_worker_specs
from frugal.cli.supervisor import Supervisor

LOG_NAME = "compare-stack.log"
OUTPUTS = ("results.json", "checks.json", "table.md", THROUGHPUT_PNG, BREAKDOWN_PNG)
WARMUP_REQUESTS = 8
ENGINE_READY_TIMEOUT_S = 60.0


class CompareFailed(Exception):
    pass


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def engines_description(plan: ComparePlan) -> str:
    if plan.simulated:
        long = (
            "; long prompts: no prefill cost and no KV limit, a near-instant backend as in "
            "the GIE measurement"
            if plan.long_prompts
            else ""
        )
        return (
            f"{plan.replicas} sim workers started by the benchmark (tp2 profile of "
            f"docs/simulator.md, time scale {plan.time_scale:g}, jitter 2 %, seeded{long})"
        )
    return f"{len(plan.engines)} running engines at {', '.join(plan.engines)}"


async def _until_engines_answer(engines: tuple[str, ...], model: str) -> None:
    deadline = time.monotonic() + ENGINE_READY_TIMEOUT_S
    async with GrpcDriver(engines, model) as driver:
        while time.monotonic() < deadline:
            samples = [await driver.send(BenchRequest("ready?", 2, 0)) for _ in engines]
            if all(s.ok for s in samples):
                return
            await asyncio.sleep(0.5)
    raise CompareFailed(f"the engines at {', '.join(engines)} did not answer in time")


@asynccontextmanager
async def shared_engines(
    plan: ComparePlan, root: Path, log: TextIO
) -> AsyncIterator[tuple[str, ...]]:
    """The engines' addresses: sim workers started here (and stopped on exit), or the plan's."""
    if not plan.simulated:
        await _until_engines_answer(plan.engines, plan.model)
        yield plan.engines
        return
    picker = PortPicker()
    engines = tuple(f"127.0.0.1:{picker.take(engine=True)}" for _ in range(plan.replicas))
    config = FrugalConfig.model_validate(
        engines_config(plan.model, engines, plan.time_scale, long_prompts=plan.long_prompts)
    )

    def sink(name: str, line: str) -> None:
        log.write(f"[engines] [{name}] {line}\n")

    supervisor = Supervisor(sink=sink)
    try:
        for spec in engine_worker_specs(config):
            await supervisor.start(spec)
        await _until_engines_answer(engines, plan.model)
        yield engines
    finally:
        await asyncio.shield(supervisor.stop())


def _request_factory(plan: ComparePlan) -> RequestFactory:
    prompt = plan.prompt()
    return lambda index: BenchRequest(prompt, plan.max_tokens, index)


async def _reading(probe: StackProbe | None) -> StackReading | None:
    if probe is None:
        return None
    try:
        return await probe.reading()
    except httpx.HTTPError as error:
        _say(f"could not read the stack ({type(error).__name__}); its level has no counts")
        return None


def _usage(
    before: StackReading | None,
    after: StackReading | None,
    summary: LevelSummary,
    idle: dict[str, float],
) -> LevelUsage | None:
    if before is None or after is None:
        return None
    return level_usage(
        before, after, requests=summary.requests, tokens=summary.tokens,
        ticks_per_s=TICKS_PER_S, idle=idle,
    )  # fmt: skip


async def run_levels(
    system: str, plan: ComparePlan, run: SystemRun
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The system's records, and (a Frugal stack's) idle CPU in ticks per second by kind,
    watched after the warm-up and left out of each level's CPU per request."""
    records = []
    async with run.make_driver(WARMUP_REQUESTS) as driver:
        await warm_up(driver, WARMUP_REQUESTS)
    idle = await run.probe.idle_rates() if run.probe is not None else {}
    for concurrency in plan.levels:
        total = plan.requests_at(concurrency)
        progress = ProgressBar(f"{system:>15} c={concurrency:<3}", total)
        async with run.make_driver(concurrency) as driver:
            before = await _reading(run.probe)
            cpu_before = machine.cpu_times()
            samples, duration = await closed_loop(
                driver, concurrency, _request_factory(plan), progress.advance,
                total=total or None, duration_s=plan.duration_s,
            )  # fmt: skip
            cpu = machine.busy_fraction(cpu_before, machine.cpu_times())
            after = await _reading(run.probe)
        progress.close()
        summary = summarise(samples, duration)
        usage = _usage(before, after, summary, idle)
        records.append(build_record(system, concurrency, summary, cpu, usage))
    return records, idle


async def check_stack(
    system: str, plan: ComparePlan, run: SystemRun, probe: StackProbe, since: datetime.date,
    engines_before: EngineTokens | None,
) -> dict[str, Any]:  # fmt: skip
    """After a Frugal system's levels: round trips before and after the engine, then the
    usage ledger against what the engines counted since the system started."""
    check: dict[str, Any] = {"system": system}
    async with run.make_driver(1) as driver:
        trips = await probe.round_trips(driver, BenchRequest(plan.prompt(), plan.max_tokens, 0))
    check["before_engine"] = None if trips is None else trips[0].as_dict()
    check["after_engine"] = None if trips is None else trips[1].as_dict()
    if probe.charges:
        engines_after = await probe.engine_tokens()
        used = None
        if engines_before is not None and engines_after is not None:
            used = engines_after - engines_before
        check["ledger"] = ledger_check(await probe.settled_ledger(since, used), used)
    return check


async def run_system(
    name: str, plan: ComparePlan, run: SystemRun
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A system's records, and for a Frugal stack its check."""
    probe = run.probe
    since = datetime.datetime.now(datetime.UTC).date()
    engines_before = await probe.engine_tokens() if probe is not None else None
    records, idle = await run_levels(name, plan, run)
    if probe is None:
        return records, None
    check = await check_stack(name, plan, run, probe, since, engines_before)
    check["idle_cpu_ms_per_s"] = {k: round(v * 1000 / TICKS_PER_S, 1) for k, v in idle.items()}
    return records, check


def _log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def write_outputs(
    out: Path, records: list[dict[str, Any]], checks: list[dict[str, Any]], plan: ComparePlan
) -> None:
    header = CompareHeader(
        machine=machine.describe_machine(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        engines=engines_description(plan),
        workload=plan.describe(),
        long_prompts=plan.long_prompts,
    )
    (out / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "checks.json").write_text(json.dumps(checks, indent=2) + "\n")
    (out / "table.md").write_text(render(records, header, checks))
    title = f"{header.engines}\n{header.machine}"
    plot_throughput(records, out / THROUGHPUT_PNG, title)
    plot_breakdown(records, out / BREAKDOWN_PNG, title)


async def run_compare(plan: ComparePlan, out: Path) -> list[dict[str, Any]]:
    """Every system in turn against the same engines; writes the outputs and returns the
    records. A system that cannot run here (litellm not installed) is skipped with a note;
    one that fails stops the run with the tail of the children's log."""
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with (
        (out / LOG_NAME).open("w", buffering=1) as log,
        tempfile.TemporaryDirectory(prefix="frugal-compare-") as scratch,
    ):
        root = Path(scratch)
        async with shared_engines(plan, root, log) as engines:
            for name in plan.systems:
                system = SYSTEMS[name]
                if (missing := system.missing()) is not None:
                    _say(f"{name}: skipped, {missing}")
                    continue

                def sink(child: str, line: str, name: str = name) -> None:
                    log.write(f"[{name}] [{child}] {line}\n")

                context = SystemContext(plan, engines, root, sink)
                _say(f"{name}: starting")
                try:
                    async with system.run(context) as run:
                        found, check = await run_system(name, plan, run)
                    records += found
                    checks += [check] if check is not None else []
                except (SystemFailed, OSError, RuntimeError, httpx.HTTPError) as error:
                    log.flush()
                    raise CompareFailed(
                        f"{name}: {type(error).__name__}: {error}\n"
                        f"--- last lines of {out / LOG_NAME} ---\n{_log_tail(out / LOG_NAME)}"
                    ) from error
    write_outputs(out, records, checks, plan)
    return records
