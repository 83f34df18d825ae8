"""The public listener's edge limits and Envoy's bootstrap, as generated from config (pure)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from pydantic import ValidationError

from control_plane.model import FrugalConfig
from control_plane.server import api_descriptor
from control_plane.translate import translate
from control_plane.translate.edge_limits import EDGE_LIMITS_FILTER, UNPARSED_REQUEST_HEADER
from control_plane.translate.local_replies import (
    CHECKS_UNAVAILABLE,
    CODEC_ERRORS,
    OVERLOADED_MESSAGE,
)
from frugal.cli.envoy_bootstrap import render_bootstrap

HCM = http_connection_manager_pb2.HttpConnectionManager
MODELS = [{"name": "m", "groups": [{"name": "g", "profile": "p", "replicas": ["127.0.0.1:7001"]}]}]
EDGE = {
    "max_request_bytes": 100_000,
    "max_request_headers_kb": 8,
    "max_headers_count": 40,
    "request_headers_timeout_s": 7,
    "request_timeout_s": 45,
    "stream_idle_timeout_s": 90,
    "idle_timeout_s": 600,
    "max_concurrent_streams": 50,
    "initial_stream_window_size": 131_072,
    "initial_connection_window_size": 2_097_152,
    "max_connections": 1234,
}


def config(listener: dict[str, Any] | None = None, **sections: Any) -> FrugalConfig:
    return FrugalConfig.model_validate(
        {"listener": listener or {}, **sections, "profiles": {"p": {}}, "models": MODELS}
    )


def listener_of(frugal: FrugalConfig) -> Any:
    (listener,) = translate(frugal, api_descriptor(), 1).listeners
    return listener


def hcm_of(frugal: FrugalConfig) -> Any:
    (chain,) = listener_of(frugal).filter_chains
    hcm = HCM()
    assert chain.filters[-1].typed_config.Unpack(hcm)
    return hcm


def test_timeouts_windows_and_stream_limits_come_from_the_config() -> None:
    hcm = hcm_of(config(EDGE))
    assert hcm.request_headers_timeout.seconds == 7
    assert hcm.stream_idle_timeout.seconds == 90
    assert hcm.common_http_protocol_options.idle_timeout.seconds == 600
    # Receiving the request is bounded; Envoy disarms it before generation starts.
    assert hcm.request_timeout.seconds == 45
    h2 = hcm.http2_protocol_options
    assert h2.max_concurrent_streams.value == 50
    assert h2.initial_stream_window_size.value == 131_072
    assert h2.initial_connection_window_size.value == 2_097_152
    options = hcm.common_http_protocol_options
    assert options.headers_with_underscores_action == options.DROP_HEADER
    assert hcm.proxy_100_continue is False


def test_the_defaults_are_the_edge_best_practices() -> None:
    hcm = hcm_of(config())
    h2 = hcm.http2_protocol_options
    assert h2.max_concurrent_streams.value == 100
    assert h2.initial_stream_window_size.value == 64 << 10
    assert h2.initial_connection_window_size.value == 1 << 20
    assert hcm.common_http_protocol_options.idle_timeout.seconds == 3600
    assert hcm.stream_idle_timeout.seconds == 300
    assert hcm.request_headers_timeout.seconds == 10
    assert hcm.request_timeout.seconds == 60


def test_the_codecs_limits_are_twice_the_configured_ones_which_the_edge_filter_answers() -> None:
    hcm = hcm_of(config(EDGE))
    assert hcm.max_request_headers_kb.value == 16
    assert hcm.common_http_protocol_options.max_headers_count.value == 80
    first = hcm.http_filters[0]
    assert first.name == EDGE_LIMITS_FILTER
    lua = lua_pb2.Lua()
    assert first.typed_config.Unpack(lua)
    source = lua.default_source_code.inline_string
    assert "local MAX_HEADER_BYTES = 8192\n" in source
    assert "local MAX_HEADERS = 40\n" in source
    assert "local MAX_BODY_BYTES = 100000\n" in source
    assert '"431"' in source and '"413"' in source


def test_the_codec_limits_stay_within_what_envoy_accepts() -> None:
    hcm = hcm_of(config({"max_request_headers_kb": 4096, "max_headers_count": 4096}))
    assert hcm.max_request_headers_kb.value == 8192
    assert hcm.common_http_protocol_options.max_headers_count.value == 8192


def test_buffers_hold_the_largest_allowed_body_with_headroom() -> None:
    frugal = config(EDGE)
    listener = listener_of(frugal)
    expected = 100_000 + (64 << 10)
    assert frugal.listener.buffer_limit_bytes == expected
    assert listener.per_connection_buffer_limit_bytes.value == expected
    filters = hcm_of(frugal).http_filters
    (transcoder,) = [f for f in filters if f.name == "envoy.filters.http.grpc_json_transcoder"]
    options = transcoder_pb2.GrpcJsonTranscoder()
    assert transcoder.typed_config.Unpack(options)
    assert options.max_request_body_size.value == expected


def test_connections_are_limited_before_http() -> None:
    (chain,) = listener_of(config(EDGE)).filter_chains
    assert [f.name for f in chain.filters] == [
        "envoy.filters.network.connection_limit",
        "envoy.filters.network.http_connection_manager",
    ]
    limit = connection_limit_pb2.ConnectionLimit()
    assert chain.filters[0].typed_config.Unpack(limit)
    assert limit.max_connections.value == 1234


def test_every_client_is_external_and_its_envoy_forwarding_and_grpc_timeout_headers_go() -> None:
    hcm = hcm_of(config())
    assert hcm.use_remote_address.value is True
    assert hcm.xff_num_trusted_hops == 0
    # Unset: no address is internal (set without ranges, loopback would be).
    assert not hcm.HasField("internal_address_config")
    assert hcm.preserve_external_request_id is False
    (early,) = hcm.early_header_mutation_extensions
    mutation = header_mutation_pb2.HeaderMutation()
    assert early.typed_config.Unpack(mutation)
    removed, grpc_timeout, envoy_headers = mutation.mutations
    assert removed.remove == "x-forwarded-for"
    assert grpc_timeout.remove == "grpc-timeout"
    assert envoy_headers.remove_on_match.key_matcher.prefix == "x-envoy-"
    assert envoy_headers.remove_on_match.key_matcher.ignore_case is True


def _statuses(access_log_filter: Any) -> set[int]:
    """The statuses a mapper's filter compares with, through and/or filters."""
    kind = access_log_filter.WhichOneof("filter_specifier")
    if kind == "status_code_filter":
        return {access_log_filter.status_code_filter.comparison.value.default_value}
    if kind in ("and_filter", "or_filter"):
        inner = getattr(access_log_filter, kind).filters
        return set().union(*(_statuses(f) for f in inner))
    return set()


