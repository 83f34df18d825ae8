"""The request processor's count of what it sent each group, and its pick from it
(safety_filter/extproc/group_tally.py)."""

from __future__ import annotations

import pytest

from frugal.group_picker import GroupLine, ModelPicker, PickerConfig
from safety_filter.extproc.group_tally import GroupTally

TP8 = GroupLine(a_ms=5.0, b_ms=0.10, c_ms=0.0125)
TP2 = GroupLine(a_ms=8.4, b_ms=0.13, c_ms=0.03)
PICKER = ModelPicker(PickerConfig(), {"tp8": (TP8, 1), "tp2": (TP2, 4)})


def _tally(views: int = 1) -> GroupTally:
    tally = GroupTally(views)
    tally.set_pickers({"m": PICKER})
    return tally


def test_a_model_without_lines_is_not_picked_for() -> None:
    assert GroupTally().pick("m", 64) is None
    assert _tally().pick("other", 64) is None


def test_a_pick_counts_until_its_first_token_and_its_end() -> None:
    tally = _tally()
    ticket = tally.pick("m", 2000)
    assert ticket is not None and ticket.group == "tp8"
    assert tally.counts() == {("m", "tp8"): (1, 2000)}
    ticket.first_token()
    assert tally.counts() == {("m", "tp8"): (1, 0)}
    ticket.release()
    assert tally.counts() == {}


def test_each_step_counts_once_whatever_calls_it_again() -> None:
    tally = _tally()
    first, second = tally.pick("m", 100), tally.pick("m", 300)
    assert first is not None and second is not None
    first.release()  # ended before its first token (an error, a client gone)
    first.release()
    first.first_token()
    assert tally.counts() == {("m", "tp8"): (1, 300)}
    second.first_token()
    second.release()
    assert tally.counts() == {}


def test_a_short_prompt_goes_past_the_long_prefill_this_process_sent() -> None:
    tally = _tally()
    long = tally.pick("m", 8000)
    short = tally.pick("m", 64)
    assert long is not None and short is not None
    assert (long.group, short.group) == ("tp8", "tp2")
    long.first_token()  # its prefill is done: tp8 is the faster again
    again = tally.pick("m", 64)
    assert again is not None and again.group == "tp8"


def test_two_processes_each_count_their_own_share_twice() -> None:
    # 1,000 tokens queued on tp8 leave it the cheaper for a short prompt; 2,000 do not.
    alone, shared = _tally(views=1), _tally(views=2)
    for tally in (alone, shared):
        assert (ticket := tally.pick("m", 1000)) is not None and ticket.group == "tp8"
    picked_alone, picked_shared = alone.pick("m", 64), shared.pick("m", 64)
    assert picked_alone is not None and picked_alone.group == "tp8"
    assert picked_shared is not None and picked_shared.group == "tp2"
    assert shared.counts()[("m", "tp8")] == (1, 1000)  # its own counts, unscaled


def test_lines_withdrawn_stop_the_picks_and_open_tickets_still_release() -> None:
    tally = _tally()
    ticket = tally.pick("m", 64)
    assert ticket is not None
    tally.set_pickers({})
    assert tally.pick("m", 64) is None
    ticket.release()
    assert tally.counts() == {}


def test_a_group_without_serving_replicas_is_not_picked() -> None:
    tally = GroupTally()
    tally.set_pickers({"m": ModelPicker(PickerConfig(), {"tp8": (TP8, 0), "tp2": (TP2, 4)})})
    assert (ticket := tally.pick("m", 64)) is not None and ticket.group == "tp2"
    tally.set_pickers({"m": ModelPicker(PickerConfig(), {"tp8": (TP8, 0)})})
    assert tally.pick("m", 64) is None


def test_views_count_this_process() -> None:
    with pytest.raises(ValueError):
        GroupTally(0)
