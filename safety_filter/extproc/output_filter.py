"""Checking generated text on its way out, where it is made: the checks the worker runs.

Pure layer. `output_checks` states the request's checks for the engine worker, which
runs them on a stream token by token before it writes each event, and on a unary
answer as a whole (engine_workers/output_guard.py), so no answer passes through the
safety filter's process: its response body never comes here.
"""

from __future__ import annotations

from typing import Any

from frugal.content_checks import ContentPolicy


def output_checks(policy: ContentPolicy) -> dict[str, Any] | None:
    """An answer's checks, as the `output_checks` of the request the engine gets
    (frugal.v1.OutputChecks); None when the policy checks no output."""
    if not policy.detectors or not policy.check_output:
        return None
    return {
        "detectors": list(policy.detectors),
        "action": policy.output_action,
        "blocklist": list(policy.blocklist),
    }
