"""The soak's /proc readings: a process's connections to one port are told apart."""

from __future__ import annotations

import os
import socket

from frugal.bench.process_tree import reading, tcp_sockets_on


def test_connections_to_a_port_are_counted_apart_from_other_descriptors() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        before = reading(os.getpid(), tcp_sockets_on(port))
        assert before is not None
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            after = reading(os.getpid(), tcp_sockets_on(port))
        finally:
            for sock in clients + accepted:
                sock.close()
    assert after is not None
    # Both ends live in this process: 3 connecting and 3 accepted sockets, plus the
    # listening one, which has the port too.
    assert after.redis_connections - before.redis_connections == 6
    assert after.open_fds - before.open_fds == 6
    assert after.other_fds == before.other_fds
