"""An engine worker's image needs no safety filter: loading the worker loads none of it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import engine_workers.__main__
import engine_workers.server
print(sorted(name for name in sys.modules if name.split(".")[0] == "safety_filter"))
"""


def test_the_engine_worker_loads_no_safety_filter_module() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    assert probe.stdout.strip() == "[]"
