"""`frugal bench load` against the real stack: closed loop, open loop, streamed and unary."""

from __future__ import annotations

import argparse

import httpx
import pytest

from frugal.bench.driver import BenchRequest
from frugal.bench.http_driver import HttpDriver, Target
from frugal.cli import bench
from frugal.cli.bench_load import run
from tests.helpers.stack import FrugalStack

MODEL = "sim-mixtral"


async def _unlimited_key(stack: FrugalStack) -> str:
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        created = await admin.post("/admin/v1/keys", json={"name": "bench", "tenant": "t"})
        created.raise_for_status()
        return str(created.json()["key"])


@pytest.fixture(scope="module")
async def key(stack: FrugalStack) -> str:
    return await _unlimited_key(stack)


def _args(stack: FrugalStack, key: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    common = ["--url", stack.base_url, "--model", MODEL, "--key", key, "--max-tokens", "8"]
    return parser.parse_args(["bench", "load", *common, *argv])


async def test_a_closed_loop_of_streams_measures_every_metric(stack: FrugalStack, key: str) -> None:
    summary = await run(_args(stack, key, "--concurrency", "4", "--requests", "12"))
    assert (summary.requests, summary.errors, summary.timeouts) == (12, 0, 0)
    assert summary.tokens == 12 * 8
    for value in (summary.ttft_p50_ms, summary.tbt_p50_ms, summary.e2e_p99_ms):
        assert value is not None and value > 0
    # The engine's own time came back through the gateway, and is less than end to end.
    assert summary.engine_ms_p50 is not None and summary.gateway_ms_p50 is not None
    assert summary.e2e_p50_ms is not None and 0 < summary.engine_ms_p50 < summary.e2e_p50_ms


async def test_unary_requests_carry_the_engine_time_in_a_header(
    stack: FrugalStack, key: str
) -> None:
    summary = await run(_args(stack, key, "--unary", "--concurrency", "2", "--requests", "4"))
    assert (summary.requests, summary.errors) == (4, 0)
    assert summary.ttft_p50_ms is None  # no first token to time without a stream
    assert summary.engine_ms_p50 is not None and summary.engine_ms_p50 > 0


@pytest.mark.parametrize("arrivals", ["poisson", "gamma"])
async def test_open_loop_arrivals_send_every_request(
    stack: FrugalStack, key: str, arrivals: str
) -> None:
    argv = ("--arrivals", arrivals, "--rate", "40", "--requests", "10")
    summary = await run(_args(stack, key, *argv))
    assert (summary.requests, summary.errors) == (10, 0)


async def test_refused_and_failed_requests_are_counted_as_errors(stack: FrugalStack) -> None:
    refused = await run(_args(stack, "sk-frugal-not-a-key", "--requests", "3"))
    assert refused.errors == 3
    target = Target(stack.base_url, stack.auth, "sim-faulty")
    async with HttpDriver(target, 1) as driver:
        sample = await driver.send(BenchRequest("fail after three tokens", 16, 1))
    assert not sample.ok  # the stream ended with an error event, not [DONE]
