"""The pure parts of health: the canary's bookkeeping, the latency histogram, the event rate,
and ``last_error`` clearing once its cause recovered."""

from __future__ import annotations

from collections import deque

import fakeredis
import orjson
import pytest

from upbit_fanout.collector.canary import CanaryBook
from upbit_fanout.collector.status import Histogram, Status, events_rate
from upbit_fanout.subscriptions.keys import Keys


def test_a_canary_comes_back_with_its_latency_and_only_ours_count() -> None:
    book = CanaryBook("me")
    first = book.next_payload(10.0, 1_000)
    second = book.next_payload(12.0, 3_000)
    assert orjson.loads(second) == {"collector_id": "me", "seq": 2, "at": 3_000}
    other = orjson.dumps({"collector_id": "previous-leader", "seq": 2, "at": 0})
    assert book.arrived(other, 12.5) is None  # another collector's canary
    assert book.arrived(b"not json", 12.5) is None
    assert book.arrived(second, 12.25) == pytest.approx(0.25)
    assert book.arrived(first, 13.0) is None  # older than one that came back: counted lost
    assert book.arrived(second, 13.0) is None  # a duplicate
    assert (book.sent, book.received) == (2, 1)


def test_pending_canaries_are_bounded() -> None:
    book = CanaryBook("me")
    for seq in range(1000):
        book.next_payload(float(seq), seq)
    assert len(book.pending) <= 64


def test_histogram_buckets_are_cumulative_with_an_inf_bucket() -> None:
    histogram = Histogram((0.01, 0.1, 1.0))
    for value in (0.005, 0.05, 0.05, 0.5, 5.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.01, 1), (0.1, 3), (1.0, 4), (float("inf"), 5)]
    assert histogram.sum == pytest.approx(5.605)


@pytest.mark.parametrize(
    ("samples", "now", "total", "rate"),
    [
        ([], 100.0, 50, 0.0),  # the first sample: no span yet
        ([(90.0, 0)], 100.0, 50, 5.0),
        ([(0.0, 0), (30.0, 300), (50.0, 500)], 100.0, 1000, 10.0),  # older than 60 s dropped
    ],
)
def test_events_rate_over_the_last_minute(
    samples: list[tuple[float, int]], now: float, total: int, rate: float
) -> None:
    window = deque(samples)
    assert events_rate(window, now, total) == pytest.approx(rate)
    # the oldest kept sample is the last one at or before the window's start (the rate's base)
    assert len(window) <= 2 or window[1][0] > now - 60


def test_last_error_has_its_time_and_is_cleared_by_its_own_source_only() -> None:
    status = Status(fakeredis.FakeAsyncRedis(), Keys("t"), collector_id="c", version="0")
    status.set(last_error="public upstream: connection lost")
    fields = status.snapshot()
    assert fields["last_error_at"].isdigit()
    status.recovered("private upstream")  # not what failed: unchanged
    assert status.snapshot()["last_error"] == "public upstream: connection lost"
    status.recovered("public upstream")
    fields = status.snapshot()
    assert fields["last_error"] == ""
    assert fields["last_error_at"] == ""
    assert fields["previous_error"] == "public upstream: connection lost"
    assert fields["previous_error_at"].isdigit()