def _cel_mappers(mappers: Any) -> dict[str, int]:
    """CEL expression -> index of its mapper."""
    found = {}
    for i, mapper in enumerate(mappers):
        if mapper.filter.extension_filter.name == "envoy.access_loggers.extension_filters.cel":
            expression = cel_pb2.ExpressionFilter()
            assert mapper.filter.extension_filter.typed_config.Unpack(expression)
            found[expression.expression] = i
    return found


def test_an_overloaded_envoy_answers_with_an_openai_error() -> None:
    mappers = hcm_of(config()).local_reply_config.mappers
    index = _cel_mappers(mappers)["response.code_details == 'overload'"]
    overloaded = mappers[index]
    assert overloaded.body.inline_string == OVERLOADED_MESSAGE
    error = overloaded.body_format_override.json_format.fields["error"].struct_value.fields
    assert error["code"].string_value == "overloaded"
    assert error["message"].string_value == "%LOCAL_REPLY_BODY%"
    # Before the mappers that keep Envoy's body of a 503 ("envoy overloaded").
    later_503s = [i for i, m in enumerate(mappers) if _statuses(m.filter) & {503, 504}]
    assert later_503s and all(index < i for i in later_503s)


def test_the_bootstrap_bounds_heap_and_connections_from_the_config() -> None:
    frugal = config(envoy={"max_heap_bytes": 1 << 30, "max_downstream_connections": 777})
    overload = yaml.safe_load(render_bootstrap(frugal))["overload_manager"]
    assert overload["refresh_interval"] == "0.25s"
    monitors = {m["name"]: m["typed_config"] for m in overload["resource_monitors"]}
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 1 << 30
    connections = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert connections["max_active_downstream_connections"] == 777
    thresholds = {
        a["name"]: [(t["name"], t["threshold"]["value"]) for t in a["triggers"]]
        for a in overload["actions"]
    }
    heap = "envoy.resource_monitors.fixed_heap"
    assert thresholds == {
        "envoy.overload_actions.shrink_heap": [(heap, 0.95)],
        "envoy.overload_actions.disable_http_keepalive": [(heap, 0.95)],
        "envoy.overload_actions.stop_accepting_requests": [(heap, 0.98)],
    }


