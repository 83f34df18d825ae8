"""`frugal bench compare` end to end in a tiny mode: real sim engines, real Envoy stacks started
by the product's own code, the FastAPI baseline as its own process, real files; each Frugal
stack read from /proc, Envoy's admin and Redis, its ledger held against the engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frugal.bench.compare import OUTPUTS
from frugal.bench.compare_records import problems
from frugal.cli.__main__ import main
from tests.helpers.stack import STACK_MARKS

pytestmark = [*STACK_MARKS, pytest.mark.timeout(240)]
SYSTEMS = ("direct", "frugal", "frugal-noredact", "frugal-bare", "fastapi")
FRUGAL = ("frugal", "frugal-noredact", "frugal-bare")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_tiny_comparison_writes_results_a_table_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench", "compare", "--out", str(out), "--systems", ",".join(SYSTEMS),
            "--levels", "1,4", "--requests-per-stream", "2", "--max-tokens", "6",
            "--replicas", "2",
        ]
    )  # fmt: skip
    assert code == 0, (out / "compare-stack.log").read_text()[-3000:]
    records = json.loads((out / "results.json").read_text())
    assert [(r["system"], r["concurrency"]) for r in records] == [
        (system, level) for system in SYSTEMS for level in (1, 4)
    ]
    for record in records:
        assert problems(record) == [], record
        assert record["errors"] == 0, record
        assert record["requests"] == 20  # the floor: at least 20 requests a level
        assert record["throughput_tok_s"] > 0
        assert record["tbt_p50_ms"] > 0
        # Every system here reports the engine's time, so the split is known.
        assert 0 < record["engine_ms_p50"] < record["e2e_p50_ms"], record
        if record["system"] in FRUGAL:
            assert record["processes"]["safety_filter"] == 2, record  # as frugal.yaml
            assert record["cpu_us_per_request"]["envoy"] > 0, record
            assert record["python_messages_per_request"]["ext_proc"] >= 1, record
            assert record["redis_round_trips_per_request"] is not None, record
        else:
            assert record["processes"] is None, record
    checks = {check["system"]: check for check in json.loads((out / "checks.json").read_text())}
    assert set(checks) == set(FRUGAL)
    for check in checks.values():
        assert check["before_engine"]["python"]["total"] >= 1, check
    # The whole chain is one Python round trip before the engine (several messages Envoy
    # sends without waiting, answered together); without it nothing is charged.
    assert checks["frugal"]["before_engine"]["python"]["total"] == 1
    assert checks["frugal"]["before_engine"]["messages"]["ext_proc"] >= 2
    assert "ledger" not in checks["frugal-bare"]
    for name in ("frugal", "frugal-noredact"):
        ledger = checks[name]["ledger"]
        assert ledger["engines"]["completion"] >= 40 * 6, ledger  # 2 levels x 20 x max_tokens
        assert ledger["matches"] is True, ledger
    table = (out / "table.md").read_text()
    assert "| streams | direct | frugal | frugal-noredact | frugal-bare | fastapi |" in table
    assert "| TTFT p50 at 64 streams vs FastAPI (ms) | <= 1x | not measured | - |" in table
    assert "ledger == engines (full chain, the whole run) | yes | yes (ledger" in table
    for name in OUTPUTS[3:]:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / name) for name in OUTPUTS]


def test_a_system_that_is_not_installed_is_skipped_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("FRUGAL_LITELLM_BIN", raising=False)
    code = main(
        [
            "bench", "compare", "--out", str(tmp_path), "--systems", "direct,litellm",
            "--levels", "1", "--requests-per-stream", "1", "--max-tokens", "4",
            "--replicas", "1",
        ]
    )  # fmt: skip
    assert code == 0
    assert "litellm: skipped, litellm is not installed" in capsys.readouterr().err
    records = json.loads((tmp_path / "results.json").read_text())
    assert [r["system"] for r in records] == ["direct"]
