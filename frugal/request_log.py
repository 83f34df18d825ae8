"""The id of the request being served, on every log line of the services that serve it.

Edge support shared by the safety filter and the engine workers. Envoy gives each
request an `x-request-id` and forwards it (to ext_authz as the request's id, to
ext_proc as a header, to the engine as gRPC metadata); each service binds it in
the task that serves the call (grpc.aio runs every RPC in a task of its own, so
the binding never leaks into another call), and `configure_logging`'s filter
stamps it on each record as `request_id`.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

NO_REQUEST = "-"
REQUEST_ID: ContextVar[str] = ContextVar("frugal_request_id", default=NO_REQUEST)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def bind_request_id(request_id: str) -> None:
    """Every later log line of the current task carries `request_id`."""
    REQUEST_ID.set(request_id or NO_REQUEST)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to each record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: int | str) -> None:
    """Root logging of a service process (its `__main__` only), request id on every line."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
