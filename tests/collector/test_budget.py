"""The send budget (collector.budget): sliding windows, slack, dynamic slow-down. Pure, no loop."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upbit_fanout.collector.budget import RateBudget

UPBIT = [(5, 1.0), (100, 60.0)]


def drain(budget: RateBudget, start: float, count: int) -> list[float]:
    """Send ``count`` messages as early as the budget allows; return their times."""
    now = start
    times = []
    for _ in range(count):
        while (wait := budget.delay(now)) > 0:
            now += wait
        budget.record(now)
        times.append(now)
    return times


@pytest.mark.parametrize(
    ("sent_at", "now", "expected_delay"),
    [
        ([], 0.0, 0.0),  # nothing sent: go
        ([0.0, 0.1, 0.2, 0.3], 0.4, 0.0),  # 4 in the last second: a 5th is fine
        ([0.0, 0.1, 0.2, 0.3, 0.4], 0.5, 0.5),  # 5 in the last second: wait for 0.0 to leave
        ([0.0, 0.1, 0.2, 0.3, 0.4], 1.0, 0.0),  # exactly one second later: 0.0 is out
        ([0.0, 0.1, 0.2, 0.3, 0.4], 1.2, 0.0),
    ],
)
def test_per_second_window(sent_at: list[float], now: float, expected_delay: float) -> None:
    budget = RateBudget(UPBIT)
    for t in sent_at:
        budget.record(t)
    assert budget.delay(now) == pytest.approx(expected_delay)


def test_a_burst_is_spread_to_five_per_second_and_a_hundred_per_minute() -> None:
    budget = RateBudget(UPBIT)
    times = drain(budget, 0.0, 110)
    assert times[:5] == [0.0] * 5  # the first five go at once
    assert times[5] == pytest.approx(1.0)
    # The 101st must wait for the first to leave the minute window.
    assert times[100] >= 60.0
    assert budget.count_within(times[-1], 60.0) <= 100


def test_slack_widens_every_window() -> None:
    budget = RateBudget([(1, 1.0)], slack=0.05)
    budget.record(10.0)
    assert budget.delay(10.5) == pytest.approx(0.55)
    assert budget.delay(11.05) == 0.0


def test_a_rate_limit_error_halves_the_limits_and_they_recover_step_by_step() -> None:
    budget = RateBudget(UPBIT, recovery=30.0)
    assert budget.limits(0.0) == ((5, 1.0), (100, 60.0))
    budget.penalize(0.0)
    assert budget.limits(1.0) == ((2, 1.0), (50, 60.0))
    budget.penalize(10.0)  # a second error while slowed down: halve again
    assert budget.limits(10.0) == ((1, 1.0), (25, 60.0))
    assert budget.limits(39.9) == ((1, 1.0), (25, 60.0))
    assert budget.limits(40.0) == ((2, 1.0), (50, 60.0))  # one step back after 30 s
    assert budget.limits(70.0) == ((5, 1.0), (100, 60.0))  # fully recovered


def test_while_slowed_down_fewer_messages_pass() -> None:
    budget = RateBudget(UPBIT)
    budget.penalize(0.0)
    times = drain(budget, 0.0, 6)
    assert times == pytest.approx([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])


def test_penalties_stop_at_max_level() -> None:
    budget = RateBudget([(8, 1.0)], max_level=2)
    for _ in range(10):
        budget.penalize(0.0)
    assert budget.limits(0.0) == ((2, 1.0),)


@pytest.mark.parametrize(
    "kwargs",
    [{"limits": [(0, 1.0)]}, {"limits": [(5, 0.0)]}, {"limits": UPBIT, "slack": -1.0}],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        RateBudget(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    per_second=st.integers(1, 6),
    per_minute=st.integers(1, 40),
    slack=st.sampled_from([0.0, 0.05]),
    gaps=st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=1, max_size=120),
    penalties=st.sets(st.integers(0, 119), max_size=5),
)
def test_never_more_than_n_sends_in_any_window(
    per_second: int, per_minute: int, slack: float, gaps: list[float], penalties: set[int]
) -> None:
    """A sender that waits ``delay()`` before each send never exceeds a limit in ANY window,
    whatever the request times and however often the server complained."""
    budget = RateBudget([(per_second, 1.0), (per_minute, 60.0)], slack=slack, recovery=5.0)
    now = 0.0
    sent: list[float] = []
    for index, gap in enumerate(gaps):
        now += gap  # the next time something wants to be sent
        if index in penalties:
            budget.penalize(now)
        while (wait := budget.delay(now)) > 0:  # as the sender does: sleep, look again
            now += wait
        budget.record(now)
        sent.append(now)
    for i, start in enumerate(sent):
        in_second = [t for t in sent[i:] if t < start + 1.0 + slack]
        in_minute = [t for t in sent[i:] if t < start + 60.0 + slack]
        assert len(in_second) <= per_second
        assert len(in_minute) <= per_minute


def test_an_optional_event_keeps_a_slot_free_for_a_necessary_one() -> None:
    budget = RateBudget([(5, 1.0), (100, 60.0)])
    for t in (0.0, 0.1, 0.2):
        budget.record(t)
    assert budget.delay(0.3, reserve=1) == 0.0  # 3 sent: a 4th leaves one free
    budget.record(0.3)
    assert budget.delay(0.4) == 0.0  # the 5th may still go
    assert budget.delay(0.4, reserve=1) == pytest.approx(0.6)  # not an optional one
    budget.penalize(0.5)  # halved twice would be 1: nothing optional fits at all
    budget.penalize(0.5)
    assert budget.delay(0.5, reserve=1) == math.inf


def test_a_window_edge_is_the_same_float_for_forgetting_and_waiting() -> None:
    """Found by Hypothesis: ``now - horizon`` and ``t + seconds + slack`` rounded differently,
    so an event was forgotten one ulp before ``delay`` would have let the next one go, and a
    third event entered a 60.05 s window of a limit of 2."""
    budget = RateBudget([(1, 1.0), (2, 60.0)], slack=0.05, recovery=5.0)
    now, sent = 0.0, []
    for index, gap in enumerate([0.0, 0.0, 1.2359881533834165, 0.0, 0.0, 0.0, 1.2359881533834165]):
        now += gap
        if index == 0:
            budget.penalize(now)
        while (wait := budget.delay(now)) > 0:
            now += wait
        budget.record(now)
        sent.append(now)
    for i, start in enumerate(sent):
        assert len([t for t in sent[i:] if t < start + 60.0 + 0.05]) <= 2
