"""`frugal bench compare`: the same workload through every system, side by side (I/O layer).

The engines start once (sim workers, unless the plan names engines that already run) and
every system is measured against them in turn, each started before its levels and stopped
after, so no idle gateway competes for the CPU. Child logs go to DIR/compare-stack.log; the
results to DIR/results.json, table.md, throughput.png and latency_breakdown.png.
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

from control_plane.model import FrugalConfig
from frugal.bench import machine
from frugal.bench.compare_fleet import engines_config
from frugal.bench.compare_plan import ComparePlan
from frugal.bench.compare_plots import (
    BREAKDOWN_PNG,
    THROUGHPUT_PNG,
    plot_breakdown,
    plot_throughput,
)
from frugal.bench.compare_records import build_record
from frugal.bench.compare_systems import SYSTEMS, MakeDriver, SystemContext, SystemFailed
from frugal.bench.compare_table import CompareHeader, render
from frugal.bench.driver import BenchRequest
from frugal.bench.grpc_driver import GrpcDriver
from frugal.bench.load import RequestFactory, closed_loop, warm_up
from frugal.bench.ports import PortPicker
from frugal.bench.progress import ProgressBar
from frugal.bench.stats import summarise
from frugal.bench.trace import filler_prompt
from frugal.cli.stack import engine_worker_specs
from frugal.cli.supervisor import Supervisor

LOG_NAME = "compare-stack.log"
OUTPUTS = ("results.json", "table.md", THROUGHPUT_PNG, BREAKDOWN_PNG)
WARMUP_REQUESTS = 8
ENGINE_READY_TIMEOUT_S = 60.0


class CompareFailed(Exception):
    pass


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def engines_description(plan: ComparePlan) -> str:
    if plan.simulated:
        return (
            f"{plan.replicas} sim workers started by the benchmark (tp2 profile of "
            f"SIMULATOR.md, time scale {plan.time_scale:g}, jitter 2 %, seeded)"
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
    config = FrugalConfig.model_validate(engines_config(plan.model, engines, plan.time_scale))

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
    prompt = filler_prompt(plan.prompt_words)
    return lambda index: BenchRequest(prompt, plan.max_tokens, index)


async def run_levels(
    system: str, plan: ComparePlan, make_driver: MakeDriver
) -> list[dict[str, Any]]:
    records = []
    async with make_driver(WARMUP_REQUESTS) as driver:
        await warm_up(driver, WARMUP_REQUESTS)
    for concurrency in plan.levels:
        total = plan.requests_at(concurrency)
        progress = ProgressBar(f"{system:>11} c={concurrency:<3}", total)
        async with make_driver(concurrency) as driver:
            cpu_before = machine.cpu_times()
            samples, duration = await closed_loop(
                driver, concurrency, _request_factory(plan), progress.advance,
                total=total or None, duration_s=plan.duration_s,
            )  # fmt: skip
            cpu = machine.busy_fraction(cpu_before, machine.cpu_times())
        progress.close()
        records.append(build_record(system, concurrency, summarise(samples, duration), cpu))
    return records


def _log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def write_outputs(out: Path, records: list[dict[str, Any]], plan: ComparePlan) -> None:
    header = CompareHeader(
        machine=machine.describe_machine(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        engines=engines_description(plan),
        workload=plan.describe(),
    )
    (out / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "table.md").write_text(render(records, header))
    title = f"{header.engines}\n{header.machine}"
    plot_throughput(records, out / THROUGHPUT_PNG, title)
    plot_breakdown(records, out / BREAKDOWN_PNG, title)


async def run_compare(plan: ComparePlan, out: Path) -> list[dict[str, Any]]:
    """Every system in turn against the same engines; writes the outputs and returns the
    records. A system that cannot run here (litellm not installed) is skipped with a note;
    one that fails stops the run with the tail of the children's log."""
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
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
                    async with system.run(context) as make_driver:
                        records += await run_levels(name, plan, make_driver)
                except (SystemFailed, OSError, RuntimeError) as error:
                    log.flush()
                    raise CompareFailed(
                        f"{name}: {type(error).__name__}: {error}\n"
                        f"--- last lines of {out / LOG_NAME} ---\n{_log_tail(out / LOG_NAME)}"
                    ) from error
    write_outputs(out, records, plan)
    return records
