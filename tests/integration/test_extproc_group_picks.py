"""The request processor picks a model's replica group, and its count of what it sent each
group returns to zero however the request ends (safety_filter/extproc/group_tally.py).

Integration layer: RequestProcessor driven phase by phase with real ext_proc messages, over
the session's `redis_server` (keys and admission), as in test_extproc_processor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from frugal import wire
from frugal.group_picker import GroupLine, ModelPicker, PickerConfig
from safety_filter.errors import ApiError
from safety_filter.extproc.group_tally import GroupTally
from safety_filter.extproc.metrics import ExtProcMetrics
from safety_filter.extproc.processor import RequestProcessor
from tests.helpers.redis_server import RedisServer
from tests.integration.test_extproc_harness import (
    Gateway,
    chat,
    engine_usage_headers,
    only,
    open_gateway,
    response_headers,
    sample,
    send_request,
    trailers,
    usage_trailers,
)

MODEL = "sim-echo"
TP8 = GroupLine(a_ms=5.0, b_ms=0.10, c_ms=0.0125)
TP2 = GroupLine(a_ms=8.4, b_ms=0.13, c_ms=0.03)
LONG = "word " * 8000  # 40,000 characters: about 10,000 tokens by the gateway's estimate


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    async with open_gateway(redis_server) as opened:
        yield opened


@dataclasses.dataclass
class Picking:
    """Processors sharing one tally with lines for MODEL, as one safety filter process's."""

    gateway: Gateway
    tally: GroupTally = dataclasses.field(default_factory=GroupTally)
    metrics: ExtProcMetrics = dataclasses.field(default_factory=ExtProcMetrics)

    def __post_init__(self) -> None:
        lines = {"tp8": (TP8, 1), "tp2": (TP2, 4)}
        self.tally.set_pickers({MODEL: ModelPicker(PickerConfig(), lines)})
        self.metrics.watch_groups(self.tally)
        self._context = dataclasses.replace(
            self.gateway.context(metrics=self.metrics, max_body_bytes=1 << 20), groups=self.tally
        )

    def processor(self) -> RequestProcessor:
        return RequestProcessor(self._context)

    def picks(self, group: str) -> float:
        return sample(self.metrics, "frugal_group_picks_total", model_name=MODEL, group=group)

    def in_flight(self, group: str) -> float:
        return sample(self.metrics, "frugal_group_picker_in_flight", model_name=MODEL, group=group)


async def test_the_picked_group_is_set_counted_and_gone_when_the_stream_ends(
    gateway: Gateway,
) -> None:
    picking = Picking(gateway)
    long = picking.processor()
    answer = await send_request(long, gateway.caller, chat(MODEL, LONG, stream=True))
    assert answer.set_headers[wire.GROUP_HEADER] == "tp8"
    assert picking.picks("tp8") == 1
    in_flight, awaiting = picking.tally.counts()[(MODEL, "tp8")]
    assert in_flight == 1 and awaiting > 9000
    # While that prompt waits for its first token on tp8, a short one goes to tp2.
    short = picking.processor()
    answer = await send_request(short, gateway.caller, chat(MODEL, "Hi"))
    assert answer.set_headers[wire.GROUP_HEADER] == "tp2"
    await short.close()
    only(await long.on_response_headers(response_headers(200)))
    assert picking.tally.counts() == {(MODEL, "tp8"): (1, 0)}  # its first text came
    assert picking.in_flight("tp8") == 1
    only(await long.on_response_trailers(usage_trailers(3, 4)))
    await long.close()
    assert picking.tally.counts() == {}
    assert picking.in_flight("tp8") == 0
    assert (picking.picks("tp8"), picking.picks("tp2")) == (1, 1)


@pytest.mark.parametrize("status", [200, 503])
async def test_a_unary_answer_or_an_error_ends_its_count(gateway: Gateway, status: int) -> None:
    picking = Picking(gateway)
    processor = picking.processor()
    await send_request(processor, gateway.caller, chat(MODEL))
    assert picking.tally.counts()
    reported = engine_usage_headers(3, 4) if status == 200 else ()
    only(await processor.on_response_headers(response_headers(status, *reported)))
    assert picking.tally.counts() == {}  # the response ended at its headers
    only(await processor.on_response_trailers(trailers(grpc_status="0")))
    await processor.close()
    assert picking.tally.counts() == {}


async def test_a_stream_that_fails_in_its_trailers_ends_its_count(gateway: Gateway) -> None:
    picking = Picking(gateway)
    processor = picking.processor()
    await send_request(processor, gateway.caller, chat(MODEL, stream=True))
    only(await processor.on_response_headers(response_headers(200)))
    only(await processor.on_response_trailers(trailers(grpc_status="14")))
    assert picking.tally.counts() == {}
    await processor.close()
    assert picking.tally.counts() == {}


@pytest.mark.parametrize("delivered", [True, False])
async def test_a_client_gone_or_an_envoy_that_gave_up_ends_its_count(
    gateway: Gateway, delivered: bool
) -> None:
    picking = Picking(gateway)
    processor = picking.processor()
    await send_request(processor, gateway.caller, chat(MODEL, stream=True), delivered=delivered)
    assert picking.tally.counts()
    await processor.close()  # the stream ended without a response
    assert picking.tally.counts() == {}


async def test_a_refused_request_is_never_counted(gateway: Gateway) -> None:
    picking = Picking(gateway)
    malformed = picking.processor()
    with pytest.raises(ApiError):
        await send_request(malformed, gateway.caller, b"{not json")
    await malformed.close()
    capped = await gateway.new_key(rpm=1)
    admitted = picking.processor()
    await send_request(admitted, capped, chat(MODEL))
    over = picking.processor()
    with pytest.raises(ApiError) as refused:
        await send_request(over, capped, chat(MODEL))
    assert refused.value.status == 429
    await over.close()
    assert picking.tally.counts() == {(MODEL, "tp8"): (1, 1)}  # the admitted one alone
    await admitted.close()
    assert picking.tally.counts() == {}
    assert picking.picks("tp8") + picking.picks("tp2") == 1


async def test_a_model_without_lines_goes_by_the_weights(gateway: Gateway) -> None:
    picking = Picking(gateway)
    picking.tally.set_pickers({})
    processor = picking.processor()
    answer = await send_request(processor, gateway.caller, chat(MODEL))
    assert wire.GROUP_HEADER not in answer.set_headers
    await processor.close()
