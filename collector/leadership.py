"""The collector's leader lease, ``P:leader``, and its fence (docs/collector.md, "Leadership").

With a lease (``Collector(leader_lease=...)``) only the holder of ``P:leader`` runs the upstream
connections and writes to Redis; another collector on the same Redis and prefix stands by.
:class:`Leadership` is that one fact for one collector: whether it leads, the value it wrote into
``P:leader`` (``"{token} {collector_id}"``, :mod:`subscriptions.lease`), and what happens when
that changes.

A term, from start to end:

- **Standby.** The ``leader`` task (:meth:`Leadership.run`) asks for the lease
  (``TAKE_SCRIPT``: ``SET PX`` only when it is free, with a new fencing token from
  ``INCR P:leader:token``) just after the holder's lease would expire unless refreshed, at most
  every third of the lease (:func:`standby_wait`). A configured collector id lets the first
  attempt of a process reclaim a lease still held under that id (its killed predecessor).
- **Takeover** (:meth:`Leadership.take_over`). The value is installed as the **fence** of the
  publisher and the status writer: every publish and every status write first checks that
  ``P:leader`` still holds exactly it (on a Redis Cluster the publisher copies it into every
  node's ``P:fence:{N}`` before its first write). Nothing queued before is kept; the new leader
  announces the failover window as a ``gap`` (:func:`takeover`), then a ``leader`` notice, and
  hands over to the collector (``on_elected``), which writes its union, starts the upstreams and
  the leader-only tasks (canary, snapshots, back-fill, the private recorder).
- **Refresh**, every third of the lease, only while ``P:leader`` holds this collector's value.
- **A refused write or refresh** (:meth:`Leadership.lost`, :func:`after_refusal`): another value
  in ``P:leader`` means another collector took over: **step down** at once (stop writing, let the
  collector stop the leader-only tasks through ``on_deposed``, drop what was queued, stand by).
  Nobody there means the lease lapsed (this collector was paused, SIGSTOPped, or cut off past its
  lease and no standby took it, or Redis restarted empty): take it back with a new token, keep
  the upstream sockets, drop what was queued under the old token.

This is what protects against a stale leader: a collector paused past its lease that wakes up
after a standby took over finds its fence refused on its first write and publishes nothing, even
with the same collector id (the token differs).

The decisions are pure functions of their inputs, time passed in (:func:`next_move`,
:func:`standby_wait`, :func:`holder_refreshed_at`, :func:`takeover`, :func:`after_refusal`);
:class:`Leadership` performs them against Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from upbit_fanout.collector._log import log
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.collector.status import State, Status, now_ms
from upbit_fanout.subscriptions.connection import REDIS_FAILURES
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import (
    REFRESH_SCRIPT,
    RELEASE_SCRIPT,
    TAKE_SCRIPT,
    lease_ms,
    parse_leader,
)

__all__ = [
    "Leadership",
    "Move",
    "Refusal",
    "Takeover",
    "after_refusal",
    "holder_refreshed_at",
    "next_move",
    "standby_wait",
    "takeover",
]


POLL_MARGIN = 0.005
"""Seconds after the holder's lease would expire at which a standby asks again."""

Move = Literal["refresh", "take", "wait"]
Refusal = Literal["retake", "ours", "step_down"]


# -- the decisions (pure) -------------------------------------------------------------------------
def next_move(*, is_leader: bool, recovered_at: float | None, now: float, lease: float) -> Move:
    """What the leader loop does now: a leader refreshes its lease; a standby tries to take it,
    except for one lease after Redis came back from an outage (``recovered_at``, same clock as
    ``now``), which is the former leader's chance to take back its own."""
    if is_leader:
        return "refresh"
    if recovered_at is None or now - recovered_at > lease:
        return "take"
    return "wait"


