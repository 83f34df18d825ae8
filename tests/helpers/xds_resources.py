"""Small, valid Envoy v3 resources for xDS tests: an HCM listener using RDS, a direct-response
route config, an EDS cluster and its ClusterLoadAssignment, all delivered over ADS.

Layer: test support (pure).
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

from control_plane.xds import Snapshot


def _ads_source() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def _packed(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _address(port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    )


def http_listener(
    name: str, port: int, route_config_name: str, *, http_filters: list[Any] | None = None
) -> Any:
    """A listener on 127.0.0.1:`port` whose HttpConnectionManager gets routes over RDS."""
    router = hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=_packed(router_pb2.Router())
    )
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(config_source=_ads_source(), route_config_name=route_config_name),
        http_filters=[*(http_filters or []), router],
    )
    return listener_pb2.Listener(
        name=name,
        address=_address(port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_packed(hcm),
                    )
                ]
            )
        ],
    )


def route_config(
    name: str,
    *,
    body: str | None = None,
    cluster: str | None = None,
    weighted: dict[str, int] | None = None,
) -> Any:
    """One catch-all route: a 200 direct response with `body`, or to `cluster`/`weighted`."""
    route = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"))
    if body is not None:
        route.direct_response.status = 200
        route.direct_response.body.inline_string = body
    elif cluster is not None:
        route.route.cluster = cluster
    elif weighted is not None:
        for cluster_name, weight in weighted.items():
            route.route.weighted_clusters.clusters.add(name=cluster_name).weight.value = weight
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[route])],
    )


def eds_cluster(name: str, *, service_name: str = "", connect_timeout_s: int = 1) -> Any:
    """A cluster whose endpoints come over ADS (EDS)."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=connect_timeout_s),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads_source(), service_name=service_name
        ),
    )


def load_assignment(name: str, *ports: int) -> Any:
    """Endpoints 127.0.0.1:`port` for cluster (or EDS service) `name`."""
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=_address(port))
                    )
                    for port in ports
                ]
            )
        ],
    )


def sample_snapshot(
    *, body: str = "ok", listener_port: int = 10000, endpoint_ports: tuple[int, ...] = (9001,)
) -> Snapshot:
    """Listener "public" -> RDS "public" (direct response `body`); EDS cluster "backend"."""
    return Snapshot.from_resources(
        listeners=[http_listener("public", listener_port, "public")],
        routes=[route_config("public", body=body)],
        clusters=[eds_cluster("backend")],
        endpoints=[load_assignment("backend", *endpoint_ports)],
    )
