"""`frugal bench routing` end to end in a tiny mode: real stacks (Redis, sim engines, safety
filter, control plane, Envoy) started by the product's own code, real streams, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frugal.bench.records import problems
from frugal.bench.traces import AZURE_CODE
from frugal.cli.__main__ import main
from tests.helpers.stack import STACK_MARKS

pytestmark = [*STACK_MARKS, pytest.mark.timeout(120)]


def _tiny_trace(directory: Path) -> Path:
    """The shipped trace's first rows."""
    path = directory / "trace.csv"
    with AZURE_CODE.open() as source:
        path.write_text("".join(source.readline() for _ in range(40)))
    return path


def test_a_tiny_routing_benchmark_writes_well_formed_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench", "routing", "--out", str(out),
            "--policies", "static-tp8,static-tp2",
            "--levels", "1,4", "--requests-per-client", "2",
            "--trace", str(_tiny_trace(tmp_path)), "--trace-requests", "6",
            "--trace-compression", "20",
            "--time-scale", "1",
        ]
    )  # fmt: skip
    log = out / "routing-stack.log"
    assert code == 0, log.read_text()[-5000:] if log.exists() else "no stack log"

    for name in ("routing.json", "routing.md", "routing.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "routing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    records = json.loads((out / "routing.json").read_text())
    assert [(r["policy"], r["load"]) for r in records] == [
        (policy, load) for policy in ("static-tp8", "static-tp2") for load in (1, 4, "trace")
    ]
    for record in records:
        assert problems(record) == [], record
        assert record["errors"] == 0, record
        assert record["throughput_tok_s"] > 0
        assert record["ttft_p50_ms"] is not None and record["ttft_p50_ms"] > 0
        assert record["ttft_p99_ms"] >= record["ttft_p50_ms"]
    expected_requests = {1: 2, 4: 8, "trace": 6}
    assert all(r["requests"] == expected_requests[r["load"]] for r in records)
    # Static weights are honoured at the data plane: all of one layout's traffic goes to it.
    for record in records:
        only = "tp8" if record["policy"] == "static-tp8" else "tp2"
        assert record["group_share"][only] == 1.0, record

    table = (out / "routing.md").read_text()
    assert "| load | static-tp8 | static-tp2 | adaptive / best static |" in table
    assert "time scale: 1" in table and "compressed 20x" in table
