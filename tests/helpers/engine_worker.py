"""One engine worker in the test process, and a gRPC client for it (test support: a real
grpc.aio server and channel on loopback), shared by the tests of every backend."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from engine_workers.server import EngineWorker
from engine_workers.settings import EngineSettings
from frugal.v1 import inference_pb2_grpc as pb_grpc


@contextlib.asynccontextmanager
async def serving(settings: EngineSettings, grace: float = 0.5) -> AsyncIterator[EngineWorker]:
    """A started worker, stopped on exit (also when its start fails half-way)."""
    worker = EngineWorker(settings)
    try:
        await worker.start()
        yield worker
    finally:
        await worker.stop(grace=grace)


@contextlib.asynccontextmanager
async def inference_stub(address: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield pb_grpc.InferenceStub(channel)


def proto_value(python: object) -> struct_pb2.Value:
    """A JSON value as google.protobuf.Value, as the transcoder builds it from a body."""
    value = struct_pb2.Value()
    json_format.Parse(json.dumps(python), value)
    return value
