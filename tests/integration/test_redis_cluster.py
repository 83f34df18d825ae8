"""Frugal on a real Redis Cluster: API keys, both quotas, the usage ledger, policy overrides,
the control plane's shared state and the group picker's, through the client
`frugal.redis_connection` makes in cluster mode; and a primary's death, survived by its
promoted replica (the whole stack's survival is tests/e2e/test_redis_cluster_failover.py).

The cluster is six real redis-server processes (tests/helpers/redis_cluster.py); the keys of
the accounting are spread over every primary on purpose (one key id per primary).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.crc import key_slot
from redis.exceptions import MaxConnectionsError

from control_plane.fleet import Fleet
from control_plane.leadership import LeaderLease
from control_plane.model import FrugalConfig, RedisConfig
from control_plane.server import ControlPlane
from control_plane.settings import ControlPlaneSettings
from control_plane.shared_state import SharedWeights, shared_created
from frugal.accounting import ledger, windows
from frugal.accounting.admission import Admission, AdmissionRequest, Admitted, Refused
from frugal.accounting.request_rate import RequestRateLimiter, rpm_key
from frugal.accounting.settlements import Settlement, Settlements
from frugal.accounting.token_budget import Charge, TokenBudget, reservation_key, tpm_key
from frugal.cli.stack import StackFiles, plan_stack
from frugal.group_lines_store import GroupLinesStore
from frugal.group_picker import GroupLine, ModelPicker, PickerConfig
from frugal.keys import AuthOutcome, KeyStore
from frugal.keys.format import new_key
from frugal.keys.hashing import Peppers
from frugal.policy_store import PolicySpec, PolicyStore, Scope, policy_key
from frugal.redis_connection import PoolBounds, RedisClient, redis_client
from safety_filter.picker_roster import PickerRoster
from safety_filter.settings import SafetyFilterSettings
from tests.helpers.redis_cluster import RedisCluster
from tests.helpers.redis_server import RedisServer

PEPPERS = Peppers({1: b"c" * 32})
# As the safety filter bounds its client (safety_filter/server.py).
BOUNDS = PoolBounds(max_connections=64, wait_s=2.0, connect_timeout_s=0.5)
CONFIG = {
    "profiles": {"p": {"a_ms": 1.0}},
    "models": [
        {"name": "m", "groups": [{"name": "a", "profile": "p", "replicas": ["10.0.0.1:7001"]}]}
    ],
}


def slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    running = RedisCluster()
    yield running
    running.stop()


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[RedisClient]:
    made = redis_client(cluster.url, cluster=True, bounds=BOUNDS)
    yield made
    await made.aclose()


def key_ids_on(cluster: RedisCluster, primaries: set[int], prefix: str) -> list[str]:
    """One key id whose accounting keys live on each of the primaries at `primaries`."""
    found: dict[int, str] = {}
    for n in range(10_000):
        key_id = f"{prefix}{n}"
        port = cluster.primary_of(slot(rpm_key(key_id, 0))).port
        if port in primaries:
            found.setdefault(port, key_id)
        if len(found) == len(primaries):
            return [found[port] for port in sorted(found)]
    raise AssertionError("no key ids found for every primary")


def request(key_id: str, request_id: str, rpm: int | None, tpm: int | None) -> AdmissionRequest:
    return AdmissionRequest(key_id, request_id, 10, 20, 20, rpm, tpm)


# -- names: every multi-key call stays in one slot ---------------------------------------


@pytest.mark.parametrize("key_id", [new_key().key_id, new_key().key_id, "tenant-key:7"])
def test_the_keys_of_each_script_and_multi_key_call_share_one_slot(key_id: str) -> None:
    start, day = 1_700_000_040, windows.utc_day(1_700_000_040)
    admission = [
        rpm_key(key_id, start),
        rpm_key(key_id, start - windows.WINDOW_S),
        tpm_key(key_id, start),
        reservation_key(key_id, "req-1"),
    ]
    # The settle script also writes the token window of the reservation it reads.
    settle = [reservation_key(key_id, "req-1"), ledger.usage_key(key_id, day), tpm_key(key_id, 0)]
    key_store = [KeyStore.record_key(key_id), KeyStore.record_key("other"), KeyStore.ids_key]
    policies = [policy_key("model", "m"), policy_key("key", key_id)]
    for keys in (admission, settle, key_store, policies):
        assert len({slot(key) for key in keys}) == 1, keys


def test_the_accounting_of_different_keys_spreads_over_slots() -> None:
    slots = {slot(rpm_key(new_key().key_id, 0)) for _ in range(50)}
    assert len(slots) > 40


# -- config: cluster mode is chosen in frugal.yaml and reaches every service ---------------


def test_a_cluster_is_never_managed() -> None:
    with pytest.raises(ValidationError, match=r"redis.cluster: true needs redis.managed: false"):
        RedisConfig(cluster=True)
    assert RedisConfig(cluster=True, managed=False).cluster


def test_frugal_up_tells_the_services_and_starts_no_redis(
    tmp_path: Path, stack_binaries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = {"url": "redis://10.0.0.5:7000/0", "managed": False, "cluster": True}
    config = FrugalConfig.model_validate({**CONFIG, "redis": redis})
    specs = plan_stack(config, tmp_path / "frugal.yaml", StackFiles(tmp_path / "var"))
    assert "redis" not in [spec.name for spec in specs]
    services = [spec for spec in specs if spec.name in ("safety_filter", "control_plane")]
    assert [spec.env["FRUGAL_REDIS_CLUSTER"] for spec in services] == ["true", "true"]
    monkeypatch.setenv("FRUGAL_REDIS_CLUSTER", "true")
    assert SafetyFilterSettings().redis_cluster and ControlPlaneSettings().redis_cluster


# -- a real cluster ------------------------------------------------------------------------


async def test_a_bounded_client_waits_for_a_connection_on_one_instance_not_on_a_cluster(
    cluster: RedisCluster, redis_server: RedisServer
) -> None:
    bounds = PoolBounds(max_connections=1, wait_s=5.0, connect_timeout_s=0.5)
    # The first caller holds the one connection (blocked in Redis, seen there); the second
    # waits for it and is answered only after the first's command ends.
    single = redis_client(redis_server.url, cluster=False, bounds=bounds)
    watcher = redis_client(redis_server.url, cluster=False, bounds=BOUNDS)
    ended: list[str] = []

    async def call(name: str, command: Awaitable[object]) -> None:
        await command
        ended.append(name)

    holding = asyncio.create_task(call("first", single.blpop(["frugal-test:empty"], timeout=1)))
    while (await watcher.info("clients"))["blocked_clients"] < 1:
        await asyncio.sleep(0.01)
    await asyncio.gather(holding, call("second", single.ping()))
    assert ended == ["first", "second"]  # the second waited for the first's connection
    await single.aclose()
    await watcher.aclose()
    many = redis_client(cluster.url, cluster=True, bounds=bounds)
    with pytest.raises(MaxConnectionsError):
        await asyncio.gather(*(many.blpop(["frugal-test:empty"], timeout=0.3) for _ in range(2)))
    await asyncio.sleep(0.4)  # the first caller's command ends before the client closes
    await many.aclose()


async def test_api_keys_are_created_found_rotated_and_revoked(client: RedisClient) -> None:
    store = KeyStore(client, PEPPERS)
    record, plaintext = await store.create("cluster", "acme", rpm=5)
    assert (await store.check(plaintext)).outcome is AuthOutcome.OK
    successor, new_plaintext = await store.rotate(record.id, overlap_s=60)
    fresh = KeyStore(client, PEPPERS)
    assert (await fresh.check(new_plaintext)).outcome is AuthOutcome.OK
    assert {record.id, successor.id} <= {r.id for r in await fresh.list()}
    await store.revoke(record.id)
    assert (await KeyStore(client, PEPPERS).check(plaintext)).outcome is AuthOutcome.REVOKED
    found = await fresh.get(successor.id)
    assert found is not None and found.replaces == record.id


async def test_both_quotas_and_the_ledger_on_every_primary(
    cluster: RedisCluster, client: RedisClient
) -> None:
    primaries = {node.port for node in cluster.nodes() if node.primary}
    key_ids = key_ids_on(cluster, primaries, f"quota-{time.time_ns()}-")
    admission, budget, now = Admission(client), TokenBudget(client), time.time()
    for key_id in key_ids:
        for n in range(2):
            assert isinstance(
                await admission.admit(request(key_id, f"r{n}", 2, 1000), now), Admitted
            )
        refused = await admission.admit(request(key_id, "r2", 2, 1000), now)
        assert isinstance(refused, Refused) and refused.limit == "requests"
    over = await admission.admit(request(key_ids[0], "big", None, 40), now)
    assert isinstance(over, Refused) and over.limit == "tokens"
    charges = [Charge(k, f"r{n}", "m", 10, 5, now) for k in key_ids for n in range(2)]
    assert await budget.settle_many(charges) == [15] * len(charges)  # one pipeline, 3 nodes
    assert await budget.settle_many(charges) == [0] * len(charges)  # settled once only
    usage = await budget.window_usage(key_ids[1], now)
    assert (usage.used, usage.reserved) == (30, 0)
    day = windows.utc_day(now)
    rows = await ledger.read_usage(client, key_ids[2], day)
    assert [(r.model, r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("m", 2, 20, 10)
    ]
    everyone = [r for r in await ledger.read_all_usage(client, day) if r.key_id in key_ids]
    assert [(r.key_id, r.requests, r.tokens) for r in everyone] == [
        (key_id, 2, 30) for key_id in sorted(key_ids)
    ]
    limiter = RequestRateLimiter(client)
    assert (await limiter.hit(key_ids[0], limit=3, now=now)).allowed  # 2 admitted + this one
    assert not (await limiter.hit(key_ids[0], limit=3, now=now)).allowed


async def test_policy_overrides_are_read_in_one_call(client: RedisClient) -> None:
    store = PolicyStore(client)
    model, key = PolicySpec(prompt_action="block"), PolicySpec(blocklist=["secret"])
    await store.put("model", "cluster-m", model)
    await store.put("key", "cluster-k", key)
    asked: list[tuple[Scope, str]] = [("model", "cluster-m"), ("key", "no"), ("key", "cluster-k")]
    assert await store.get_many(asked) == [model, None, key]
    assert await store.delete("model", "cluster-m")
    assert await store.get("model", "cluster-m") is None


async def test_the_control_planes_share_their_state(cluster: RedisCluster) -> None:
    redis = redis_client(cluster.url, cluster=True)  # the control plane's: no bounds
    first, second = LeaderLease(redis, "a", 60), LeaderLease(redis, "b", 60)
    assert await first.refresh() and not await second.refresh()
    await first.release()
    assert await second.refresh()
    assert await shared_created(redis, 100) == 100
    assert await shared_created(redis, 200) == 100
    await SharedWeights(redis).write({"m": {"a": 7}})
    assert await SharedWeights(redis).read() == {"m": {"a": 7}}
    config = FrugalConfig.model_validate(CONFIG)
    await Fleet(config, redis, ControlPlane(config)).add_replica("m", "a", "10.0.0.2:7001")
    other = Fleet(config, redis, ControlPlane(config))
    await other.restore()
    assert [str(e) for e in other.replicas("m", "a")] == ["10.0.0.1:7001", "10.0.0.2:7001"]
    await redis.aclose()


async def test_the_group_pickers_lines_and_roster_work_on_a_cluster(client: RedisClient) -> None:
    pickers = {"m": ModelPicker(PickerConfig(), {"tp8": (GroupLine(5.0, 0.1, 0.0125), 1)})}
    await GroupLinesStore(client).write(pickers)
    assert await GroupLinesStore(client).read() == pickers
    first, second = PickerRoster(client, "a"), PickerRoster(client, "b")
    assert (await first.stamp(), await second.stamp()) == (1, 2)
    await first.leave()
    assert await second.stamp() == 1


async def test_a_dead_primary_is_survived_by_its_replica() -> None:
    cluster = RedisCluster()
    client = redis_client(cluster.url, cluster=True, bounds=BOUNDS)
    try:
        victim = cluster.primary_of(slot(KeyStore.ids_key))  # it holds every API key
        (key_id,) = key_ids_on(cluster, {victim.port}, "dies-")
        store, admission, budget = KeyStore(client, PEPPERS), Admission(client), TokenBudget(client)
        record, plaintext = await store.create("survivor", "acme")
        now = time.time()
        for n in range(2):
            assert isinstance(
                await admission.admit(request(key_id, f"r{n}", 3, 1000), now), Admitted
            )
        assert await budget.settle_many([Charge(key_id, "r0", "m", 10, 5, now)]) == [15]

        dead = cluster.kill_primary_of(slot(key_id))
        promoted = cluster.wait_promoted(slot(key_id), dead)
        assert promoted.port != dead.port

        # The client still maps the slots to the dead node: it must find the new primary.
        # A pipeline sent on a connection to the dead node gets its error per command (no
        # new slot map yet); the settlements send it again, and that try reads the new map.
        settlements = Settlements(budget)
        settlements.submit(Settlement(key_id, "r1", "m", 10, 5, now))
        assert await settlements.drain(10.0)
        assert (settlements.settled, settlements.abandoned) == (1, 0)
        assert await budget.settle_many([Charge(key_id, "r0", "m", 10, 5, now)]) == [0]
        third = await admission.admit(request(key_id, "r2", 3, 1000), now)
        assert isinstance(third, Admitted)  # the rpm window kept its two requests
        fourth = await admission.admit(request(key_id, "r3", 3, 1000), now)
        assert isinstance(fourth, Refused) and fourth.limit == "requests"
        assert (await KeyStore(client, PEPPERS).check(plaintext)).outcome is AuthOutcome.OK
        await store.revoke(record.id)
        assert (await KeyStore(client, PEPPERS).check(plaintext)).outcome is AuthOutcome.REVOKED
        rows = await ledger.read_usage(client, key_id, windows.utc_day(now))
        assert [(r.requests, r.tokens) for r in rows] == [(2, 30)]
    finally:
        await client.aclose()
        cluster.stop()
