"""routing.png: throughput and TTFT p50 against concurrency, one line per policy (I/O layer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, ScalarFormatter

from frugal.bench.records import TRACE_LOAD


def plot_routing(records: Sequence[dict[str, Any]], path: Path, *, time_scale: float) -> None:
    closed = [r for r in records if r["load"] != TRACE_LOAD]
    policies = list(dict.fromkeys(str(r["policy"]) for r in closed))
    # The Agg canvas directly, not pyplot: no global backend state, no display needed.
    figure = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for policy in policies:
        rows = sorted((r for r in closed if r["policy"] == policy), key=lambda r: int(r["load"]))
        loads = [int(r["load"]) for r in rows]
        left.plot(loads, [r["throughput_tok_s"] for r in rows], marker="o", label=policy)
        ttft = [r["ttft_p50_ms"] if r["ttft_p50_ms"] is not None else float("nan") for r in rows]
        right.plot(loads, ttft, marker="o", label=policy)
    ticks = sorted({int(r["load"]) for r in closed})
    right.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    # Plain numbers on the log axis, minor ticks labelled too when it spans under 2 decades.
    right.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    right.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    for axes, label in ((left, "throughput (tokens/s, wall)"), (right, "TTFT p50 (ms, wall)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.set_xlabel("concurrent streams (closed loop)")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(
        f"1 x tp8 vs 4 x tp2 (sim, time scale {time_scale:g}: simulated = wall / {time_scale:g})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
