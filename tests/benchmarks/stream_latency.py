"""Benchmark: TTFT and time between tokens of one streamed request, via Envoy vs direct gRPC.

Run: `make bench-latency` (or `.venv/bin/python -m tests.benchmarks.stream_latency`).
Starts a real stack (Envoy, control plane, safety filter, one sim worker with the tp2
profile of docs/simulator.md, jitter 0), then alternates requests through the gateway
(HTTP/1.1 + SSE, full ext_proc chain) and straight to the worker (gRPC), so both see
the same machine noise. Prints medians and the gateway's added cost; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from frugal.v1 import inference_pb2 as pb
from frugal.v1 import inference_pb2_grpc as pb_grpc
from tests.benchmarks.sse_stream import timed_chat_stream
from tests.helpers.stack import FrugalStack, replicas, stack_config

TP2 = {"a_ms": 8.4, "b_ms": 0.13, "c_ms": 0.03, "max_batch": 128, "jitter": 0.0}
MODEL = "sim-bench"
PROMPT = "Tell me a story about a frugal gateway."


@dataclass
class Samples:
    ttft_ms: list[float] = field(default_factory=list)
    tbt_ms: list[float] = field(default_factory=list)

    def add(self, start: float, arrivals: list[float]) -> None:
        self.ttft_ms.append((arrivals[0] - start) * 1000)
        self.tbt_ms += [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]


async def via_gateway(client: httpx.AsyncClient, tokens: int, into: Samples) -> None:
    timed = await timed_chat_stream(client, MODEL, PROMPT, tokens)
    into.add(timed.start, timed.arrivals)


async def direct(stub: pb_grpc.InferenceStub, tokens: int, into: Samples) -> None:
    request = pb.ChatCompletionRequest(model=MODEL, max_tokens=tokens, stream=True)
    message = request.messages.add(role="user")
    message.content.string_value = PROMPT
    arrivals: list[float] = []
    start = time.perf_counter()
    async for chunk in stub.StreamChatCompletion(request):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
    into.add(start, arrivals)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report(gateway: Samples, grpc_direct: Samples, rounds: int, tokens: int) -> str:
    rows = [
        ("TTFT p50 (ms)", _median(grpc_direct.ttft_ms), _median(gateway.ttft_ms)),
        ("TBT p50 (ms)", _median(grpc_direct.tbt_ms), _median(gateway.tbt_ms)),
        (
            "TBT p90 (ms)",
            statistics.quantiles(grpc_direct.tbt_ms, n=10)[-1],
            statistics.quantiles(gateway.tbt_ms, n=10)[-1],
        ),
    ]
    lines = [
        f"{rounds} streamed requests each way, {tokens} tokens, concurrency 1, tp2 sim profile",
        f"{'':16}{'direct gRPC':>14}{'via Envoy':>12}{'added':>10}{'ratio':>8}",
    ]
    for name, base, gw in rows:
        lines.append(f"{name:16}{base:14.3f}{gw:12.3f}{gw - base:10.3f}{gw / base:8.3f}")
    return "\n".join(lines)


async def run(rounds: int, tokens: int) -> str:
    group = {"name": "tp2", "profile": "tp2", "replicas": replicas(1)}
    models = [{"name": MODEL, "groups": [group]}]
    with tempfile.TemporaryDirectory() as directory:
        stack = FrugalStack(Path(directory), stack_config(models, {"tp2": TP2}))
        try:
            await stack.start()
            worker = stack.config.models[0].groups[0].replicas[0]
            gateway, grpc_direct = Samples(), Samples()
            async with (
                httpx.AsyncClient(
                    base_url=stack.base_url, headers=stack.auth, timeout=30
                ) as client,
                grpc.aio.insecure_channel(str(worker)) as channel,
            ):
                stub = pb_grpc.InferenceStub(channel)
                for _ in range(3):  # warm both paths (connections, pools)
                    await via_gateway(client, tokens, Samples())
                    await direct(stub, tokens, Samples())
                for _ in range(rounds):
                    await via_gateway(client, tokens, gateway)
                    await direct(stub, tokens, grpc_direct)
            return report(gateway, grpc_direct, rounds, tokens)
        finally:
            await stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    print(asyncio.run(run(args.rounds, args.tokens)))


if __name__ == "__main__":
    main()
