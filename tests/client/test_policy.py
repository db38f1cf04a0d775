"""The client's connection policy (client._policy): liveness and outages, from tables. Pure."""

from __future__ import annotations

import pytest

from upbit_fanout.client._policy import FIRST_DELAY, GiveUp, Liveness, Outage, Retry


@pytest.mark.parametrize(
    ("intervals", "verdicts"),
    [
        # (replies received so far, reader busy) at each interval
        ([(1, False), (2, False)], ["alive", "alive"]),  # traffic proves the link
        ([(0, False), (0, False)], ["ping", "dead"]),  # silence, a PING, no PONG: cut
        ([(0, False), (1, False), (1, False), (2, False)], ["ping", "alive", "ping", "alive"]),
        ([(0, True), (0, True), (0, False)], ["alive", "alive", "ping"]),  # a slow consumer
        ([(0, False), (0, True), (0, False), (0, False)], ["ping", "alive", "ping", "dead"]),
    ],
)
def test_liveness_pings_a_quiet_link_and_declares_it_dead_only_without_a_reply(
    intervals: list[tuple[int, bool]], verdicts: list[str]
) -> None:
    liveness = Liveness(0)
    assert [liveness.tick(count, busy=busy) for count, busy in intervals] == verdicts


def outage(max_outage: float | None = None, max_delay: float = 5.0) -> Outage:
    return Outage(100.0, max_outage=max_outage, max_delay=max_delay, rng=lambda: 0.5)


def test_retries_back_off_to_the_cap_and_report_the_first_and_every_tenth() -> None:
    policy = outage(max_delay=1.0)
    steps = [policy.attempt_failed(100.0 + i) for i in range(21)]
    assert all(isinstance(step, Retry) for step in steps)
    delays = [step.delay for step in steps if isinstance(step, Retry)]
    assert delays[:6] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4, 0.5])  # rng 0.5 x bound
    assert max(delays) == pytest.approx(0.5)  # half the 1 s cap
    reported = [step.attempt for step in steps if isinstance(step, Retry) and step.report]
    assert reported == [1, 10, 20]


@pytest.mark.parametrize(
    ("max_outage", "failed_at", "expected"),
    [
        (None, 1e6, "retry"),  # no limit: retry forever
        (30.0, 129.0, "retry"),
        (30.0, 130.0, "retry"),  # exactly the limit: one more try
        (30.0, 130.5, GiveUp(30.5)),
    ],
)
def test_an_outage_longer_than_max_outage_gives_up(
    max_outage: float | None, failed_at: float, expected: GiveUp | str
) -> None:
    step = outage(max_outage).attempt_failed(failed_at)
    if expected == "retry":
        assert isinstance(step, Retry)
    else:
        assert step == expected


def test_a_new_loss_starts_a_new_outage_and_backoff() -> None:
    policy = outage(max_outage=30.0)
    for i in range(5):
        policy.attempt_failed(101.0 + i)
    policy.lost(500.0)  # connected again meanwhile, then lost again
    step = policy.attempt_failed(520.0)  # 20 s into the new outage, not 420
    assert step == Retry(FIRST_DELAY * 0.5, 1, True)
    assert policy.recovery_failed() == pytest.approx(FIRST_DELAY)  # the backoff goes on
