"""`frugal_asyncio_tasks`: how many asyncio tasks a service's event loop holds now.

Shared I/O edge of every Python service's /metrics (control plane, safety filter, engine
workers). A task that outlives its request (a client gone, a stream cut) shows as a
count that does not come back down once the traffic has stopped: the disconnect tests
compare it before and after (tests/e2e/test_disconnect_storm.py). prometheus_client asks
for it on its own HTTP thread; `asyncio.all_tasks` takes the loop for that reason.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge


def watch_asyncio_tasks(registry: CollectorRegistry, loop: asyncio.AbstractEventLoop) -> None:
    """Add the gauge of `loop`'s live tasks to `registry`."""
    gauge = Gauge(
        "frugal_asyncio_tasks",
        "asyncio tasks not yet done on the service's event loop.",
        registry=registry,
    )
    gauge.set_function(lambda: len(asyncio.all_tasks(loop)))
