"""The leader lease's decisions, from tables (collector/leadership.py), and its wiring on a real
Redis: a standby that takes over, a leader whose lease was taken, a lease that lapsed.

The failover drills between real processes (SIGKILL, SIGSTOP) are tests/collector/test_fencing.py
and tests/collector/test_service_leader.py; these pin each decision on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import until
from upbit_fanout.collector.leadership import (
    Leadership,
    Takeover,
    after_refusal,
    holder_refreshed_at,
    next_move,
    standby_wait,
    takeover,
)
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.collector.status import State, Status
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import leader_value, parse_leader

LEASE_MS = 3_000
NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("is_leader", "recovered_at", "now", "expected"),
    [
        (True, None, 100.0, "refresh"),
        (True, 99.0, 100.0, "refresh"),  # a leader refreshes right after an outage too
        (False, None, 100.0, "take"),
        (False, 90.0, 100.0, "take"),  # the outage ended more than a lease ago
        (False, 97.0, 100.0, "wait"),  # within one lease of it: the former leader's turn
        (False, 97.0, 100.01, "take"),
    ],
)
def test_next_move(is_leader: bool, recovered_at: float | None, now: float, expected: str) -> None:
    assert next_move(is_leader=is_leader, recovered_at=recovered_at, now=now, lease=3.0) == (
        expected
    )


@pytest.mark.parametrize(
    ("pttl", "expected"),
    [
        (3_000, 1.0),  # a fresh lease: ask again in a third of it
        (500, 0.505),  # just after the holder's lease would run out
        (0, 0.005),
        (-1, 1.0),  # no expiry (set by hand): the third
        (-2, 1.0),  # gone meanwhile
    ],
)
def test_standby_wait(pttl: int, expected: float) -> None:
    assert standby_wait(pttl, LEASE_MS) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pttl", "expected"),
    [
        (3_000, NOW),  # refreshed just now
        (1_000, NOW - 2_000),
        (5_000, NOW),  # a longer lease than ours: no later than now
        (-1, NOW),
    ],
)
def test_holder_refreshed_at(pttl: int, expected: int) -> None:
    assert holder_refreshed_at(pttl, LEASE_MS, NOW) == expected


VALUE = leader_value(42, "me").encode()


@pytest.mark.parametrize(
    ("previous", "last_holder", "seeded", "expected"),
    [
        # the first term ever (the token counter was started): nothing was missed
        (None, None, True, Takeover(42, NOW)),
        # an earlier term whose holder this collector never saw
        (None, None, False, Takeover(42, NOW, gap=True, backfill_since=NOW - LEASE_MS)),
        # the holder it stood by for, since that holder's last refresh
        (
            None,
            (leader_value(41, "old").encode(), NOW - 2_500),
            False,
            Takeover(42, NOW, "old", NOW - 2_500, gap=True, backfill_since=NOW - 2_500),
        ),
        # reclaimed from its own killed predecessor: one lease back
        (
            leader_value(41, "me").encode(),
            None,
            False,
            Takeover(42, NOW, "me", NOW - LEASE_MS, gap=True, backfill_since=NOW - LEASE_MS),
        ),
    ],
)
def test_takeover(
    previous: bytes | None, last_holder: tuple[bytes, int] | None, seeded: bool, expected: Takeover
) -> None:
    got = takeover(
        VALUE,
        previous=previous,
        last_holder=last_holder,
        seeded=seeded,
        now=NOW,
        lease_ms=LEASE_MS,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        (None, "retake"),  # nobody: the lease lapsed
        (VALUE, "ours"),  # a WATCH aborted by this collector's own refresh
        (leader_value(43, "other").encode(), "step_down"),
        (leader_value(43, "me").encode(), "step_down"),  # a twin with the same id
    ],
)
def test_after_refusal(holder: bytes | None, expected: str) -> None:
    assert after_refusal(holder, VALUE) == expected


class _Terms:
    """What the collector is told: elected (with the takeover) and deposed."""

    def __init__(self) -> None:
        self.elected: list[Takeover] = []
        self.deposed = 0

    def on_elected(self, term: Takeover) -> None:
        self.elected.append(term)

    async def on_deposed(self) -> None:
        self.deposed += 1


def _leadership(
    r: aioredis.Redis, keys: Keys, collector_id: str, terms: _Terms, **options: Any
) -> tuple[Leadership, Status, Outbox[Outgoing]]:
    status = Status(r, keys, collector_id=collector_id, version="test")
    outbox: Outbox[Outgoing] = Outbox(100)
    leadership = Leadership(
        redis=r,
        keys=keys,
        collector_id=collector_id,
        lease=options.pop("lease", 3.0),
        reclaim=options.pop("reclaim", False),
        status=status,
        outbox=outbox,
        publisher=Publisher(r, keys),
        on_elected=terms.on_elected,
        on_deposed=terms.on_deposed,
    )
    return leadership, status, outbox


async def _run(leadership: Leadership) -> asyncio.Task[None]:
    return asyncio.create_task(leadership.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_standby_takes_the_free_lease_and_fences_with_its_value(
    r: aioredis.Redis, keys: Keys
) -> None:
    terms = _Terms()
    leadership, status, _ = _leadership(r, keys, "one", terms)
    assert not leadership.is_leader
    assert leadership.value is None
    task = await _run(leadership)
    try:
        await until(lambda: leadership.is_leader)
        stored = leadership.value
        assert stored is not None
        assert await r.get(keys.leader) == stored
        assert parse_leader(stored)[1] == "one"
        assert status.fence == (keys.leader, stored)  # every status write checks it
        assert len(terms.elected) == 1
        assert terms.elected[0].token == parse_leader(stored)[0]
        await leadership.release()
        assert await r.get(keys.leader) is None
    finally:
        await _stop(task)


async def test_a_leader_whose_lease_was_taken_steps_down_and_drops_its_queue(
    r: aioredis.Redis, keys: Keys
) -> None:
    terms = _Terms()
    leadership, status, outbox = _leadership(r, keys, "one", terms)
    task = await _run(leadership)
    try:
        await until(lambda: leadership.is_leader)
        await _stop(task)  # from here on the test reports what the loop would find
        expected = leadership.value
        other = leader_value(10**15, "two")
        await r.set(keys.leader, other, px=30_000)
        event = Outgoing(topic="ticker:KRW-BTC", payload=b"{}", private=False, type="ticker")
        outbox.put_many([event] * 3)
        assert not await leadership.lost(expected, other.encode(), in_hand=2)
        assert not leadership.is_leader
        assert leadership.value is None
        assert terms.deposed == 1
        assert len(outbox) == 0
        assert leadership.fenced_events == 3
        assert status.state == State.STANDBY
        assert not status.active  # nothing more is written, not even a status
        # a second report of the same loss is already dealt with
        assert not await leadership.lost(expected, other.encode())
        assert terms.deposed == 1
    finally:
        await _stop(task)


async def test_a_lapsed_lease_is_taken_back_with_a_new_token(r: aioredis.Redis, keys: Keys) -> None:
    terms = _Terms()
    leadership, status, _ = _leadership(r, keys, "one", terms)
    task = await _run(leadership)
    try:
        await until(lambda: leadership.is_leader)
        await _stop(task)  # from here on the test reports what the loop would find
        old = leadership.value
        assert old is not None
        await r.delete(keys.leader)  # lapsed while paused, or Redis restarted empty
        assert not await leadership.lost(old, None)
        assert leadership.is_leader
        assert terms.deposed == 0
        new = leadership.value
        assert new is not None
        assert new != old
        assert await r.get(keys.leader) == new
        token_old, token_new = parse_leader(old)[0], parse_leader(new)[0]
        assert token_old is not None
        assert token_new is not None
        assert token_new > token_old
        assert status.fence == (keys.leader, new)
    finally:
        await _stop(task)
