"""Unit tests of the pure accounting layer: window arithmetic, the ledger key and row layout."""

from __future__ import annotations

from datetime import date

import pytest

from frugal.accounting import ledger, windows

T0 = 60 * 28_333_334  # a Unix time on a minute boundary (2023-11-14T22:14:00Z)


def test_window_start_and_elapsed() -> None:
    assert windows.window_start(T0) == T0
    assert windows.window_start(T0 + 59.999) == T0
    assert windows.window_start(T0 + 60) == T0 + 60
    assert windows.window_start(T0 + 25, window_s=10) == T0 + 20
    assert windows.elapsed_in_window(T0 + 15.5) == pytest.approx(15.5)


def test_previous_weight_decays_linearly_over_the_window() -> None:
    assert windows.previous_weight(T0) == 1.0
    assert windows.previous_weight(T0 + 15) == pytest.approx(0.75)
    assert windows.previous_weight(T0 + 45) == pytest.approx(0.25)


def test_sliding_estimate_and_remaining() -> None:
    assert windows.sliding_estimate(previous=10, current=3, weight=0.5) == 8.0
    assert windows.remaining_hits(10, previous=10, current=3, weight=0.5) == 2
    assert windows.remaining_hits(10, previous=0, current=10, weight=0.5) == 0
    assert windows.remaining_hits(10, previous=0, current=12, weight=0.5) == 0  # never negative
    assert windows.remaining_hits(10, previous=5, current=0, weight=0.3) == 8  # 10 - 1.5


def test_seconds_until_fits_within_the_current_window() -> None:
    # limit 10, previous 10, current 4, one more hit: needs previous * w <= 5, i.e. w <= 0.5.
    wait = windows.seconds_until_fits(10, previous=10, current=4, elapsed=12.0, hits=1)
    assert wait == pytest.approx(30.0 - 12.0)
    assert windows.seconds_until_fits(10, previous=10, current=4, elapsed=45.0, hits=1) == 0.0


def test_seconds_until_fits_in_the_next_window() -> None:
    # limit 5, current 5: in the next window 5 * (1 - t/60) + 1 <= 5 from t = 12 s.
    wait = windows.seconds_until_fits(5, previous=0, current=5, elapsed=10.0, hits=1)
    assert wait == pytest.approx(50.0 + 12.0)


def test_seconds_until_fits_more_than_the_limit_waits_for_a_full_reset() -> None:
    wait = windows.seconds_until_fits(5, previous=0, current=2, elapsed=20.0, hits=6)
    assert wait == windows.seconds_until_reset(0, 2, 20.0)


def test_seconds_until_reset() -> None:
    assert windows.seconds_until_reset(previous=0, current=0, elapsed=10.0) == 0.0
    assert windows.seconds_until_reset(previous=3, current=0, elapsed=10.0) == 50.0
    assert windows.seconds_until_reset(previous=3, current=1, elapsed=10.0) == 110.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.2, "1s"),
        (12.0, "12s"),
        (12.0000000001, "12s"),
        (59.5, "1m0s"),
        (110, "1m50s"),
    ],
)
def test_format_reset(seconds: float, text: str) -> None:
    assert windows.format_reset(seconds) == text


def test_utc_day() -> None:
    assert windows.utc_day(T0) == date(2023, 11, 14)
    assert windows.utc_day(1_700_006_400) == date(2023, 11, 15)  # exactly midnight UTC


def test_usage_key_round_trips_key_ids() -> None:
    day = date(2024, 2, 29)
    for key_id in ("key_1", "team:a", "x}y"):
        key = ledger.usage_key(key_id, day)
        assert key.startswith("frugal:usage:{")
        assert ledger.key_id_from_usage_key(key, day) == key_id
    assert ledger.key_id_from_usage_key(ledger.usage_key("k", day), date(2024, 3, 1)) is None
    assert ledger.key_id_from_usage_key("frugal:usage:{}:2024-02-29", day) is None


def test_rows_from_hash_splits_fields_at_the_last_colon() -> None:
    fields: dict[bytes | str, bytes | str] = {
        b"llama3:8b:requests": b"2",
        b"llama3:8b:prompt_tokens": b"30",
        b"llama3:8b:completion_tokens": b"12",
        "gpt-x:requests": "1",
        b"junk": b"7",
        b"gpt-x:other": b"3",
    }
    rows = ledger.rows_from_hash("k", date(2024, 1, 1), fields)
    assert [
        (row.model, row.requests, row.prompt_tokens, row.completion_tokens) for row in rows
    ] == [
        ("gpt-x", 1, 0, 0),
        ("llama3:8b", 2, 30, 12),
    ]
    assert rows[1].tokens == 42
