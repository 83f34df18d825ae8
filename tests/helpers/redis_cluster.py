"""A real local Redis Cluster for tests: six redis-server processes, three primaries with a
replica each, joined by `redis-cli --cluster create` (no persistence, own temp dir).

Layer: test support (process I/O). Stops only the processes it started, by their pids;
`kill_primary_of` SIGKILLs one primary and `wait_promoted` waits for its replica to take over.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from frugal.bench.ports import is_free

NODES = 6
# Short, so a dead primary is failed over within seconds (Redis' default is 15 s).
NODE_TIMEOUT_MS = 1000
# A node's cluster bus listens on its port + 10000 (Redis Cluster specification).
BUS_OFFSET = 10000
# Nodes and their buses below Linux's ephemeral ports (32768 up, ip_local_port_range), where
# the other tests' free ports (tests/helpers/stack.py) are taken from.
NODE_PORTS = range(20000, 32768 - BUS_OFFSET)


def _free_ports(count: int) -> list[int]:
    """Ports free for a node and for its cluster bus (port + 10000)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.choice(NODE_PORTS)
        if port not in ports and is_free(port) and is_free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (Debian: redis-server, redis-tools)")
    return found


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES: a node's id, port, role and whether it has failed."""

    node_id: str
    port: int
    primary: bool
    failed: bool
    slots: tuple[tuple[int, int], ...]

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_nodes(nodes: dict[str, dict[str, Any]]) -> list[ClusterNode]:
    """redis-py's parsed CLUSTER NODES (address -> fields) as nodes."""
    return [
        ClusterNode(
            fields["node_id"],
            int(address.rsplit(":", 1)[1]),
            "master" in fields["flags"].split(","),
            "fail" in fields["flags"].split(","),
            tuple((int(first), int(last)) for first, last in fields["slots"]),
        )
        for address, fields in nodes.items()
    ]


class RedisCluster:
    """Six nodes on free loopback ports; `url` names the first (any node will do)."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        server, cli = _binary("redis-server"), _binary("redis-cli")
        self.ports = _free_ports(NODES)
        self._dir = Path(tempfile.mkdtemp(prefix="frugal-redis-cluster-"))
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            node_dir = self._dir / str(port)
            node_dir.mkdir()
            self._processes[port] = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            for port in self.ports:
                self._wait_ping(port, timeout_s)
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )  # fmt: skip
            self._wait_formed(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _live_ports(self) -> list[int]:
        return [port for port, process in self._processes.items() if process.poll() is None]

    def _wait_ping(self, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
                    client.ping()
                    return
            except redis.ConnectionError:
                if self._processes[port].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)

    def nodes(self) -> list[ClusterNode]:
        """CLUSTER NODES, as a surviving node sees it."""
        with redis.Redis(port=self._live_ports()[0]) as client:
            return parse_nodes(client.cluster("NODES"))

    def _state_ok(self, port: int) -> bool:
        with redis.Redis(port=port) as client:
            return bool(client.cluster("INFO")["cluster_state"] == "ok")

    def _wait_formed(self, timeout_s: float) -> None:
        """Every node says the cluster is ok and sees three primaries and three replicas,
        each replica in sync with its primary."""
        self._wait(
            lambda: (
                all(self._state_ok(p) for p in self.ports)
                and sum(n.primary for n in self.nodes()) == NODES // 2
                and len(self.nodes()) == NODES
                and all(self.replicated(n.port) for n in self.nodes() if n.primary)
            ),
            timeout_s,
            "the cluster did not form",
        )

    def replicated(self, primary_port: int) -> bool:
        """Whether the primary's replica has all it wrote (replication is asynchronous)."""
        with redis.Redis(port=primary_port) as client:
            info = client.info("replication")
        replicas = [value for name, value in info.items() if name.startswith("slave")]
        offset = info["master_repl_offset"]
        return bool(replicas) and all(
            r["state"] == "online" and r["offset"] == offset for r in replicas
        )

    def primary_of(self, slot: int) -> ClusterNode:
        return next(n for n in self.nodes() if n.primary and not n.failed and n.serves(slot))

    def kill_primary_of(self, slot: int, timeout_s: float = 10.0) -> ClusterNode:
        """SIGKILL the primary serving `slot`, once its replica has everything it wrote."""
        victim = self.primary_of(slot)
        self._wait(lambda: self.replicated(victim.port), timeout_s, "the replica lags")
        process = self._processes[victim.port]
        process.send_signal(signal.SIGKILL)
        process.wait()
        return victim

    def wait_promoted(self, slot: int, dead: ClusterNode, timeout_s: float = 30.0) -> ClusterNode:
        """Wait until a live node serves `slot` as primary and the cluster is ok again."""
        self._wait(
            lambda: (
                self.primary_of(slot).port != dead.port
                and all(self._state_ok(p) for p in self._live_ports())
            ),
            timeout_s,
            "no replica was promoted",
        )
        return self.primary_of(slot)

    @staticmethod
    def _wait(done: Callable[[], bool], timeout_s: float, failure: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if done():
                    return
            except (redis.RedisError, StopIteration):
                pass  # a node mid-failover, or no node serves the slot yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{failure} within {timeout_s} s")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
