"""The workload traces the benchmarks replay, shipped unchanged with the project (their
origin and licence are in README.md beside them)."""

from __future__ import annotations

from pathlib import Path

TRACES_DIR = Path(__file__).resolve().parent
AZURE_CODE = TRACES_DIR / "azure2023_code.csv"
AZURE_CONVERSATION = TRACES_DIR / "azure2023_conv.csv"
MOONCAKE_CONVERSATION = TRACES_DIR / "mooncake_conversation.jsonl"