def test_every_port_but_the_public_one_listens_on_loopback_by_default() -> None:
    frugal = config()
    assert frugal.listener.host == "127.0.0.1"
    assert frugal.envoy.admin_host == "127.0.0.1"
    assert frugal.admin.host == "127.0.0.1"
    # The control plane's and safety filter's metrics bind their service's host.
    assert frugal.control_plane.host == "127.0.0.1"
    assert frugal.safety_filter.host == "127.0.0.1"
    admin = yaml.safe_load(render_bootstrap(frugal))["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("listener", "max_request_headers_kb", 0),
        ("listener", "max_request_headers_kb", 4097),
        ("listener", "max_headers_count", 0),
        ("listener", "request_headers_timeout_s", 0),
        ("listener", "initial_stream_window_size", 1024),
        ("listener", "max_connections", 0),
        ("envoy", "max_heap_bytes", 1 << 20),
        ("envoy", "max_downstream_connections", 0),
    ],
)
def test_values_out_of_bounds_are_refused_by_name(section: str, field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        config(**{section: {field: value}})


def test_the_processor_skips_replies_to_requests_whose_headers_never_parsed() -> None:
    hcm = hcm_of(config())
    (ext_proc,) = [f for f in hcm.http_filters if f.name == "envoy.filters.http.ext_proc"]
    wrapped = extension_matcher_pb2.ExtensionWithMatcher()
    assert ext_proc.typed_config.Unpack(wrapped)
    assert wrapped.extension_config.name == "envoy.filters.http.ext_proc"
    (matcher,) = wrapped.xds_matcher.matcher_list.matchers
    header_input = http_inputs_pb2.HttpResponseHeaderMatchInput()
    assert matcher.predicate.single_predicate.input.typed_config.Unpack(header_input)
    assert header_input.header_name == UNPARSED_REQUEST_HEADER
    assert matcher.predicate.single_predicate.value_match.exact == "true"
    assert matcher.on_match.action.typed_config.Is(skip_action_pb2.SkipFilter.DESCRIPTOR)
    # The local replies that carry the mark: codec errors, with no request headers.
    marked = [
        m
        for m in hcm.local_reply_config.mappers
        if [h.header.key for h in m.headers_to_add] == [UNPARSED_REQUEST_HEADER]
    ]
    assert {next(iter(_statuses(m.filter))) for m in marked} == set(CODEC_ERRORS)
    for mapper in marked:
        method = mapper.filter.and_filter.filters[0].header_filter.header
        assert (method.name, method.present_match) == (":method", False)
    # The edge filter drops the mark before the client sees it.
    lua = lua_pb2.Lua()
    assert hcm.http_filters[0].typed_config.Unpack(lua)
    assert f'remove("{UNPARSED_REQUEST_HEADER}")' in lua.default_source_code.inline_string


def test_only_an_unanswered_safety_filter_reads_as_unchecked() -> None:
    mappers = hcm_of(config()).local_reply_config.mappers
    index = _cel_mappers(mappers)["response.code_details.startsWith('ext_proc_error')"]
    unanswered = mappers[index]
    assert unanswered.status_code.value == 503
    assert unanswered.body.inline_string == CHECKS_UNAVAILABLE
    # Envoy's other 503s and 504s (no healthy upstream, max stream duration) keep their
    # own body under their status's mapper, after this one.
    later = [i for i, m in enumerate(mappers) if _statuses(m.filter) & {503, 504}]
    assert later and all(index < i for i in later)
    assert all(not mappers[i].HasField("body") for i in later)