def standby_wait(pttl_ms: int, lease_ms: int) -> float:
    """Seconds a standby waits before it asks again, the holder's lease having ``pttl_ms`` left:
    just after that lease would expire if not refreshed, and at most a third of the lease (a
    negative PTTL, a lease without expiry, waits the third)."""
    interval = lease_ms / 3000
    if pttl_ms < 0:
        return interval
    return min(interval, pttl_ms / 1000 + POLL_MARGIN)


def holder_refreshed_at(pttl_ms: int, lease_ms: int, now: int) -> int:
    """Epoch ms of the holder's last refresh, told by its lease's remaining ``pttl_ms`` (now, when
    the lease has no expiry): the start of the window a takeover would announce as lost."""
    if pttl_ms < 0:
        return now
    return now - max(0, lease_ms - pttl_ms)


@dataclass(frozen=True, slots=True)
class Takeover:
    """What a takeover announces: who led before and since when events are missing."""

    token: int | None
    """This term's fencing token."""
    until: int
    """Epoch ms of the takeover."""
    previous_id: str | None = None
    """The collector that led before, when known."""
    since: int | None = None
    """Epoch ms from which events are missing (the previous leader's last known refresh)."""
    gap: bool = False
    """Announce a failover ``gap``: a previous leader is known, or the token counter shows an
    earlier term whose holder is gone."""
    backfill_since: int | None = None
    """From when the new leader back-fills its trade topics (None: there was no earlier term)."""


def takeover(
    value: bytes,
    *,
    previous: bytes | None,
    last_holder: tuple[bytes, int] | None,
    seeded: bool,
    now: int,
    lease_ms: int,
) -> Takeover:
    """The takeover that wrote ``value`` into ``P:leader`` at ``now`` (epoch ms).

    ``previous`` is the value the take script replaced (only when this collector reclaimed the
    lease of a dead process of its own id: the window is then one lease long); otherwise
    ``last_holder`` is the holder this collector last saw while standing by, with its last
    refresh. ``seeded``: the token counter was (re)started, so no earlier term is known.
    """
    token, _ = parse_leader(value)
    if previous is not None:
        since = now - lease_ms
        return Takeover(
            token, now, parse_leader(previous)[1], since, gap=True, backfill_since=since
        )
    if last_holder is not None:
        holder, since = last_holder
        return Takeover(token, now, parse_leader(holder)[1], since, gap=True, backfill_since=since)
    if not seeded:  # the token counter shows an earlier term, its holder already gone
        return Takeover(token, now, gap=True, backfill_since=now - lease_ms)
    return Takeover(token, now)


def after_refusal(holder: bytes | None, expected: bytes) -> Refusal:
    """A write or refresh was refused for the lease and ``P:leader`` holds ``holder`` (None:
    nobody): take it back, carry on (it is still ``expected``), or step down."""
    if holder is None:
        return "retake"
    if holder == expected:
        return "ours"
    return "step_down"


