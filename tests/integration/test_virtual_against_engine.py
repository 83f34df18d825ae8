"""The virtual-time replica against the real sim engine at low load, where the CPU is not
the limit: the same ranking of the two profiles, and step times within a stated tolerance.

Real sim engine workers (tp8 and tp2, the wall-clock routing benchmark's profiles, no
jitter, every duration x10 so that asyncio's wake-up slack is small against a step) on
loopback gRPC, one stream at a time; their own trailers give the time to the first token
and the request's time. The virtual replica predicts both from the same profile.
Sleeping can only run late, never early, so the tolerance is one-sided: measured within
[0.95, 1.5] x predicted (the median of three requests).
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from engine_workers.backends.sim_model import PROFILES, SimProfile
from engine_workers.settings import EngineSettings
from frugal import wire
from frugal.bench.virtual.replica import VirtualReplica, VirtualRequest
from frugal.v1 import inference_pb2 as pb
from tests.helpers.engine_worker import inference_stub, proto_value, serving

SCALE = 10.0
OUTPUT_TOKENS = 8
LOW, HIGH = 0.95, 1.5
MODEL = "sim-virtual-check"


def _profile(name: str) -> SimProfile:
    fixed = {"jitter": 0.0, "time_scale": SCALE, "output_tokens_min": 4096,
             "output_tokens_max": 4096}  # fmt: skip
    return PROFILES[name].model_copy(update=fixed)


def _request() -> Any:
    message = pb.ChatMessage(role="user", content=proto_value(" ".join(["word"] * 64)))
    return pb.ChatCompletionRequest(model=MODEL, messages=[message], max_tokens=OUTPUT_TOKENS)


async def _measured(profile: SimProfile) -> tuple[float, float, int]:
    """(TTFT ms, request ms, prompt tokens): medians over three streams, one at a time,
    in unscaled milliseconds."""
    settings = EngineSettings(port=0, model=MODEL, sim=profile)
    ttfts, totals, prompts = [], [], []
    async with serving(settings) as worker, inference_stub(worker.address) as stub:
        for _ in range(3):
            call = stub.StreamChatCompletion(_request())
            async for _ in call:
                pass
            trailers = dict(await call.trailing_metadata())
            ttfts.append(float(trailers[wire.ENGINE_TTFT_MS]) / SCALE)
            totals.append(float(trailers[wire.ENGINE_MS]) / SCALE)
            prompts.append(int(trailers[wire.PROMPT_TOKENS]))
    return statistics.median(ttfts), statistics.median(totals), prompts[0]


def _predicted(name: str, prompt_tokens: int) -> tuple[float, float]:
    done: list[VirtualRequest] = []
    replica = VirtualReplica(PROFILES[name], done.append)
    replica.submit(VirtualRequest(0, 0.0, prompt_tokens, OUTPUT_TOKENS), 0.0)
    now: float | None = 0.0
    while now is not None:
        replica.on_event(now)
        now = replica.next_event_s(now)
    (request,) = done
    assert request.first_token_s is not None and request.finished_s is not None
    return request.first_token_s * 1000, request.finished_s * 1000


@pytest.mark.parametrize("name", ["tp8", "tp2"])
async def test_step_times_match_the_engine_within_the_tolerance(name: str) -> None:
    ttft, total, prompt = await _measured(_profile(name))
    predicted_ttft, predicted_total = _predicted(name, prompt)
    assert LOW <= ttft / predicted_ttft <= HIGH, (ttft, predicted_ttft)
    assert LOW <= total / predicted_total <= HIGH, (total, predicted_total)


async def test_both_rank_the_profiles_alike_at_one_stream() -> None:
    measured = {name: await _measured(_profile(name)) for name in ("tp8", "tp2")}
    predicted = {name: _predicted(name, prompt)[1] for name, (_, _, prompt) in measured.items()}
    fastest = min(measured, key=lambda name: measured[name][1])
    assert fastest == min(predicted, key=predicted.__getitem__) == "tp8"
