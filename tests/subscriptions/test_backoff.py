"""Reconnect delays (subscriptions.backoff): capped exponential bounds with full jitter. Pure."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.subscriptions.backoff import backoff, ceiling


def test_full_jitter_scales_a_doubling_bound_up_to_the_cap() -> None:
    delays = backoff(0.5, 4.0, rng=lambda: 1.0 - 1e-12)
    first = list(itertools.islice(delays, 7))
    assert first == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0])


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [
        (0.0, [0.0, 0.0, 0.0]),  # full jitter may retry at once (the connect limit still holds)
        (0.5, [0.25, 0.5, 1.0]),
    ],
)
def test_delay_is_the_random_fraction_of_the_bound(jitter: float, expected: list[float]) -> None:
    assert list(itertools.islice(backoff(0.5, 30.0, rng=lambda: jitter), 3)) == expected


@pytest.mark.parametrize(
    ("attempt", "bound"), [(0, 0.5), (1, 1.0), (5, 16.0), (6, 30.0), (1000, 30.0)]
)
def test_ceiling(attempt: int, bound: float) -> None:
    assert ceiling(attempt, initial=0.5, maximum=30.0) == bound


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="backoff"):
        next(backoff(0.0, 1.0))
    with pytest.raises(ValueError, match="backoff"):
        next(backoff(2.0, 1.0))


@given(
    initial=st.floats(0.001, 10.0),
    cap_factor=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**32),
    n=st.integers(1, 200),
)
def test_every_delay_is_between_zero_and_the_cap(
    initial: float, cap_factor: float, seed: int, n: int
) -> None:
    maximum = initial * cap_factor
    rng = random.Random(seed)
    for attempt, delay in enumerate(itertools.islice(backoff(initial, maximum, rng=rng.random), n)):
        assert 0.0 <= delay <= maximum
        assert delay <= ceiling(attempt, initial=initial, maximum=maximum) + 1e-9
