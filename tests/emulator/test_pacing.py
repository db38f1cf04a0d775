"""The emulator's pacer (emulator.pacing): how many events now, and when the next. Pure, no loop."""

from __future__ import annotations

import pytest

from upbit_fanout.emulator.pacing import FIREHOSE_BATCH, TICK, Pacer


@pytest.mark.parametrize(
    ("rate", "times", "counts"),
    [
        (10.0, [0.05, 0.1, 0.35, 0.4], [0, 1, 2, 1]),  # 0.5 saved, 1, 2.5 -> 2, 0.5 + 0.5 -> 1
        (1000.0, [0.01, 0.02, 0.025], [10, 10, 5]),  # a high rate in batches
        (10.0, [10.0], [10]),  # a long pause: one second's worth at most, not 100
        (0.5, [1.0, 2.0, 9.0, 10.0], [0, 1, 1, 0]),  # a slow rate: at most one at once
        (3.0, [0.1] * 3 + [0.4], [0, 0, 0, 1]),  # the same instant twice earns nothing
    ],
)
def test_events_at_the_rate_and_a_second_at_most(
    rate: float, times: list[float], counts: list[int]
) -> None:
    pacer = Pacer(rate, 0.0)
    assert [pacer.take(t) for t in times] == counts


@pytest.mark.parametrize(
    ("rate", "taken_at", "now", "expected"),
    [
        (10.0, None, 0.0, 0.1),  # the first event is due after 1/rate
        (10.0, None, 0.05, 0.05),
        (1000.0, None, 0.0, TICK),  # never sooner than a tick: batches, not one wake per event
        (0.5, 2.0, 2.5, 1.5),  # one taken at 2.0: the next at 4.0
        (10.0, None, 3.0, TICK),  # already due
    ],
)
def test_the_next_event_is_due_after_delay(
    rate: float, taken_at: float | None, now: float, expected: float
) -> None:
    pacer = Pacer(rate, 0.0)
    if taken_at is not None:
        assert pacer.take(taken_at) == 1
    assert pacer.delay(now) == pytest.approx(expected)
    assert pacer.take(now + pacer.delay(now)) >= 1


def test_a_restart_forgets_what_was_earned_while_idle() -> None:
    pacer = Pacer(10.0, 0.0)
    pacer.restart(100.0)  # nothing to generate until 100.0
    assert pacer.take(100.05) == 0
    assert pacer.take(100.1) == 1


def test_a_minute_of_steps_at_its_own_delays_keeps_the_rate() -> None:
    for rate in (0.5, 7.0, 200.0, 5000.0):
        pacer = Pacer(rate, 0.0)
        now, total = 0.0, 0
        while now < 60.0:
            now += pacer.delay(now)
            total += pacer.take(now)
        assert rate * 60.0 - 1 <= total <= rate * 60.0 + max(rate * TICK, 1) + 1, rate


def test_the_firehose_gives_a_batch_at_every_step_and_never_waits() -> None:
    pacer = Pacer(0.0, 0.0)
    assert pacer.firehose
    assert [pacer.take(0.0), pacer.take(0.0)] == [FIREHOSE_BATCH, FIREHOSE_BATCH]
    assert pacer.delay(0.0) == 0.0


@pytest.mark.parametrize(("rate", "tick", "batch"), [(-1.0, TICK, 1), (1.0, 0.0, 1), (1.0, 1.0, 0)])
def test_impossible_settings_are_refused(rate: float, tick: float, batch: int) -> None:
    with pytest.raises(ValueError, match="pacer"):
        Pacer(rate, 0.0, tick=tick, batch=batch)
