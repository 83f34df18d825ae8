"""grpc.health.v1 on the gRPC services, what the container probes ask (frugal.deploy.probe):
the safety filter's processes and an engine worker of the session's stack answer SERVING."""

from __future__ import annotations

import asyncio

import pytest

from frugal.deploy.probe import Unhealthy, check_grpc
from tests.helpers.stack import FrugalStack, free_port


async def test_every_safety_filter_process_and_an_engine_answer_serving(stack: FrugalStack) -> None:
    config = stack.config
    for port in config.safety_filter.ports():
        await asyncio.to_thread(check_grpc, f"127.0.0.1:{port}", "", 2.0)
    [replica, *_] = next(m for m in config.models if m.name == "sim-echo").groups[0].replicas
    await asyncio.to_thread(check_grpc, str(replica), "frugal.v1.Inference", 2.0)


async def test_a_port_nothing_serves_is_unhealthy() -> None:
    with pytest.raises(Unhealthy, match="UNAVAILABLE"):
        await asyncio.to_thread(check_grpc, f"127.0.0.1:{free_port()}", "", 1.0)
