"""The stream and unary inference routes: per-try timeout, retry conditions, max duration.

Pure: the route table built from config (control_plane.translate.routes), as Envoy
protos; tests/e2e/test_stream_liveness.py runs the same routes on a real Envoy.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from control_plane.model import FrugalConfig, StreamsConfig
from control_plane.translate.routes import build_route_configuration

CONFIG: dict[str, Any] = {
    "profiles": {"p": {}},
    "models": [
        {"name": "alpha", "groups": [{"name": "g", "profile": "p", "replicas": ["127.0.0.1:7001"]}]}
    ],
}


def _routes(streams: dict[str, Any] | None = None) -> dict[str, Any]:
    """Path regex -> route action of model alpha's two inference routes."""
    data = {**CONFIG, **({"streams": streams} if streams is not None else {})}
    config = FrugalConfig.model_validate(data)
    (host,) = build_route_configuration(config, 0).virtual_hosts
    return {r.match.safe_regex.regex: r.route for r in host.routes if r.HasField("route")}


STREAM = r"^/v1/(chat/)?completions:stream$"
UNARY = r"^/v1/(chat/)?completions$"


def test_each_path_matches_exactly_one_of_the_two_routes() -> None:
    paths = {
        "/v1/chat/completions": UNARY,
        "/v1/completions": UNARY,
        "/v1/chat/completions:stream": STREAM,
        "/v1/completions:stream": STREAM,
    }
    for path, expected in paths.items():
        assert [p for p in (STREAM, UNARY) if re.match(p, path)] == [expected], path


def test_a_stream_attempt_without_headers_is_retried_after_the_first_byte_timeout() -> None:
    route = _routes({"first_byte_timeout_s": 4.5})[STREAM]
    retry = route.retry_policy
    assert retry.per_try_timeout.ToMilliseconds() == 4500
    # A per-try timeout is a local reset: only `reset` (or 5xx / gateway-error) retries it.
    assert "reset" in retry.retry_on.split(",")
    assert "reset-before-request" in retry.retry_on.split(",")
    assert retry.num_retries.value == 3


def test_a_unary_call_has_no_per_try_timeout_and_is_never_retried_once_sent() -> None:
    retry = _routes({"first_byte_timeout_s": 4.5})[UNARY].retry_policy
    assert not retry.HasField("per_try_timeout")
    conditions = retry.retry_on.split(",")
    assert "reset" not in conditions and "5xx" not in conditions
    assert "gateway-error" not in conditions
    assert "reset-before-request" in conditions


def test_a_zero_first_byte_timeout_turns_the_per_try_timeout_off() -> None:
    assert not _routes({"first_byte_timeout_s": 0})[STREAM].retry_policy.HasField("per_try_timeout")


def test_both_routes_end_a_stream_at_the_max_duration() -> None:
    for route in _routes({"max_stream_duration_s": 90}).values():
        assert route.max_stream_duration.max_stream_duration.ToSeconds() == 90
        assert not route.max_stream_duration.HasField("grpc_timeout_header_max")
    for route in _routes({"max_stream_duration_s": 0}).values():
        assert not route.HasField("max_stream_duration")


def test_the_defaults_are_the_documented_ones() -> None:
    routes = _routes()
    assert routes[STREAM].retry_policy.per_try_timeout.ToSeconds() == 5
    assert routes[STREAM].max_stream_duration.max_stream_duration.ToSeconds() == 3600


def test_headers_must_leave_well_before_the_first_byte_timeout() -> None:
    with pytest.raises(ValidationError, match="headers_after_s"):
        StreamsConfig(headers_after_s=3, first_byte_timeout_s=5)
    assert StreamsConfig(headers_after_s=3, first_byte_timeout_s=0).first_byte_timeout_s == 0
