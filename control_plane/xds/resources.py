"""Type URLs of the Envoy v3 resources Frugal serves, and how each resource is named.

Layer: control plane, xDS vocabulary (pure; no I/O). The order of `PUSH_ORDER` follows the xDS
protocol's make-before-break rule: CDS, then EDS, then LDS, then RDS
(https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#eventual-consistency-considerations).
"""

from __future__ import annotations

from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"

CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"

PUSH_ORDER: tuple[str, ...] = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)

# LDS and CDS subscriptions with no resource names mean "everything" (legacy wildcard); for the
# other types a client names what it wants. "*" is the explicit wildcard for any type.
WILDCARD_TYPES: frozenset[str] = frozenset({CLUSTER_TYPE, LISTENER_TYPE})
EXPLICIT_WILDCARD = "*"


def type_url_of(message: Message) -> str:
    """The `type.googleapis.com/...` URL under which `message` travels in an Any."""
    return _PREFIX + message.DESCRIPTOR.full_name


def resource_name(message: Message) -> str:
    """The xDS name of a resource: `cluster_name` for a ClusterLoadAssignment, else `name`."""
    if type_url_of(message) == ENDPOINT_TYPE:
        return str(getattr(message, "cluster_name"))  # noqa: B009 - untyped generated message
    name = getattr(message, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{message.DESCRIPTOR.full_name} has no string 'name' field")
    return name


def push_rank(type_url: str) -> tuple[int, str]:
    """Sort key putting known types in make-before-break order, then the rest by URL."""
    try:
        return (PUSH_ORDER.index(type_url), "")
    except ValueError:
        return (len(PUSH_ORDER), type_url)
