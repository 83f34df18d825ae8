"""`frugal bench prefix` end to end in a tiny mode: two real stacks started by the product's
own code, a few Mooncake requests through each, real result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frugal.cli.__main__ import main
from tests.helpers.stack import STACK_MARKS

pytestmark = [*STACK_MARKS, pytest.mark.timeout(180)]


def test_a_tiny_prefix_benchmark_writes_both_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["bench", "prefix", "--out", str(out), "--requests", "8", "--time-scale", "1"])
    assert code == 0
    records = json.loads((out / "prefix.json").read_text())
    assert [r["inside"] for r in records] == ["least_request", "prefix"]
    assert all(r["requests"] == 8 and r["errors"] == 0 for r in records)
    # The trace's first requests share their system-prompt block: something is cached.
    assert all(0 < r["hit_rate"] < 1 for r in records)
    table = (out / "prefix.md").read_text()
    assert "| inside the group |" in table and "Hit rate" in table
