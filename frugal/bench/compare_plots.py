"""The comparison's PNG plots (I/O layer: matplotlib's Agg canvas, no display needed).

throughput.png: generated tokens/s against concurrency, one line per system.
latency_breakdown.png: end-to-end p50 split into engine and gateway time, stacked bars per
system at each concurrency (the paper's Figure 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

Record = dict[str, Any]
THROUGHPUT_PNG = "throughput.png"
BREAKDOWN_PNG = "latency_breakdown.png"


def _systems(records: Sequence[Record]) -> list[str]:
    return list(dict.fromkeys(str(r["system"]) for r in records))


def _levels(records: Sequence[Record]) -> list[int]:
    return sorted({int(r["concurrency"]) for r in records})


def _figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def plot_throughput(records: Sequence[Record], path: Path, title: str) -> None:
    figure = _figure((9, 4.8))
    axes = figure.subplots()
    for system in _systems(records):
        rows = sorted((r for r in records if r["system"] == system), key=lambda r: r["concurrency"])
        axes.plot(
            [r["concurrency"] for r in rows],
            [r["throughput_tok_s"] for r in rows],
            marker="o",
            label=system,
        )
    axes.set_xscale("log", base=2)
    axes.set_xticks(_levels(records))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_xlabel("concurrent streams (closed loop)")
    axes.set_ylabel("generated tokens/s (wall)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_breakdown(records: Sequence[Record], path: Path, title: str) -> None:
    """Systems whose answers carry no engine time (LiteLLM drops the gateway's SSE comment)
    cannot be split, and are left out, as the title says."""
    split = [r for r in records if r["engine_ms_p50"] is not None]
    systems = _systems(split)
    levels = _levels(records)
    unsplit = [s for s in _systems(records) if s not in systems]
    if unsplit:
        title += f"\nnot shown (no engine time in their answers): {', '.join(unsplit)}"
    index = {(r["system"], r["concurrency"]): r for r in split}
    figure = _figure((max(7.0, 1.2 * len(levels) + 2), 4.5))
    axes = figure.subplots()
    width = 0.8 / max(1, len(systems))
    for offset, system in enumerate(systems):
        xs, engine, gateway = [], [], []
        for position, level in enumerate(levels):
            record = index.get((system, level))
            if record is None:
                continue
            xs.append(position + (offset - (len(systems) - 1) / 2) * width)
            engine.append(record["engine_ms_p50"] or 0.0)
            gateway.append(max(0.0, record["gateway_ms_p50"] or 0.0))
        bars = axes.bar(xs, engine, width, label=f"{system}: engine")
        axes.bar(
            xs, gateway, width, bottom=engine, label=f"{system}: gateway",
            color=bars.patches[0].get_facecolor() if bars.patches else None, alpha=0.45,
            hatch="//",
        )  # fmt: skip
    axes.set_xticks(range(len(levels)))
    axes.set_xticklabels([str(level) for level in levels])
    axes.set_xlabel("concurrent streams (closed loop)")
    axes.set_ylabel("end-to-end p50 (ms, wall)")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
