"""The public route table: `/v1/models` from config, one weighted route per model (and a
route per group where the request processor picks the group).

Pure layer. The safety filter parses the body and sets `x-frugal-model`; a route
per model matches that header and splits traffic over one cluster per replica
group (weights set by config today, by the balancer later). Retries happen only
before the first byte: Envoy never retries once a response has started
(router.cc `maybeRetryReset` returns at `downstream_response_started_`).

Streams and unary calls get a route each. A stream's worker sends its response
headers within `streams.headers_after_s` of taking the request, so a stream route
has a per-try timeout (`streams.first_byte_timeout_s`): an attempt without headers
by then is on a frozen or black-holed replica, and `reset` in its retry conditions
retries it elsewhere (a per-try timeout is a local reset, retried by `reset`, `5xx`
or `gateway-error` only: retry_state_impl.cc `wouldRetryFromReset`; `reset` is the
narrowest). A unary answer's headers come with the whole answer, so a per-try
timeout would cut every answer longer than it: the unary route has none, and keeps
the retry conditions that never resend a request an engine may have started on.
Both are bounded by `streams.max_stream_duration_s`.

Envoy counts what the first-byte timeout does, per replica group:
`cluster.<engine cluster>.upstream_rq_per_try_timeout` (attempts abandoned) and
`upstream_rq_retry` (retries sent), on its admin /stats, and in Prometheus as
`envoy_cluster_upstream_rq_per_try_timeout{envoy_cluster_name=...}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from control_plane.model import (
    FrugalConfig,
    Model,
    StreamsConfig,
    engine_cluster_name,
    unkeyed_cluster_name,
)
from control_plane.translate import messages as m
from control_plane.translate.gateway_overhead import microseconds_header
from control_plane.translate.listener import PUBLIC_ROUTES
from frugal import wire

INFERENCE_PATHS = r"^/v1/(chat/)?completions(:stream)?$"
STREAM_PATHS = r"^/v1/(chat/)?completions:stream$"
UNARY_PATHS = r"^/v1/(chat/)?completions$"
RETRY_ON = "connect-failure,refused-stream,unavailable,reset-before-request"
# A stream also retries an attempt reset before its headers: a per-try timeout, or a
# replica that died after taking the request but before its first byte (it sent
# nothing, so nothing reaches the client twice).
STREAM_RETRY_ON = RETRY_ON + ",reset"


def _without_filters() -> dict[str, Any]:
    """Routes Envoy answers itself skip the safety filter and the transcoder."""
    disabled = {"@type": m.FILTER_CONFIG, "disabled": True}
    return {m.EXT_PROC_FILTER: disabled, m.TRANSCODER_FILTER: disabled}


def _header(name: str, value: str) -> dict[str, Any]:
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _json_response(status: int, body: object) -> dict[str, Any]:
    """A fixed JSON answer; ext_proc and the transcoder are skipped for it."""
    return {
        "direct_response": {"status": status, "body": {"inline_string": json.dumps(body)}},
        "response_headers_to_add": [_header("content-type", "application/json")],
        "typed_per_filter_config": _without_filters(),
    }


def _model_card(model: Model, created: int) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": created, "owned_by": model.owned_by}


def _model_routes(config: FrugalConfig, created: int) -> list[dict[str, Any]]:
    cards = [_model_card(model, created) for model in config.models]
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": "/v1/models", "headers": [_method("GET")]},
            **_json_response(200, {"object": "list", "data": cards}),
        }
    ]
    routes += [
        {
            "match": {"path": f"/v1/models/{card['id']}", "headers": [_method("GET")]},
            **_json_response(200, card),
        }
        for card in cards
    ]
    return routes


def _method(name: str) -> dict[str, Any]:
    return {"name": ":method", "string_match": {"exact": name}}


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _retry_policy(retry_on: str, per_try_timeout_s: float) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "retry_on": retry_on,
        "num_retries": 3,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": m.PREVIOUS_HOSTS},
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }
    if per_try_timeout_s:
        policy["per_try_timeout"] = _seconds(per_try_timeout_s)
    return policy


def _inference_routes(
    model: Model, streams: StreamsConfig, *, stream: bool
) -> list[dict[str, Any]]:
    """The model's route; a prefix-routed model's are two, a picked model's one per group
    more. A request with a prefix key (`x-frugal-prefix`, set by the request processor)
    hashes on it: the key picks the host inside the group (Maglev) and, as the weighted
    clusters' random value, the group. A request without one (a prompt shorter than a
    block) goes by the same weights to the groups' least-request clusters. With a group
    picker, a request whose group the processor picked (`x-frugal-group`) goes to that
    group's cluster; one it did not pick (no lines yet) goes by the weights."""
    weighted = _inference_route(model, streams, engine_cluster_name, stream=stream)
    if model.group_picker is not None:
        return [*(_picked_route(model, streams, g.name, stream=stream) for g in model.groups),
                weighted]  # fmt: skip
    if model.prefix_routing is None:
        return [weighted]
    keyed = weighted
    keyed["match"]["headers"].append({"name": wire.PREFIX_HEADER, "present_match": True})
    keyed["route"]["hash_policy"] = [{"header": {"header_name": wire.PREFIX_HEADER}}]
    keyed["route"]["weighted_clusters"]["header_name"] = wire.PREFIX_HEADER
    return [keyed, _inference_route(model, streams, unkeyed_cluster_name, stream=stream)]


