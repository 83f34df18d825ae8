"""Desired state: what Frugal should serve, as read from `frugal.yaml`.

Pure layer: pydantic models with their validation, no I/O. A bad file is refused
by `load_config` (config_file.py) with pydantic's message, which names the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from control_plane.balancer.config import (
    AdaptiveConfig,
    BalancerConfig,
    ConcurrencyBandsConfig,
    GroupPickerConfig,
    StaticConfig,
)
from frugal.wire import DEFAULT_SAFETY_FILTER_PORT

Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]


# A content policy (frugal/content_checks): detectors, prompt and output actions. Opaque
# here and validated by the safety filter when it loads its policies.
ContentPolicy = dict[str, object]


ENGINE_CLUSTER_PREFIX = "engine__"


def engine_cluster_name(model: str, group: str) -> str:
    """The Envoy cluster of one replica group. Dot-free, because Envoy's stats tag
    extraction takes a cluster name up to its first dot (Prometheus labels)."""
    return f"{ENGINE_CLUSTER_PREFIX}{_slug(model)}__{_slug(group)}"


UNKEYED_CLUSTER_PREFIX = "engine_unkeyed__"


def unkeyed_cluster_name(model: str, group: str) -> str:
    """The sibling cluster of a prefix-routed group (`prefix_routing`) for requests without
    a prefix key: the same replicas (the group's endpoint assignment), least-request. Its
    own prefix, so no group's name can give it."""
    return f"{UNKEYED_CLUSTER_PREFIX}{_slug(model)}__{_slug(group)}"


def group_cluster_of(cluster: str) -> str:
    """The group's cluster (`engine_cluster_name`) of either of its clusters: what the
    balancer and the admin count a group's load and hosts under."""
    if cluster.startswith(UNKEYED_CLUSTER_PREFIX):
        return ENGINE_CLUSTER_PREFIX + cluster.removeprefix(UNKEYED_CLUSTER_PREFIX)
    return cluster


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Endpoint(Frozen):
    """host:port of one engine worker (one replica)."""

    host: str = "127.0.0.1"
    port: Port
    # Draining: Envoy sends it no new requests; streams under way finish (admin REST).
    draining: bool = False

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, _, port = text.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"{text!r} is not host:port")
        return cls(host=host or "127.0.0.1", port=int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


_HOSTNAME = r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"


class DnsDiscovery(Frozen):
    """Replicas found by a DNS name: every address it resolves to, on `port`.

    A compose service scaled with `--scale`, or a headless Kubernetes Service, answers
    with one address per replica; the control plane resolves it every `interval_s` and
    pushes what it finds over EDS, so scaling a group needs no config edit.
    """

    dns: str = Field(min_length=1, max_length=253, pattern=_HOSTNAME)
    port: Port
    interval_s: float = Field(default=5.0, gt=0, le=3600)


class ReplicaGroup(Frozen):
    """Replicas of one engine layout; one Envoy cluster, one weight in the model's route.

    Replicas are fixed addresses, found by `discover`, or both (the admin REST adds and
    drains either kind at run time).
    """

    name: Name
    profile: str = Field(description="name of a profile in `profiles`")
    weight: int = Field(default=1, ge=0, le=1000)
    replicas: tuple[Endpoint, ...] = ()
    discover: DnsDiscovery | None = None

    @field_validator("replicas", mode="before")
    @classmethod
    def _parse_endpoints(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(Endpoint.parse(v) if isinstance(v, str) else v for v in value)
        return value

    @model_validator(mode="after")
    def _has_replicas(self) -> ReplicaGroup:
        if not self.replicas and self.discover is None:
            raise ValueError(f"group {self.name!r}: list its replicas, or `discover` them by DNS")
        return self


class PrefixRoutingConfig(Frozen):
    """Route requests whose prompts start alike to the same replica, so its engine finds
    the prefix in its KV cache: inside each group, Envoy's Maglev hash on the prompt's
    prefix key (frugal.prefix_key, the `x-frugal-prefix` header) with bounded loads; the
    same key picks the group while the weights stand. A prompt with no key (shorter than
    a block) goes to the least-loaded replica of its group instead, through the group's
    second, least-request cluster (`unkeyed_cluster_name`) on the same replicas: Envoy's
    hash balancers would pick a host at random without a hash."""

    # A host takes a hashed request while its active requests stay within this percentage
    # of the group's mean (Envoy's hash_balance_factor; consistent hashing with bounded
    # loads). The bound holds each moment's requests; averaged over time a replica with
    # popular prefixes sits just under it, so it is set below the 1.25x the mean we aim for:
    # 125 gave 1.27x on the wall clock (frugal bench prefix), 110 gave 1.23x with 2.79x
    # least-request's cache hits, and lower TTFT p99s in frugal bench routing-virtual.
    hash_balance_factor: int = Field(default=110, ge=100)


class Model(Frozen):
    name: Name
    # The engine backend of every replica (engine_workers.backends; `frugal up` checks the name
    # and each group's profile against it, so the control plane stays engine-agnostic).
    backend: Name = "sim"
    echo: bool = Field(default=False, description="stream back the last user message")
    owned_by: str = "frugal"
    content_policy: ContentPolicy | None = None
    balancer: BalancerConfig = StaticConfig()
    groups: tuple[ReplicaGroup, ...] = Field(min_length=1)
    # Off (least-request inside each group) unless set.
    prefix_routing: PrefixRoutingConfig | None = None

    @model_validator(mode="after")
    def _groups_unique_and_weighted(self) -> Model:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"groups: duplicate group name in model {self.name!r}")
        if sum(g.weight for g in self.groups) == 0:
            raise ValueError(f"groups: the weights of model {self.name!r} add up to 0")
        if isinstance(self.balancer, ConcurrencyBandsConfig):
            for field in ("low_load_group", "high_load_group"):
                if getattr(self.balancer, field) not in names:
                    raise ValueError(f"balancer.{field}: no group of that name in {names}")
        if self.group_picker is not None and self.prefix_routing is not None:
            # Both choose the group: the prefix key as the weighted clusters' random value,
            # the picker by its predicted latency. One model uses one of them.
            raise ValueError(
                f"model {self.name!r}: balancer.group_picker and prefix_routing both pick the "
                "group; set one of them"
            )
        return self

    @property
    def group_picker(self) -> GroupPickerConfig | None:
        """The per-request group picker's settings (`balancer.group_picker` of `adaptive`)."""
        return self.balancer.group_picker if isinstance(self.balancer, AdaptiveConfig) else None


class ListenerConfig(Frozen):
    """The public listener's edge limits (control_plane/translate/listener.py, edge_limits.py).

    Defaults follow Envoy's edge best practices (configuration/best_practices/edge) where
    they fit an LLM API; each field says why where it does not.
    """

    # Loopback unless a deployment publishes it on purpose (compose, Kubernetes: 0.0.0.0).
    host: str = "127.0.0.1"
    port: Port = 8080
    # The body cap: a larger body gets 413 with an OpenAI error body, at the headers when
    # Content-Length says so (Expect: 100-continue gets it at once), else as its chunks come
    # in. 1 MiB holds a prompt of ~250k tokens of English, above the context of the models
    # served; Envoy's per-connection buffer is sized from it (buffer_limit_bytes).
    max_request_bytes: int = Field(default=1 << 20, gt=0, le=64 << 20)
    # Request header bytes (names + values, as Envoy counts them) above which a request gets
    # 431 with an OpenAI error body. OpenAI SDKs send < 2 KiB; 60 KiB is Envoy's default.
    max_request_headers_kb: int = Field(default=60, ge=1, le=4096)
    # Header count above which a request gets 431: the SDKs send ~15; 100 is Envoy's default.
    max_headers_count: int = Field(default=100, ge=1, le=4096)
    # A client must finish sending its headers within this (bounds slowloris connections);
    # an honest client sends them in one packet.
    request_headers_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # The whole request (headers and body) must be in by then: bounds a client that
    # trickles its body a byte at a time, which the idle timeout never cuts (408). Envoy
    # disarms it once the request has gone upstream or the answer has begun, so it never
    # bounds generation (HCM docs, request_timeout). 60 s: 1 MiB at ~17 KiB/s.
    request_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # A stream with no bytes either way for this long is ended: bounds a stalled engine or
    # a client that stopped reading, far above the gap between two tokens.
    stream_idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # A connection with no request for this long is closed (edge doc: 1 h); clients that
    # pool connections reconnect transparently.
    idle_timeout_s: float = Field(default=3600.0, gt=0, le=86_400)
    # HTTP/2 streams one client connection may have open at once (edge doc: 100): a client
    # that wants more concurrency opens more connections, which spread over Envoy's workers.
    max_concurrent_streams: int = Field(default=100, ge=1, le=2_147_483_647)
    # HTTP/2 flow-control windows (edge doc: 64 KiB per stream, 1 MiB per connection): how
    # much a client may send before Envoy asks for more, bounding what one stream can push
    # into Envoy's buffers ahead of the safety filter.
    initial_stream_window_size: int = Field(default=64 << 10, ge=65_535, le=2_147_483_647)
    initial_connection_window_size: int = Field(default=1 << 20, ge=65_535, le=2_147_483_647)
    # Open client connections to this listener; above it new ones are closed at accept
    # (envoy.filters.network.connection_limit). The bootstrap's
    # envoy.max_downstream_connections bounds all listeners together.
    max_connections: int = Field(default=10_000, ge=1, le=1_000_000)

    @property
    def buffer_limit_bytes(self) -> int:
        """Envoy's per-connection (and transcoder) buffer: the whole body of the largest
        allowed prompt is held while the safety filter reads it, plus 64 KiB for a prompt
        its redactions lengthen. Bigger than the edge doc's 32 KiB on purpose: a smaller
        buffer would refuse prompts under the cap."""
        return self.max_request_bytes + (64 << 10)


class StreamsConfig(Frozen):
    """Streamed answers: keep-alive while no token has come, the time a replica has to show
    it is alive before the request moves to another, and the longest a stream may last.

    The engine worker sends its response headers `headers_after_s` after it took the
    request (or with its first token, if that is sooner), and an SSE comment every
    `keepalive_interval_s` until the first token. Envoy abandons an attempt that has no
    response headers after `first_byte_timeout_s` (route `per_try_timeout`; Envoy ignores it
    once anything went downstream, router/upstream_request.cc `onPerTryTimeout`) and retries
    it on another replica: a frozen or black-holed one, never a live one with a long queue.
    """

    # SSE comments (`: keep-alive`, skipped by every SSE client: WHATWG HTML "event stream
    # interpretation") while a stream waits for its first token, so no intermediary cuts
    # it as idle: AWS ALB's idle timeout and nginx's proxy_read_timeout default to 60 s,
    # many corporate proxies use 30 s; 10 s leaves a 3x margin under the shortest, and is
    # far under Envoy's own stream_idle_timeout (listener.stream_idle_timeout_s, 300 s).
    keepalive_interval_s: float = Field(default=10.0, gt=0, le=120)
    # How long the worker holds its response headers back: an error the engine reports
    # at once (not running, its upstream unreachable: gRPC UNAVAILABLE) still leaves as a
    # headers-only gRPC status, which Envoy retries on another replica (retry_on
    # unavailable); once headers are out, nothing is retried. Half a second covers a
    # refused connection or a full queue with room to spare.
    headers_after_s: float = Field(default=0.5, gt=0, le=30)
    # Envoy's per-try timeout for streams: a replica that has sent no response headers this
    # long after the whole request reached it is abandoned and the request retried on
    # another (previous hosts excluded). A live worker sends them after headers_after_s,
    # so 5 s is 10x that: time for a loaded worker's event loop, short enough that a
    # client of a frozen replica waits seconds, not until the idle timeout. 0: off.
    first_byte_timeout_s: float = Field(default=5.0, ge=0, le=600)
    # Route max_stream_duration, for every inference request: nothing lives forever, even
    # a stream that still trickles bytes (which no idle timeout ends). An answer of 16k
    # tokens at a slow 10 tokens/s takes ~27 minutes, so an hour never cuts a real one.
    # 0: unlimited.
    max_stream_duration_s: float = Field(default=3600.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _headers_before_the_timeout(self) -> StreamsConfig:
        if self.first_byte_timeout_s and self.first_byte_timeout_s < 2 * self.headers_after_s:
            raise ValueError(
                "first_byte_timeout_s must be at least twice headers_after_s (a live replica"
                " sends its headers after headers_after_s and must not be abandoned)"
            )
        return self


class ControlPlaneConfig(Frozen):
    host: str = "127.0.0.1"
    xds_port: Port = 18000
    # Prometheus: balancer weights and load; 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Admin URLs of every Envoy this control plane serves, for live load (summed);
    # empty: the local Envoy of `envoy.admin_port`.
    envoy_admin_urls: tuple[str, ...] = ()


class EnvoyConfig(Frozen):
    admin_port: Port = 9901
    # Where Envoy's admin listens: loopback, or in a container the container's network
    # (the control plane reads its load there; never publish it).
    admin_host: str = "127.0.0.1"
    node_id: str = "frugal-envoy-0"
    # host:port of every control-plane replica Envoy may dial for xDS; empty: the one at
    # control_plane.host and xds_port. (A DNS name that resolves to every replica works too.)
    xds_addresses: tuple[str, ...] = ()
    # The overload manager's heap bound (envoy.resource_monitors.fixed_heap, tcmalloc's
    # heap as /memory reports it): above 95 % of it Envoy frees cached memory and stops
    # keeping connections alive, above 98 % it answers new requests with 503 instead of
    # growing until the kernel kills it. 2 GiB is the edge doc's example; an idle Envoy
    # here holds a 10 MiB heap, so it is far above normal use and within what a
    # container of a few GiB allows.
    max_heap_bytes: int = Field(default=2 << 30, ge=64 << 20, le=1 << 40)
    # Open client connections over every listener (the overload manager's
    # global_downstream_max_connections), so a flood cannot exhaust file descriptors.
    max_downstream_connections: int = Field(default=50_000, ge=1, le=10_000_000)

    @field_validator("xds_addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            Endpoint.parse(address)
        return value


class SafetyFilterConfig(Frozen):
    host: str = "127.0.0.1"
    port: Port = DEFAULT_SAFETY_FILTER_PORT
    # Prometheus metrics (auth outcomes, rate-limit decisions, detections, phase times); 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # The policy for every model without its own `content_policy`.
    content_policy: ContentPolicy = Field(default_factory=dict)
    # Processes serving the filter, on port, port+1, ...; Envoy spreads streams over them.
    processes: int = Field(default=1, ge=1, le=32)
    # false: no keys, quotas or content checks, only request parsing and routing (for
    # measuring what the safety chain costs; never in production).
    enforce: bool = True
    # Who checks a key's requests per minute. `inline`: the request processor, in the same
    # Redis script as the token reservation (one Python and one Redis round trip before
    # the engine). `envoy`: Envoy's global rate limit filter, calling the safety filter's
    # RateLimitService (a second round trip each; its draft RateLimit headers).
    rate_limit: Literal["inline", "envoy"] = "inline"
    # Requests one process admits at once (each holds a Redis connection for one script);
    # a request that waits longer than admit_wait_s for a slot is shed with 503
    # `overloaded` and retry-after, before anything is counted for it.
    admitting: int = Field(default=256, ge=1, le=10_000)
    admit_wait_s: float = Field(default=2.0, gt=0, le=30)
    # The block of a prompt's prefix key (frugal.prefix_key), for models with
    # `prefix_routing`: about 512 tokens; smaller for scaled-down prompts (benchmarks).
    prefix_block_chars: int = Field(default=2048, ge=16)

    def ports(self) -> list[int]:
        return [self.port + offset for offset in range(self.processes)]


class RedisConfig(Frozen):
    url: str = "redis://127.0.0.1:6379/0"
    # `frugal up` starts a redis-server for this url (loopback only), keeping its data here.
    managed: bool = True
    data_dir: str = "var/redis"
    # A Redis Cluster (or a managed equivalent): `url` is any node of it, and the services
    # find the others from there. `frugal up` starts no cluster, so `managed` must be false.
    cluster: bool = False

    @model_validator(mode="after")
    def _cluster_not_managed(self) -> RedisConfig:
        if self.cluster and self.managed:
            raise ValueError(
                "redis.cluster: true needs redis.managed: false (`frugal up` starts a single"
                " redis-server, never a cluster); point redis.url at any node of the cluster"
            )
        return self


class AdminConfig(Frozen):
    """The control plane's admin REST; never exposed through the public listener."""

    # Loopback: its bearer token (compared in constant time) is the only other guard.
    host: str = "127.0.0.1"
    port: Port = 8081


class LimitsConfig(Frozen):
    # Envoy's local rate limit: a per-instance backstop over all keys together
    # (per-key limits are global, through the safety filter's RateLimitService).
    local_requests_per_second: int = Field(default=2000, gt=0)


class AccessLogConfig(Frozen):
    """Envoy's JSON access log of the public listener, rotated by the control plane."""

    enabled: bool = True
    # Relative paths are under the stack's directory (where `frugal up` keeps var/).
    path: str = Field(default="var/log/access.log", min_length=1)
    # Rotate when the file is larger than this; 0: never (an outside logrotate may
    # rename the file and POST /reopen_logs to Envoy's admin itself).
    max_bytes: int = Field(default=50 << 20, ge=0)
    # Rotated files kept (access.log.1 is the newest); 0: a full file is deleted.
    backups: int = Field(default=5, ge=0, le=100)
    check_interval_s: float = Field(default=5.0, gt=0, le=3600)

    def under(self, base: Path) -> AccessLogConfig:
        """This config with `path` made absolute: Envoy opens it from its own working dir."""
        path = Path(self.path)
        return self if path.is_absolute() else self.model_copy(update={"path": str(base / path)})


class FrugalConfig(Frozen):
    listener: ListenerConfig = ListenerConfig()
    control_plane: ControlPlaneConfig = ControlPlaneConfig()
    envoy: EnvoyConfig = EnvoyConfig()
    safety_filter: SafetyFilterConfig = SafetyFilterConfig()
    redis: RedisConfig = RedisConfig()
    admin: AdminConfig = AdminConfig()
    limits: LimitsConfig = LimitsConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    streams: StreamsConfig = StreamsConfig()
    # Engine parameters per named profile; opaque here, validated by the engine
    # backend that runs them (engine_workers), so the control plane stays engine-agnostic.
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: tuple[Model, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> FrugalConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: duplicate model name")
        seen: dict[str, str] = {}
        clusters: dict[str, str] = {}
        for model in self.models:
            for group in model.groups:
                cluster = engine_cluster_name(model.name, group.name)
                other = clusters.setdefault(cluster, f"{model.name}/{group.name}")
                if other != f"{model.name}/{group.name}":
                    raise ValueError(
                        f"models.{model.name}.groups.{group.name}.name: gives the same Envoy "
                        f"cluster name ({cluster}) as {other}; rename one of them"
                    )
                if group.profile not in self.profiles:
                    raise ValueError(
                        f"models.{model.name}.groups.{group.name}.profile: unknown profile "
                        f"{group.profile!r} (known: {sorted(self.profiles)})"
                    )
                for endpoint in group.replicas:
                    owner = seen.setdefault(str(endpoint), f"{model.name}/{group.name}")
                    if owner != f"{model.name}/{group.name}":
                        raise ValueError(
                            f"models.{model.name}.groups.{group.name}.replicas: {endpoint} "
                            f"is already a replica of {owner}"
                        )
        return self

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name == name), None)
