"""`translate`: desired state -> the Envoy listeners, routes, clusters and endpoints it implies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import ValidationError

from control_plane.model import FrugalConfig
from control_plane.server import api_descriptor, build_snapshot
from control_plane.translate import EnvoyResources, translate
from control_plane.translate.local_replies import ENVOY_ERRORS
from control_plane.xds import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from frugal import wire

CREATED = 1_700_000_000
Mode = processing_mode_pb2.ProcessingMode
HCM = http_connection_manager_pb2.HttpConnectionManager

CONFIG: dict[str, Any] = {
    "listener": {"host": "0.0.0.0", "port": 18080, "max_request_bytes": 4096},
    "safety_filter": {"host": "127.0.0.1", "port": 50999},
    "profiles": {"p": {}},
    "models": [
        {
            "name": "alpha",
            "owned_by": "acme",
            "groups": [
                {"name": "big", "profile": "p", "weight": 30, "replicas": ["127.0.0.1:7001"]},
                {
                    "name": "small",
                    "profile": "p",
                    "weight": 70,
                    "replicas": ["127.0.0.1:7002", "10.0.0.3:7003"],
                },
            ],
        },
        {
            "name": "beta",
            "echo": True,
            "groups": [{"name": "e", "profile": "p", "replicas": ["127.0.0.1:7004"]}],
        },
    ],
}


def config_data() -> dict[str, Any]:
    return copy.deepcopy(CONFIG)


def make_config(data: dict[str, Any] | None = None) -> FrugalConfig:
    return FrugalConfig.model_validate(config_data() if data is None else data)


def resources(config: FrugalConfig | None = None) -> EnvoyResources:
    return translate(make_config() if config is None else config, api_descriptor(), CREATED)


def hcm_of(envoy: EnvoyResources) -> Any:
    (listener,) = envoy.listeners
    (chain,) = listener.filter_chains
    network_filter = chain.filters[-1]
    hcm = HCM()
    assert network_filter.typed_config.Unpack(hcm)
    return hcm


def http_filter(hcm: Any, name: str, message: Message) -> Any:
    (found,) = [f for f in hcm.http_filters if f.name == name]
    config = found.typed_config
    # A filter wrapped to skip codec errors' replies (edge_limits.py): the filter inside.
    wrapped = extension_matcher_pb2.ExtensionWithMatcher()
    if config.Unpack(wrapped):
        config = wrapped.extension_config.typed_config
    assert config.Unpack(message)
    return message


def routes_of(envoy: EnvoyResources) -> list[Any]:
    (route_config,) = envoy.routes
    (virtual_host,) = route_config.virtual_hosts
    assert list(virtual_host.domains) == ["*"]
    return list(virtual_host.routes)


def clusters_by_name(envoy: EnvoyResources) -> dict[str, Any]:
    return {c.name: c for c in envoy.clusters}


def test_one_public_listener_on_the_configured_address() -> None:
    envoy = resources()
    (listener,) = envoy.listeners
    assert listener.name == "public"
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 18080
    # The body cap plus headroom (tests/unit/test_edge_config.py).
    assert listener.per_connection_buffer_limit_bytes.value == 4096 + (64 << 10)
    hcm = hcm_of(envoy)
    assert hcm.rds.route_config_name == "public"
    assert hcm.rds.config_source.HasField("ads")


def envoy_rate_limit_config() -> FrugalConfig:
    data = config_data()
    data["safety_filter"] = {**data.get("safety_filter", {}), "rate_limit": "envoy"}
    return make_config(data)


def test_http_filters_in_order() -> None:
    """One policy round trip before the engine: the key check, rpm and token reservation
    are all in the request processor; the local rate limit sheds floods before it."""
    hcm = hcm_of(resources())
    assert [f.name for f in hcm.http_filters] == [
        # Header and declared body sizes, answered with 431 / 413 (edge_limits.py).
        "envoy.filters.http.lua.edge_limits",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.ext_proc",
        # Sees the transcoder's error bodies on the way back (engine_errors.py).
        "envoy.filters.http.lua.engine_errors",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.lua",
        "envoy.filters.http.router",
    ]


def test_envoys_global_rate_limit_comes_after_the_processor_when_chosen() -> None:
    hcm = hcm_of(resources(envoy_rate_limit_config()))
    names = [f.name for f in hcm.http_filters]
    assert names.index("envoy.filters.http.ext_proc") + 1 == names.index(
        "envoy.filters.http.ratelimit"
    )


def test_policy_filters_fail_closed_with_503() -> None:
    hcm = hcm_of(resources(envoy_rate_limit_config()))
    limit = http_filter(hcm, "envoy.filters.http.ratelimit", rate_limit_pb2.RateLimit())
    assert limit.failure_mode_deny is True
    assert limit.status_on_error.code == 503
    actions = limit.rate_limits[0].actions
    assert [a.request_headers.header_name for a in actions] == [
        wire.KEY_ID_HEADER,
        wire.KEY_RPM_HEADER,
    ]
    local = http_filter(
        hcm, "envoy.filters.http.local_ratelimit", local_rate_limit_pb2.LocalRateLimit()
    )
    assert local.filter_enforced.default_value.numerator == 100
    assert local.token_bucket.max_tokens == 2000


def test_ext_proc_is_one_round_trip_before_the_engine_and_fails_closed() -> None:
    ext_proc = http_filter(
        hcm_of(resources()), "envoy.filters.http.ext_proc", ext_proc_pb2.ExternalProcessor()
    )
    assert ext_proc.grpc_service.envoy_grpc.cluster_name == "safety_filter"
    mode = ext_proc.processing_mode
    assert mode.request_header_mode == Mode.SEND
    assert mode.request_body_mode == Mode.STREAMED
    assert ext_proc.send_body_without_waiting_for_header_response is True
    assert mode.request_trailer_mode == Mode.SEND
    assert mode.response_header_mode == Mode.SEND
    # No answer passes through Python: the worker checks output where it is made.
    assert mode.response_body_mode == Mode.NONE
    assert mode.response_trailer_mode == Mode.SEND
    assert list(ext_proc.response_attributes) == [wire.UPSTREAM_ADDRESS_ATTRIBUTE]
    assert ext_proc.message_timeout.seconds == 2
    assert ext_proc.failure_mode_allow is False
    assert ext_proc.status_on_error.code == http_status_pb2.ServiceUnavailable == 503
    assert list(ext_proc.metadata_options.receiving_namespaces.untyped) == [
        wire.ERROR_METADATA_NAMESPACE,
        wire.REQUEST_METADATA_NAMESPACE,
    ]
    assert ext_proc.mutation_rules.allow_all_routing.value is True


def test_transcoder_options() -> None:
    transcoder = http_filter(
        hcm_of(resources()),
        "envoy.filters.http.grpc_json_transcoder",
        transcoder_pb2.GrpcJsonTranscoder(),
    )
    assert transcoder.proto_descriptor_bin == api_descriptor()
    assert list(transcoder.services) == ["frugal.v1.Inference"]
    assert transcoder.match_incoming_request_route is True
    assert transcoder.convert_grpc_status is True
    assert transcoder.request_validation_options.reject_unknown_method is True
    options = transcoder.print_options
    assert options.preserve_proto_field_names is True
    assert options.always_print_primitive_fields is True
    assert options.stream_sse_style_delimited is True


def test_local_replies_map_every_envoy_error_status() -> None:
    mappers = hcm_of(resources()).local_reply_config.mappers
    by_status: dict[int, dict[str, Any]] = {}
    for mapper in mappers:
        if not mapper.filter.HasField("status_code_filter"):
            continue
        comparison = mapper.filter.status_code_filter.comparison
        if comparison.op == comparison.EQ:
            body = json_format.MessageToDict(mapper.body_format_override.json_format)
            by_status[comparison.value.default_value] = body["error"]
    assert set(by_status) == set(ENVOY_ERRORS)
    for status, (kind, code) in ENVOY_ERRORS.items():
        assert by_status[status] == {"message": "%LOCAL_REPLY_BODY%", "type": kind, "code": code}
    # The first mapper takes the safety filter's type and code from dynamic metadata.
    first = mappers[0]
    assert first.filter.metadata_filter.matcher.filter == wire.ERROR_METADATA_NAMESPACE
    assert first.filter.metadata_filter.match_if_key_not_found.value is False
    # The last catches any other error status.
    last = mappers[-1].filter.status_code_filter.comparison
    assert (last.op, last.value.default_value) == (last.GE, 400)


def test_models_list_is_a_direct_response_of_the_configured_models() -> None:
    routes = routes_of(resources())
    (listing,) = [r for r in routes if r.match.path == "/v1/models"]
    assert listing.direct_response.status == 200
    assert json.loads(listing.direct_response.body.inline_string) == {
        "object": "list",
        "data": [
            {"id": "alpha", "object": "model", "created": CREATED, "owned_by": "acme"},
            {"id": "beta", "object": "model", "created": CREATED, "owned_by": "frugal"},
        ],
    }
    (method,) = listing.match.headers
    assert (method.name, method.string_match.exact) == (":method", "GET")
    (content_type,) = listing.response_headers_to_add
    assert (content_type.header.key, content_type.header.value) == (
        "content-type",
        "application/json",
    )


def test_one_model_card_route_per_model() -> None:
    routes = routes_of(resources())
    cards = {r.match.path: r for r in routes if r.match.path.startswith("/v1/models/")}
    assert set(cards) == {"/v1/models/alpha", "/v1/models/beta"}
    assert json.loads(cards["/v1/models/beta"].direct_response.body.inline_string) == {
        "id": "beta",
        "object": "model",
        "created": CREATED,
        "owned_by": "frugal",
    }


def test_direct_responses_skip_ext_proc_and_the_transcoder() -> None:
    for route in routes_of(resources()):
        if not route.match.path.startswith("/v1/models"):
            continue
        per_filter = route.typed_per_filter_config
        assert set(per_filter) == {
            "envoy.filters.http.ext_proc",
            "envoy.filters.http.grpc_json_transcoder",
        }
        for packed in per_filter.values():
            disabled = route_components_pb2.FilterConfig()
            assert packed.Unpack(disabled)
            assert disabled.disabled is True


def test_two_weighted_routes_per_model_by_header() -> None:
    """One for streams, one for unary calls (tests/unit/test_stream_routes.py: how they differ)."""
    routes = [r for r in routes_of(resources()) if r.HasField("route")]
    assert len(routes) == 4
    alpha = [("engine__alpha__big", 30), ("engine__alpha__small", 70)]
    beta = [("engine__beta__e", 1)]
    for route, model, clusters, paths in (
        (routes[0], "alpha", alpha, r"^/v1/(chat/)?completions:stream$"),
        (routes[1], "alpha", alpha, r"^/v1/(chat/)?completions$"),
        (routes[2], "beta", beta, r"^/v1/(chat/)?completions:stream$"),
        (routes[3], "beta", beta, r"^/v1/(chat/)?completions$"),
    ):
        (header,) = route.match.headers
        assert (header.name, header.string_match.exact) == (wire.MODEL_HEADER, model)
        assert route.match.safe_regex.regex == paths
        weighted = route.route.weighted_clusters.clusters
        assert [(c.name, c.weight.value) for c in weighted] == clusters
        assert route.route.HasField("timeout")
        assert route.route.timeout.seconds == 0 and route.route.timeout.nanos == 0
        retry = route.route.retry_policy
        assert "reset-before-request" in retry.retry_on.split(",")
        (predicate,) = retry.retry_host_predicate
        assert predicate.name == "envoy.retry_host_predicates.previous_hosts"
        assert predicate.typed_config.Unpack(previous_hosts_pb2.PreviousHostsPredicate())


def test_the_last_route_refuses_an_untagged_inference_call() -> None:
    last = routes_of(resources())[-1]
    assert last.match.safe_regex.regex == r"^/v1/(chat/)?completions(:stream)?$"
    assert not last.match.headers
    assert last.direct_response.status == 404
    assert "does not exist" in last.direct_response.body.inline_string


def test_clusters_are_the_safety_filter_and_one_per_group() -> None:
    assert list(clusters_by_name(resources())) == [
        "safety_filter",
        "engine__alpha__big",
        "engine__alpha__small",
        "engine__beta__e",
    ]


def http2_options(cluster: Any) -> Any:
    packed = cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert packed.Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")
    return options.explicit_http_config.http2_protocol_options


def test_the_safety_filter_cluster_for_an_ip_is_static_http2() -> None:
    cluster = clusters_by_name(resources())["safety_filter"]
    assert cluster.type == cluster_pb2.Cluster.STATIC
    (locality,) = cluster.load_assignment.endpoints
    (endpoint,) = locality.lb_endpoints
    address = endpoint.endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 50999)
    assert http2_options(cluster).max_concurrent_streams.value == 100_000


def test_the_safety_filter_cluster_for_a_hostname_resolves_by_dns() -> None:
    data = config_data()
    data["safety_filter"]["host"] = "safety.internal"
    cluster = clusters_by_name(resources(make_config(data)))["safety_filter"]
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS


def test_engine_clusters_use_eds_least_request_and_health_checks() -> None:
    clusters = clusters_by_name(resources())
    for name in ("engine__alpha__big", "engine__alpha__small", "engine__beta__e"):
        cluster = clusters[name]
        assert cluster.type == cluster_pb2.Cluster.EDS
        assert cluster.eds_cluster_config.service_name == name
        assert cluster.eds_cluster_config.eds_config.HasField("ads")
        assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
        http2_options(cluster)
        (check,) = cluster.health_checks
        assert check.grpc_health_check.service_name == "frugal.v1.Inference"
        assert (check.no_traffic_interval.seconds, check.no_traffic_interval.nanos) == (1, 0)
        assert cluster.HasField("outlier_detection")
        assert cluster.outlier_detection.consecutive_gateway_failure.value == 1


def test_load_assignments_list_exactly_the_replicas() -> None:
    assignments = {
        a.cluster_name: [
            (
                e.endpoint.address.socket_address.address,
                e.endpoint.address.socket_address.port_value,
            )
            for locality in a.endpoints
            for e in locality.lb_endpoints
        ]
        for a in resources().endpoints
    }
    assert assignments == {
        "engine__alpha__big": [("127.0.0.1", 7001)],
        "engine__alpha__small": [("127.0.0.1", 7002), ("10.0.0.3", 7003)],
        "engine__beta__e": [("127.0.0.1", 7004)],
    }


def test_the_snapshot_is_consistent_and_stable() -> None:
    first = build_snapshot(make_config(), CREATED)
    first.consistent()
    second = build_snapshot(make_config(), CREATED)
    assert first.versions() == second.versions()
    assert set(first.versions()) == {CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE}


def test_a_weight_change_moves_only_the_route_version() -> None:
    before = build_snapshot(make_config(), CREATED)
    data = config_data()
    data["models"][0]["groups"][0]["weight"] = 31
    after = build_snapshot(make_config(data), CREATED)
    after.consistent()
    assert before.version(ROUTE_TYPE) != after.version(ROUTE_TYPE)
    for type_url in (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE):
        assert before.version(type_url) == after.version(type_url)


def test_a_new_replica_moves_only_the_endpoint_version() -> None:
    before = build_snapshot(make_config(), CREATED)
    data = config_data()
    data["models"][1]["groups"][0]["replicas"].append("127.0.0.1:7005")
    after = build_snapshot(make_config(data), CREATED)
    assert before.version(ENDPOINT_TYPE) != after.version(ENDPOINT_TYPE)
    for type_url in (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE):
        assert before.version(type_url) == after.version(type_url)


def test_distinct_groups_never_share_a_cluster_name() -> None:
    data = config_data()
    data["models"] = [
        {"name": "a.b", "groups": [{"name": "c", "profile": "p", "replicas": ["127.0.0.1:7001"]}]},
        {"name": "a", "groups": [{"name": "b.c", "profile": "p", "replicas": ["127.0.0.1:7002"]}]},
    ]
    try:
        config = make_config(data)
    except ValidationError:
        return  # refusing such names when the config is read is a fix too
    names = [c.name for c in resources(config).clusters]
    assert len(set(names)) == len(names), names
    build_snapshot(config, CREATED).consistent()


def test_a_small_stream_idle_timeout_translates() -> None:
    data = config_data()
    data["listener"]["stream_idle_timeout_s"] = 0.00001
    hcm = hcm_of(resources(make_config(data)))
    assert (hcm.stream_idle_timeout.seconds, hcm.stream_idle_timeout.nanos) == (0, 10_000)


def test_the_stream_idle_timeout_follows_the_config() -> None:
    data = config_data()
    data["listener"]["stream_idle_timeout_s"] = 12.5
    hcm = hcm_of(resources(make_config(data)))
    assert (hcm.stream_idle_timeout.seconds, hcm.stream_idle_timeout.nanos) == (12, 500_000_000)


def test_prefix_routing_hashes_on_the_prefix_key_inside_and_across_groups() -> None:
    data = config_data()
    data["models"][0]["prefix_routing"] = {"hash_balance_factor": 150}
    envoy = resources(make_config(data))
    alpha = [r for r in routes_of(envoy) if r.HasField("route")][:4]
    # Stream then unary; each first for requests with a key, then for those without.
    keyed, unkeyed = alpha[0::2], alpha[1::2]
    for route in keyed:
        (policy,) = route.route.hash_policy
        assert policy.header.header_name == wire.PREFIX_HEADER
        assert route.route.weighted_clusters.header_name == wire.PREFIX_HEADER
        assert {h.name: h.present_match for h in route.match.headers}[wire.PREFIX_HEADER]
        assert [c.name for c in route.route.weighted_clusters.clusters] == [
            "engine__alpha__big",
            "engine__alpha__small",
        ]
    for route, twin in zip(unkeyed, keyed, strict=True):
        assert not route.route.hash_policy and not route.route.weighted_clusters.header_name
        assert [h.name for h in route.match.headers] == [wire.MODEL_HEADER]
        assert route.match.safe_regex.regex == twin.match.safe_regex.regex
        assert [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters] == [
            ("engine_unkeyed__alpha__big", twin.route.weighted_clusters.clusters[0].weight.value),
            ("engine_unkeyed__alpha__small", twin.route.weighted_clusters.clusters[1].weight.value),
        ]
    clusters = {c.name: c for c in envoy.clusters}
    for group in ("big", "small"):
        hashed = clusters[f"engine__alpha__{group}"]
        least = clusters[f"engine_unkeyed__alpha__{group}"]
        assert hashed.lb_policy == cluster_pb2.Cluster.MAGLEV
        balance = hashed.common_lb_config.consistent_hashing_lb_config
        assert balance.hash_balance_factor.value == 150
        # The short prompts' cluster: least-request on the group's own endpoint assignment.
        assert least.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
        assert least.eds_cluster_config.service_name == hashed.eds_cluster_config.service_name
        assert least.health_checks and least.outlier_detection == hashed.outlier_detection
    assert {e.cluster_name for e in envoy.endpoints} == {
        "engine__alpha__big",
        "engine__alpha__small",
        "engine__beta__e",
    }
    # A model without it keeps least-request, no hash and one cluster per group.
    assert clusters["engine__beta__e"].lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert "engine_unkeyed__beta__e" not in clusters
    beta = [r for r in routes_of(envoy) if r.HasField("route")][4:]
    assert len(beta) == 2
    for route in beta:
        assert not route.route.hash_policy and not route.route.weighted_clusters.header_name


def test_a_picked_model_has_a_route_per_group_ahead_of_its_weighted_one() -> None:
    data = config_data()
    data["models"][0]["balancer"] = {"type": "adaptive", "group_picker": {"decode_weight": 0.2}}
    envoy = resources(make_config(data))
    alpha = [r for r in routes_of(envoy) if r.HasField("route")][:6]
    # Stream then unary; each first a route per group (the picked), then the weighted one.
    for picked, weighted in ((alpha[0:2], alpha[2]), (alpha[3:5], alpha[5])):
        for route, group in zip(picked, ("big", "small"), strict=True):
            headers = {h.name: h.string_match.exact for h in route.match.headers}
            assert headers == {wire.MODEL_HEADER: "alpha", wire.GROUP_HEADER: group}
            assert route.route.cluster == f"engine__alpha__{group}"
            assert route.match.safe_regex.regex == weighted.match.safe_regex.regex
            # The same retries (inside the group: the previous host is skipped) and limits.
            assert route.route.retry_policy == weighted.route.retry_policy
            assert route.route.max_stream_duration == weighted.route.max_stream_duration
        assert [h.name for h in weighted.match.headers] == [wire.MODEL_HEADER]
        assert len(weighted.route.weighted_clusters.clusters) == 2
    # A model without a picker keeps its two routes.
    assert len([r for r in routes_of(envoy) if r.HasField("route")][6:]) == 2


def test_a_group_picker_needs_adaptive_and_no_prefix_routing() -> None:
    data = config_data()
    data["models"][0]["balancer"] = {"type": "adaptive", "group_picker": {}}
    data["models"][0]["prefix_routing"] = {}
    with pytest.raises(ValidationError, match="group_picker and prefix_routing"):
        make_config(data)
    data["models"][0].pop("prefix_routing")
    data["models"][0]["balancer"] = {"type": "static", "group_picker": {}}
    with pytest.raises(ValidationError, match="group_picker"):
        make_config(data)
