"""Domain errors of the engine workers (core layer).

Each error carries the gRPC status code and the HTTP status it stands for; the servicer
translates them to a gRPC status in one place. Nothing below the servicer touches the gRPC
context.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class EngineError(Exception):
    """Base of every error a request can fail with; subclasses fix the status codes."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(EngineError):
    """The request is malformed or asks for something the worker does not support."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class ModelNotFoundError(EngineError):
    """The request names a model this worker does not serve."""

    code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class EngineFaultError(EngineError):
    """The engine failed while generating (e.g. an injected fault)."""

    code = grpc.StatusCode.INTERNAL
    http_status = 500


class EngineUnavailableError(EngineError):
    """The engine is not running (not started yet, or stopping)."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