def _picked_route(
    model: Model, streams: StreamsConfig, group: str, *, stream: bool
) -> dict[str, Any]:
    """The route of the requests the processor picked `group` for: its cluster alone, with
    the same retries (inside the group) and timeouts as the weighted route."""
    route = _inference_route(model, streams, engine_cluster_name, stream=stream)
    route["match"]["headers"].append({"name": wire.GROUP_HEADER, "string_match": {"exact": group}})
    del route["route"]["weighted_clusters"]
    route["route"]["cluster"] = engine_cluster_name(model.name, group)
    return route


def _inference_route(
    model: Model, streams: StreamsConfig, cluster: Callable[[str, str], str], *, stream: bool
) -> dict[str, Any]:
    retry = (
        _retry_policy(STREAM_RETRY_ON, streams.first_byte_timeout_s)
        if stream
        else _retry_policy(RETRY_ON, 0.0)
    )
    route: dict[str, Any] = {
        "weighted_clusters": {
            "clusters": [
                {"name": cluster(model.name, group.name), "weight": group.weight}
                for group in model.groups
            ]
        },
        # Streams last as long as generation does: no route timeout (the default 15 s
        # would cut them); the HCM's stream idle timeout bounds a stalled one.
        "timeout": "0s",
        "retry_policy": retry,
    }
    if streams.max_stream_duration_s:
        # Set, it also replaces `timeout` as the route's global timeout (Envoy's
        # RouteAction.max_stream_duration). No grpc_timeout_header_max: clients call
        # over HTTP/JSON, so a grpc-timeout header of theirs sets no duration.
        route["max_stream_duration"] = {
            "max_stream_duration": _seconds(streams.max_stream_duration_s)
        }
    return {
        "match": {
            "safe_regex": {"regex": STREAM_PATHS if stream else UNARY_PATHS},
            "headers": [{"name": wire.MODEL_HEADER, "string_match": {"exact": model.name}}],
        },
        "route": route,
    }


def _unknown_model_route() -> dict[str, Any]:
    """Backstop for a request the safety filter did not tag: refuse, never guess a model.

    A plain-text local reply: local_reply_config gives it OpenAI's error body.
    """
    message = "The model does not exist or you do not have access to it."
    return {
        "match": {"safe_regex": {"regex": INFERENCE_PATHS}},
        "direct_response": {"status": 404, "body": {"inline_string": message}},
    }


def build_route_configuration(config: FrugalConfig, created: int) -> m.RouteConfiguration:
    routes = [
        *_model_routes(config, created),
        *(
            route
            for model in config.models
            for stream in (True, False)
            for route in _inference_routes(model, config.streams, stream=stream)
        ),
        _unknown_model_route(),
    ]
    return m.parse(
        {
            "name": PUBLIC_ROUTES,
            "virtual_hosts": [{"name": "openai", "domains": ["*"], "routes": routes}],
            "response_headers_to_add": [microseconds_header()],
        },
        m.RouteConfiguration,
    )
