"""Benchmark: what the safety chain costs per request, phase by phase (the paper's Fig. 6 shape).

Run: `make bench-phases` (or `.venv/bin/python -m tests.benchmarks.chain_phases`).

Two measurements, side by side in one run, for a short prompt (64 words) and a long one
(~200 KB), with and without sensitive values:
- in-process, each step the request processor takes, timed alone over many requests
  (median microseconds): parse and validate the body (orjson, pydantic), check the key
  (the cached key store), admit (the rpm window and the token reservation: one Redis
  script, a real redis-server), check the prompt (the default policy), rewrite the body
  (the output checks the worker will run), and settle (one request's share of a batch of
  64 in one pipeline);
- a real safety filter process (`python -m safety_filter`) driven over gRPC on loopback with
  the five messages Envoy sends it for one streamed request (request headers and two body
  chunks, answered in one turn; response headers; trailers), its CPU from /proc per
  request: the difference to the steps above is the gRPC transport (grpc.aio) and the
  processor's own bookkeeping.
Engine time and the output check's hold-back are measured through the whole stack by
`frugal bench compare` (engine time as the worker reports it; hold-back as frugal minus
frugal-noredact). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from frugal import wire
from frugal.accounting.admission import Admission, AdmissionRequest
from frugal.accounting.token_budget import Charge, TokenBudget
from frugal.content_checks import DEFAULT_POLICY
from frugal.keys import KeyStore
from frugal.keys.hashing import parse_peppers_json
from safety_filter.authz.key_check import KeyCheck
from safety_filter.extproc.openai_request import parse_inference_request
from safety_filter.extproc.output_filter import output_checks
from safety_filter.extproc.prompt_check import check_prompt
from tests.helpers.redis_server import RedisServer
from tests.helpers.stack import free_port

MODEL = "sim-bench"
CHAT = "/v1/chat/completions"
WORDS = "the quick brown fox jumps over a lazy dog while engines serve tokens".split()
SENSITIVE = " mail jane.doe@example.com or call +1 415 555 0132, card 4111 1111 1111 1111 "


def prompt(size_bytes: int, sensitive: bool) -> str:
    words = [WORDS[i % len(WORDS)] for i in range(max(1, size_bytes // 5))]
    text = " ".join(words)[:size_bytes]
    if sensitive:
        middle = len(text) // 2
        text = text[:middle] + SENSITIVE + text[middle:]
    return text


def body_of(text: str) -> bytes:
    messages = [{"role": "user", "content": text}]
    return json.dumps({"model": MODEL, "messages": messages, "stream": True}).encode()


async def median_us(step: Callable[[], Awaitable[object]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def in_process_steps(redis: Redis, body: bytes, rounds: int) -> dict[str, float]:
    peppers = parse_peppers_json(json.dumps({"1": base64.b64encode(b"b" * 32).decode()}))
    store = KeyStore(redis, peppers)
    _, plaintext = await store.create("bench", "bench", rpm=10**9, tpm=10**12)
    keys = KeyCheck(store, CollectorRegistry())
    headers = {"authorization": f"Bearer {plaintext}"}
    await keys.grant(headers)
    admission, budget = Admission(redis), TokenBudget(redis)
    key_id = uuid.uuid4().hex[:12]
    checks = output_checks(DEFAULT_POLICY)

    async def parse() -> object:
        return parse_inference_request(CHAT, body)

    async def auth() -> object:
        return await keys.grant(headers)

    async def admit() -> object:
        request = AdmissionRequest(key_id, uuid.uuid4().hex, 40, 64, 4096, 10**9, 10**12)
        return await admission.admit(request)

    async def prompt_checks() -> object:
        return check_prompt(parse_inference_request(CHAT, body).body, DEFAULT_POLICY)

    async def rewrite() -> object:
        parsed = parse_inference_request(CHAT, body).body
        return orjson.dumps({**parsed, "output_checks": checks})

    async def settle_share() -> object:
        charges = [Charge(key_id, uuid.uuid4().hex, MODEL, 40, 64) for _ in range(64)]
        return await budget.settle_many(charges)

    steps = {
        "parse and validate": await median_us(parse, rounds),
        "check the key (cached)": await median_us(auth, rounds),
        "admit (rpm + tokens, 1 Redis script)": await median_us(admit, rounds),
        "prompt checks": await median_us(prompt_checks, rounds) - await median_us(parse, rounds),
        "rewrite the body": await median_us(rewrite, rounds) - await median_us(parse, rounds),
        "settle (share of a 64-batch)": await median_us(settle_share, max(1, rounds // 16)) / 64,
    }
    return steps


def header_map(pairs: list[tuple[str, str]]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]
    )


def one_request(plaintext: str, body: bytes) -> list[ext.ProcessingRequest]:
    """The messages Envoy sends the processor for one streamed request."""
    request_id = uuid.uuid4().hex
    head = [
        (":method", "POST"),
        (":path", CHAT),
        ("content-type", "application/json"),
        ("authorization", f"Bearer {plaintext}"),
        (wire.REQUEST_ID_HEADER, request_id),
    ]
    trailers = [("grpc-status", "0"), (wire.PROMPT_TOKENS, "40"), (wire.COMPLETION_TOKENS, "64")]
    return [
        ext.ProcessingRequest(request_headers=ext.HttpHeaders(headers=header_map(head))),
        ext.ProcessingRequest(request_body=ext.HttpBody(body=body)),
        ext.ProcessingRequest(request_body=ext.HttpBody(end_of_stream=True)),
        ext.ProcessingRequest(
            response_headers=ext.HttpHeaders(headers=header_map([(":status", "200")]))
        ),
        ext.ProcessingRequest(response_trailers=ext.HttpTrailers(trailers=header_map(trailers))),
    ]


async def drive(stub: ext_grpc.ExternalProcessorStub, plaintext: str, body: bytes) -> None:
    messages = one_request(plaintext, body)
    call = stub.Process()
    await call.write(messages[0])
    await call.write(messages[1])
    await call.write(messages[2])
    for _ in range(3):  # the headers' and both chunks' answers, in one turn
        await call.read()
    for message in messages[3:]:
        await call.write(message)
        await call.read()
    await call.done_writing()
    await call.read()  # the end of the stream


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def filter_process_us(redis_url: str, body: bytes, requests: int, streams: int) -> float:
    """CPU of a real safety filter process per request, over `requests` requests."""
    peppers_json = json.dumps({"1": base64.b64encode(b"c" * 32).decode()})
    port = free_port()
    env = {
        **os.environ,
        "FRUGAL_SAFETY_PORT": str(port),
        "FRUGAL_SAFETY_MODELS": json.dumps([MODEL]),
        "FRUGAL_SAFETY_MAX_BODY_BYTES": str(4 << 20),
        "FRUGAL_REDIS_URL": redis_url,
        "FRUGAL_KEY_PEPPERS": peppers_json,
        "GRPC_ENABLE_FORK_SUPPORT": "false",
    }
    process = subprocess.Popen([sys.executable, "-m", "safety_filter"], env=env)
    try:
        redis = Redis.from_url(redis_url)
        store = KeyStore(redis, parse_peppers_json(peppers_json))
        _, plaintext = await store.create("bench", "bench", rpm=10**9, tpm=10**12)
        await redis.aclose()
        options = [("grpc.max_receive_message_length", 16 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            stub = ext_grpc.ExternalProcessorStub(channel)
            for _ in range(20):  # warm: caches, scripts, connections
                await drive(stub, plaintext, body)
            before = cpu_s(process.pid)
            per_stream = requests // streams

            async def client() -> None:
                for _ in range(per_stream):
                    await drive(stub, plaintext, body)

            await asyncio.gather(*(client() for _ in range(streams)))
            await asyncio.sleep(0.5)  # the last settlements
            return (cpu_s(process.pid) - before) / (per_stream * streams) * 1e6
    finally:
        process.terminate()
        process.wait(10)


async def main(args: argparse.Namespace) -> None:
    server = RedisServer()
    redis = Redis.from_url(server.url)
    try:
        print(f"machine: {os.cpu_count()} CPUs; one safety filter process; {args.streams} "
              f"concurrent streams into it; real redis-server on loopback")  # fmt: skip
        for label, size, sensitive in (
            ("64 words", 320, False),
            ("64 words, sensitive", 320, True),
            ("200 KB", 200_000, False),
            ("200 KB, sensitive", 200_000, True),
        ):
            body = body_of(prompt(size, sensitive))
            rounds = args.rounds if size < 10_000 else max(20, args.rounds // 20)
            steps = await in_process_steps(redis, body, rounds)
            requests = args.requests if size < 10_000 else max(40, args.requests // 10)
            total = await filter_process_us(server.url, body, requests, args.streams)
            print(f"\n{label} ({len(body):,} bytes): us per request (steps: median wall time,")
            print("  admit and settle with their Redis round trip; the process: its CPU)")
            for name, micros in steps.items():
                print(f"  {name:42s} {micros:10.1f}")
            named = sum(steps.values())
            print(f"  {'sum of the steps':42s} {named:10.1f}")
            print(f"  {'safety filter process, all phases (/proc)':42s} {total:10.1f}")
            share = 100 * (1 - named / total) if total else 0.0
            print(f"  {'  of which gRPC transport and the rest':42s} {total - named:10.1f}"
                  f"  ({share:.0f} %)")  # fmt: skip
    finally:
        await redis.aclose()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="timings per in-process step")
    parser.add_argument("--requests", type=int, default=2000, help="through the real process")
    parser.add_argument("--streams", type=int, default=32, help="concurrent ext_proc streams")
    with tempfile.TemporaryDirectory():
        asyncio.run(main(parser.parse_args()))
