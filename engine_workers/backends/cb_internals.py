"""What Frugal reads from transformers' `ContinuousBatchingManager` beyond its public API
(backend layer; transformers==5.23.0).

The manager has no public load figures and never drops the result handler of a cancelled
request (it drops one only when its request finishes, and a cancelled request never does).
Both need its internal attributes; they are read here and nowhere else, and
tests/integration/test_transformers_backend.py fails if a transformers upgrade moves them.
Reads come from the event loop's thread while the manager's thread mutates: `len()` of a
dict or a queue size is one atomic read under the GIL, and a figure a step old is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ManagerLoad:
    running: int  # sequences in the batch (prefilling or decoding)
    waiting: int  # admitted by the scheduler but not yet in the batch, plus the input queue
    kv_cache_usage: float  # 0..1


def read_load(manager: Any) -> ManagerLoad:
    queued = manager.input_queue.qsize()
    processor = manager.batch_processor
    if processor is None:  # before the first step builds it
        return ManagerLoad(running=0, waiting=queued, kv_cache_usage=0.0)
    scheduler = processor.scheduler
    free = float(processor.cache.compute_free_capacity(relative=True))
    return ManagerLoad(
        running=len(scheduler.active_requests),
        waiting=len(scheduler.waiting_requests) + queued,
        kv_cache_usage=min(1.0, max(0.0, 1.0 - free)),
    )


def drop_result_handler(manager: Any, request_id: str) -> None:
    router = manager.output_router
    with router._lock:
        router.result_handlers.pop(request_id, None)


def result_handler_count(manager: Any) -> int:
    """Handlers still registered (a leak check for tests)."""
    router = manager.output_router
    with router._lock:
        return len(router.result_handlers)
