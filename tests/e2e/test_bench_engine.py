"""`frugal bench engine` end to end in a tiny mode: the repository's real model in this
process, then a whole stack (real Envoy, safety filter, control plane, Redis, one
transformers worker) started by the product's own code; real files. Checks the outputs are
well-formed, never a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frugal.bench.compare_records import problems
from frugal.bench.engine_compare import OUTPUTS
from frugal.bench.engine_plan import FRUGAL, IN_PROCESS
from frugal.cli.__main__ import main
from tests.helpers.stack import STACK_MARKS

pytestmark = [*STACK_MARKS, pytest.mark.slow, pytest.mark.timeout(240)]
LEVELS = (1, 2)


def test_a_tiny_run_measures_both_systems_and_their_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench", "engine", "--out", str(out), "--levels", "1,2",
            "--requests-per-stream", "1", "--min-requests", "2", "--max-tokens", "8",
        ]
    )  # fmt: skip
    assert code == 0, (out / "engine-stack.log").read_text()[-3000:]
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert [(r["system"], r["concurrency"]) for r in records] == [
        (system, level) for system in (IN_PROCESS, FRUGAL) for level in LEVELS
    ]
    for record in records:
        assert problems(record) == [], record
        assert (record["requests"], record["errors"]) == (2, 0), record
        assert 0 < record["tokens"] <= 2 * 8
        for key in ("ttft_p50_ms", "ttft_p90_ms", "tbt_p50_ms", "throughput_tok_s"):
            assert record[key] > 0, (key, record)
    assert [r["concurrency"] for r in results["ratios"]] == list(LEVELS)
    for ratio in results["ratios"]:
        assert all(ratio[key] > 0 for key in ("ttft_p50", "tbt_p50", "throughput_tok_s"))
    assert "nproc" in results["machine"]
    table = (out / "table.md").read_text()
    assert "| streams | TTFT p50 | TBT p50 | tokens/s |" in table
    printed = capsys.readouterr().out
    assert table in printed
    assert printed.split()[-2:] == [str(out / name) for name in OUTPUTS]
