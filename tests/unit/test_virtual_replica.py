"""The sim engine's model in virtual time (frugal.bench.virtual.replica): exact step times,
batching, queueing on the batch bound and the KV budget, and exact readings."""

from __future__ import annotations

import pytest

from control_plane.balancer.load import DecodeCounters, PrefillCounters, RequestCounters
from engine_workers.backends.sim_model import SimProfile, step_ms
from frugal.bench.virtual.replica import VirtualReplica, VirtualRequest

PROFILE = SimProfile(a_ms=5.0, b_ms=0.5, c_ms=0.01, max_batch=2, kv_budget_tokens=1000, jitter=0)


def _drive(replica: VirtualReplica, arrivals: list[VirtualRequest]) -> list[VirtualRequest]:
    """Run the replica alone: arrivals at their times, its own events between them."""
    done: list[VirtualRequest] = []
    replica.on_finish = done.append
    pending = sorted(arrivals, key=lambda r: r.arrival_s)
    now = 0.0
    while pending or not replica.idle:
        due = replica.next_event_s(now)
        if pending and (due is None or pending[0].arrival_s <= due):
            request = pending.pop(0)
            now = request.arrival_s
            replica.submit(request, now)
        else:
            assert due is not None
            now = due
            replica.on_event(now)
    return done


def _replica() -> VirtualReplica:
    return VirtualReplica(PROFILE, lambda _: None)


def test_one_request_takes_its_prefill_step_then_one_step_a_token() -> None:
    (done,) = _drive(_replica(), [VirtualRequest(0, 1.0, 100, 4)])
    first = step_ms(PROFILE, 1, 100) / 1000
    step = step_ms(PROFILE, 1, 0) / 1000
    assert done.first_token_s == pytest.approx(1.0 + first)
    assert done.finished_s == pytest.approx(1.0 + first + 3 * step)


def test_a_request_joins_the_batch_at_the_end_of_the_step_under_way() -> None:
    step_alone = step_ms(PROFILE, 1, 0) / 1000
    first_alone = step_ms(PROFILE, 1, 10) / 1000
    late = VirtualRequest(1, first_alone + 0.5 * step_alone, 10, 2)
    done = _drive(_replica(), [VirtualRequest(0, 0.0, 10, 10), late])
    early, joined = sorted(done, key=lambda r: r.index)
    boundary = first_alone + step_alone  # the step under way when it came
    assert joined.first_token_s == pytest.approx(boundary + step_ms(PROFILE, 2, 10) / 1000)
    assert early.finished_s is not None and joined.finished_s is not None
    assert joined.finished_s < early.finished_s


def test_the_batch_bound_and_the_kv_budget_make_requests_wait() -> None:
    # max_batch 2: the third waits for a place; then 600 + 600 > 1000 KV: one at a time.
    three = [VirtualRequest(i, 0.0, 10, 5) for i in range(3)]
    first, second, third = sorted(_drive(_replica(), three), key=lambda r: r.index)
    assert first.first_token_s == second.first_token_s
    assert third.first_token_s is not None and second.finished_s is not None
    assert third.first_token_s > second.finished_s
    big = [VirtualRequest(i, 0.0, 500, 100) for i in range(2)]
    one, two = sorted(_drive(_replica(), big), key=lambda r: r.index)
    assert two.first_token_s is not None and one.finished_s is not None
    assert two.first_token_s > one.finished_s


def test_readings_between_events_are_what_the_engine_counted() -> None:
    replica = _replica()
    replica.submit(VirtualRequest(0, 0.0, 0, 100), 0.0)
    replica.submit(VirtualRequest(1, 0.0, 0, 100), 0.0)
    replica.on_event(0.0)  # an idle replica takes in what came, at once
    step = step_ms(PROFILE, 2, 0) / 1000
    at = 10.5 * step
    assert replica.running_at(at) == 2
    assert replica.tokens_at(at) == 2 * 10  # ten whole steps of two sequences


def test_equal_finishing_steps_leave_together_in_index_order() -> None:
    done = _drive(_replica(), [VirtualRequest(i, 0.0, 10, 3) for i in (1, 0)])
    assert [r.index for r in done] == [0, 1]
    assert done[0].finished_s == done[1].finished_s


def test_the_decode_step_tally_leaves_out_the_prefill_step() -> None:
    replica = _replica()
    warm = replica.decode_at(0.0)  # the engine's warm-up: one sequence, before the run
    warm_s = step_ms(PROFILE, 1, 0) / 1000
    assert (warm.steps, warm.sequences) == (PROFILE.warmup_steps, PROFILE.warmup_steps) == (4, 4)
    assert warm.seconds == pytest.approx(4 * warm_s)
    for index in range(2):
        replica.submit(VirtualRequest(index, 0.0, 100, 10), 0.0)
    replica.on_event(0.0)
    prefill_s = step_ms(PROFILE, 2, 200) / 1000
    decode_s = step_ms(PROFILE, 2, 0) / 1000
    tally = replica.decode_at(prefill_s + 4.5 * decode_s)
    assert (tally.steps - 4, tally.sequences - 4) == (4, 8)
    assert tally.seconds == pytest.approx(4 * warm_s + 4 * decode_s)
    done = _drive(replica, [])
    assert len(done) == 2
    final = replica.decode_at(1e9)  # 10 tokens each: the prefill step, then 9 decode steps
    assert (final.steps - 4, final.sequences - 4) == (9, 18)
    assert final.seconds == pytest.approx(4 * warm_s + 9 * decode_s)


def test_a_replica_without_warm_up_starts_with_an_empty_tally() -> None:
    cold = VirtualReplica(PROFILE.model_copy(update={"warmup_steps": 0}), lambda _: None)
    assert cold.decode_at(0.0) == DecodeCounters(0, 0.0, 0)


def test_a_cached_prefix_skips_its_prefill() -> None:
    profile = PROFILE.model_copy(update={"prefix_block_tokens": 100, "max_batch": 8})
    replica = VirtualReplica(profile, lambda _: None)
    first = VirtualRequest(0, 0.0, 350, 2, blocks=(1, 2, 3, 4))
    (done,) = _drive(replica, [first])
    again = VirtualRequest(1, 1.0, 350, 2, blocks=(1, 2, 3, 5))
    (hit,) = _drive(replica, [again])
    assert (done.cached_tokens, hit.cached_tokens) == (0, 300)
    assert done.ttft_s == pytest.approx(step_ms(profile, 1, 350) / 1000)
    assert hit.ttft_s == pytest.approx(step_ms(profile, 1, 50) / 1000)
    assert replica.prefix_cache.hit_blocks == 3


def test_the_prefill_tally_and_request_counters_are_the_engines() -> None:
    replica = _replica()
    assert replica.prefill_at(0.0) == PrefillCounters(0, 0.0, 0, 0)
    for index in range(2):
        replica.submit(VirtualRequest(index, 0.0, 100, 10), 0.0)
    assert replica.requests == RequestCounters(0, 0, 0)
    replica.on_event(0.0)
    prefill_s = step_ms(PROFILE, 2, 200) / 1000
    assert replica.prefill_at(prefill_s / 2) == PrefillCounters(0, 0.0, 0, 0)  # under way
    tally = replica.prefill_at(prefill_s)
    assert (tally.steps, tally.sequences, tally.tokens) == (1, 2, 200)
    assert tally.seconds == pytest.approx(prefill_s)
    _drive(replica, [])
    assert replica.prefill_at(1e9) == tally  # the decode steps after it add nothing
    assert replica.requests == RequestCounters(2, 20, 200)