# -- the lease against Redis ----------------------------------------------------------------------
class Leadership:
    """One collector's leader lease: takes, refreshes, loses and releases ``P:leader``.

    Without a lease (``lease=None``) the collector always leads and nothing here touches Redis.
    ``on_elected(takeover)`` is called (synchronously, in the same step as the fence is set) when
    this collector became the leader; ``on_deposed()`` is awaited when it stepped down, before
    the queue is dropped: the collector starts and stops its leader-only tasks there.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        collector_id: str,
        lease: float | None,
        reclaim: bool,
        status: Status,
        outbox: Outbox[Outgoing],
        publisher: Publisher,
        on_elected: Callable[[Takeover], None],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self.lease = lease
        self.lease_ms = lease_ms(lease) if lease is not None else None
        self.collector_id = collector_id
        self.is_leader = lease is None
        """True while this collector leads (always without a lease)."""
        self.value: bytes | None = None
        """What this collector wrote into ``P:leader`` (None: not leading under a lease)."""
        self.fenced_events = 0
        """Events dropped because the lease was lost (``fenced_events``, part of
        ``dropped_events``)."""
        self._redis = redis
        self._keys = keys
        self._reclaim = reclaim  # a configured id may reclaim its own lease, first attempt only
        self._status = status
        self._outbox = outbox
        self._publisher = publisher
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._last_holder: tuple[bytes, int] | None = None  # (value, last refresh, epoch ms)
        self._lock = asyncio.Lock()
        self._check = asyncio.Event()

    def check_soon(self) -> None:
        """A write was refused for the lease: let the leader loop look at once."""
        self._check.set()

    def dropped(self, count: int) -> None:
        """``count`` events were not published because the lease was lost."""
        self.fenced_events += count

    def show_role(self) -> None:
        """Write ``role`` and ``leader_since`` into ``P:status``; let only a leader write it."""
        self._status.active = self.is_leader
        self._status.set(
            role="leader" if self.is_leader else "standby",
            leader_since=now_ms() if self.is_leader else "",
        )

    async def run(self) -> None:
        """The ``leader`` task: refresh while leading, else ask for the lease when it is due."""
        assert self.lease is not None
        assert self.lease_ms is not None
        interval = self.lease / 3
        health = self._status.health
        while True:
            wait = interval
            try:
                move = next_move(
                    is_leader=self.is_leader,
                    recovered_at=health.recovered_at,
                    now=time.monotonic(),
                    lease=self.lease,
                )
                if move == "refresh":
                    await self._refresh()
                elif move == "take":
                    wait = await self._try_take(reclaim=self._reclaim)
                    self._reclaim = False  # only the first answered attempt of this process
                health.succeeded("leader")
            except REDIS_FAILURES as exc:
                # Keep the current role: without Redis nobody else can take over either.
                health.failed("leader", exc)
            self._check.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._check.wait()

    async def _take_script(self, *, reclaim: bool) -> list[Any]:
        """``TAKE_SCRIPT``'s reply: ``[1, value, previous or '', seeded]`` or
        ``[0, holder, holder's PTTL]``."""
        assert self.lease_ms is not None
        reply: list[Any] = await self._redis.eval(
            TAKE_SCRIPT, 2, self._keys.leader, self._keys.leader_token, self.collector_id,
            self.lease_ms, "1" if reclaim else "0",
        )  # fmt: skip
        return reply

    async def _try_take(self, *, reclaim: bool) -> float:
        """One attempt to take ``P:leader``; return how long to wait before the next one."""
        assert self.lease_ms is not None
        async with self._lock:
            reply = await self._take_script(reclaim=reclaim)
            if reply[0] == 1:
                self.take_over(reply[1], reply[2] or None, seeded=reply[3] == 1, now=now_ms())
                return self.lease_ms / 3000
        holder, pttl = reply[1], int(reply[2])
        if self._last_holder is None or self._last_holder[0] != holder:
            log.info(
                "collector %s standing by: %s is held by %s",
                self.collector_id,
                self._keys.leader,
                parse_leader(holder)[1],
            )
        self._last_holder = (holder, holder_refreshed_at(pttl, self.lease_ms, now_ms()))
        return standby_wait(pttl, self.lease_ms)

    def take_over(self, value: bytes, previous: bytes | None, *, seeded: bool, now: int) -> None:
        """This collector wrote ``value`` into ``P:leader``: fence every write with it, announce
        the failover, and hand over to the collector (``on_elected``)."""
        assert self.lease_ms is not None
        term = takeover(
            value,
            previous=previous,
            last_holder=self._last_holder,
            seeded=seeded,
            now=now,
            lease_ms=self.lease_ms,
        )
        log.info(
            "collector %s is now the leader (%s, fencing token %s)",
            self.collector_id,
            self._keys.leader,
            term.token,
        )
        self._last_holder = None
        self._outbox.discard()  # nothing of an earlier term (there should be nothing)
        self._fence(value)
        self.is_leader = True
        self._status.resync()  # this collector's view replaces the previous leader's
        self.show_role()
        if term.gap:
            who = (
                f"collector {term.previous_id} stopped leading"
                if term.previous_id is not None
                else "an earlier collector had stopped leading"
            )
            details: dict[str, object] = {}
            if term.previous_id is not None:
                details = {"previous_leader": term.previous_id, "since": term.since}
            self._status.notice(
                "gap",
                connection="all",
                reason=f"failover: {who} and {self.collector_id} took over; events in between "
                "are missing",
                **details,
                until=term.until,
            )
        self._status.notice("leader", collector_id=self.collector_id, token=term.token)
        self._on_elected(term)

    def _fence(self, value: bytes) -> None:
        self.value = value
        self._publisher.fence = (self._keys.leader.encode(), value)
        self._status.fence = (self._keys.leader, value)

    async def _refresh(self) -> None:
        expected = self.value
        if expected is None:
            return
        assert self.lease_ms is not None
        reply = await self._redis.eval(
            REFRESH_SCRIPT, 1, self._keys.leader, expected, self.lease_ms
        )
        if reply != 1:
            await self.lost(expected, reply or None)

    async def lost(self, expected: bytes | None, holder: bytes | None, in_hand: int = 0) -> bool:
        """A write or refresh found ``P:leader`` not holding ``expected`` (``holder`` instead,
        None when nobody or not known): take it back if nobody holds it, else step down.
        ``in_hand``: events the caller holds and will drop unless this returns True.

        True only when the lease is still ``expected`` after all (nothing changed)."""
        async with self._lock:
            if not self.is_leader or expected is None or self.value != expected:
                return False  # already dealt with
            verdict = after_refusal(holder, expected)
            if verdict == "retake":
                reply = await self._take_script(reclaim=False)
                if reply[0] == 1:
                    self._lapsed(reply[1], in_hand)
                    return False
                holder = reply[1]
                verdict = after_refusal(holder, expected)
            if verdict == "ours":
                return True  # still ours (a WATCH aborted by this collector's own refresh)
            await self._step_down(holder, in_hand)
            return False

    def _lapsed(self, value: bytes, in_hand: int) -> None:
        """Nobody held the lease (it lapsed while this collector was paused or cut off, or Redis
        restarted empty) and this collector took it back: the upstreams keep running, but what
        was queued under the old token is dropped."""
        dropped = self._outbox.discard()
        self.fenced_events += dropped
        self._fence(value)
        token, _ = parse_leader(value)
        log.warning(
            "collector %s: its leader lease had lapsed (paused, cut off, or Redis restarted); "
            "took it back with fencing token %s, dropping %d queued events",
            self.collector_id,
            token,
            dropped + in_hand,
        )
        self._status.notice(
            "gap",
            connection="all",
            reason="the collector's leader lease lapsed; events queued meanwhile were dropped",
            dropped=dropped + in_hand,
        )
        self._status.notice("leader", collector_id=self.collector_id, token=token)

    async def _step_down(self, holder: bytes | None, in_hand: int = 0) -> None:
        self.is_leader = False
        self._status.active = False  # first: nothing more is written, not even a status
        self.value = None  # the fences keep the old value: every later write is refused
        _, holder_id = parse_leader(holder) if holder is not None else (None, "nobody")
        if holder is not None:
            self._last_holder = (holder, now_ms())
        self.show_role()
        await self._on_deposed()
        dropped = self._outbox.discard()
        self.fenced_events += dropped
        if holder_id == self.collector_id:
            log.error(
                "collector %s lost %s to another process with the SAME collector id; give "
                "every collector its own UPBIT_FANOUT_COLLECTOR_ID. Standing by",
                self.collector_id,
                self._keys.leader,
            )
        else:
            log.warning(
                "collector %s lost %s to %s; standing by (%d queued events dropped)",
                self.collector_id,
                self._keys.leader,
                holder_id,
                dropped + in_hand,
            )
        self._status.set_state(State.STANDBY)

    async def release(self) -> None:
        """Give ``P:leader`` back (a clean stop), only if it still holds this collector's value."""
        if self.is_leader and self.value is not None:
            await self._redis.eval(RELEASE_SCRIPT, 1, self._keys.leader, self.value)
