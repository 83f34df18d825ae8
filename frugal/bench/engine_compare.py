"""`frugal bench engine`: the served model through Frugal's full chain vs. its backend called
in-process, side by side in one run (I/O layer).

The systems run one after the other with the same workload: `in-process` first, its backend
stopped before the stack of `frugal` starts, so the two never share the CPUs with each
other. Child logs go to DIR/engine-stack.log; the results to DIR/results.json and
DIR/table.md (also printed).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from frugal.bench import machine
from frugal.bench.compare_records import build_record
from frugal.bench.driver import BenchRequest
from frugal.bench.engine_plan import PROMPTS, EnginePlan
from frugal.bench.engine_systems import SYSTEMS, EngineContext, MakeDriver
from frugal.bench.engine_table import EngineHeader, ratios, render
from frugal.bench.load import closed_loop
from frugal.bench.progress import ProgressBar
from frugal.bench.stats import summarise
from frugal.cli.up import StackFailed

LOG_NAME = "engine-stack.log"
OUTPUTS = ("results.json", "table.md")
# What a failing system raises: a stack that did not start, a child or a port that failed,
# the backend refusing its profile.
FAILURES = (StackFailed, OSError, RuntimeError, ValueError)


class EngineBenchFailed(Exception):
    pass


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _request(plan: EnginePlan, index: int) -> BenchRequest:
    # No seed: the transformers backend refuses per-request seeds.
    return BenchRequest(PROMPTS[index % len(PROMPTS)], plan.max_tokens, None, plan.temperature)


async def run_levels(
    system: str, plan: EnginePlan, make_driver: MakeDriver
) -> list[dict[str, Any]]:
    """The warm-up (not counted), then every level in a fresh driver."""
    async with make_driver(plan.warm_up_requests) as driver:
        await closed_loop(
            driver, plan.warm_up_requests, lambda i: _request(plan, i), lambda _: None,
            total=plan.warm_up_requests,
        )  # fmt: skip
    records = []
    for concurrency in plan.levels:
        total = plan.requests_at(concurrency)
        progress = ProgressBar(f"{system:>10} c={concurrency:<3}", total)
        async with make_driver(concurrency) as driver:
            cpu_before = machine.cpu_times()
            samples, duration = await closed_loop(
                driver, concurrency, lambda i: _request(plan, i), progress.advance, total=total
            )
            cpu = machine.busy_fraction(cpu_before, machine.cpu_times())
        progress.close()
        records.append(build_record(system, concurrency, summarise(samples, duration), cpu))
    return records


def header_for(plan: EnginePlan, load_average: str) -> EngineHeader:
    model = plan.model
    threads = model.parameters.get("threads", "torch's default")
    return EngineHeader(
        machine=machine.describe_machine(),
        load_average=load_average,
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        model=f"{model.name} (backend `{model.backend}`, profile `{model.profile}`: "
        f"{json.dumps(model.parameters, sort_keys=True)})",
        workload=plan.describe(),
        sharing=f"all {os.cpu_count() or 0} CPUs are shared by everything of a system: "
        f"`in-process` the load generator and the engine in one process (one event loop, "
        f"torch on {threads} threads); `frugal` the load generator, Envoy, the safety "
        "filter, the control plane, Redis and the engine worker (torch on "
        f"{threads} threads), each a process of its own",
    )


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def write_outputs(out: Path, records: list[dict[str, Any]], header: EngineHeader) -> str:
    """Writes results.json and table.md; returns the table."""
    results = {
        "machine": header.machine,
        "load_average": header.load_average,
        "date": header.date,
        "model": header.model,
        "workload": header.workload,
        "records": records,
        "ratios": ratios(records),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(records, header)
    (out / "table.md").write_text(table)
    return table


async def _run_system(
    name: str, plan: EnginePlan, root: Path, log: TextIO, log_path: Path
) -> list[dict[str, Any]]:
    def sink(child: str, line: str) -> None:
        log.write(f"[{name}] [{child}] {line}\n")

    _say(f"{name}: starting")
    try:
        async with SYSTEMS[name](EngineContext(plan, root, sink)) as make_driver:
            return await run_levels(name, plan, make_driver)
    except FAILURES as error:
        log.flush()
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise EngineBenchFailed(
            f"{name}: {type(error).__name__}: {error}\n--- last lines of {log_path} ---\n{tail}"
        ) from error


async def run_engine_compare(plan: EnginePlan, out: Path) -> list[dict[str, Any]]:
    """Both systems in turn; writes the outputs, prints the table and returns the records."""
    out.mkdir(parents=True, exist_ok=True)
    header = header_for(plan, _load_average())
    _say(f"machine: {header.machine}; load average {header.load_average}")
    records: list[dict[str, Any]] = []
    log_path = out / LOG_NAME
    with (
        log_path.open("w", buffering=1) as log,
        tempfile.TemporaryDirectory(prefix="frugal-bench-engine-") as scratch,
    ):
        for name in SYSTEMS:
            records += await _run_system(name, plan, Path(scratch), log, log_path)
    print(write_outputs(out, records, header), flush=True)
    return records
