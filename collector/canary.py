"""The canary: proof that events really reach Redis subscribers, not just that the collector runs.

While it leads, the collector puts a small canary item into its outbox every ``interval`` seconds.
The item is an ordinary :class:`~collector.routing.Outgoing` (topic :data:`CANARY_TOPIC`), so it
goes through exactly the path of every event: the outbox, the publisher's batch, the Lua script
(or pipeline), ``PUBLISH P:canary``. The collector listens on ``P:canary`` with its own pub/sub
connection and, when its canary comes back, records in ``P:status``:

- ``canary_ok_at`` (ms): when delivery last succeeded; ``canary_latency_ms``: outbox to
  subscriber, in milliseconds; ``canary_sent_at`` (ms): the latest canary put in the outbox;
- counters ``canaries_sent`` / ``canaries_received``; ``canary_error``: why the listener cannot
  subscribe (an ACL channel rule, say), empty while it can.

``upbit-fanout check`` fails when ``canary_ok_at`` is older than its ``--max-delivery-age``: an
ACL that refuses the event channels, a full or wedged outbox, a publisher that keeps failing, a
listener that cannot subscribe all show the same way a consumer would see them: nothing arrives.
The bookkeeping (:class:`CanaryBook`) is pure and takes the time as an argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from upbit_fanout.collector._log import log
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.collector.status import LogLimiter, Status, now_ms
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.connection import (
    REDIS_FAILURES,
    channel_node,
    cluster_of,
    node_client,
    refresh_slots,
)
from upbit_fanout.subscriptions.keys import CANARY_TOPIC, Keys

__all__ = ["CANARY_INTERVAL", "Canary", "CanaryBook"]


CANARY_INTERVAL: Final = 2.0
"""Seconds between canaries (the default of ``Collector(canary_interval=...)``)."""

_MAX_PENDING: Final = 64


class CanaryBook:
    """Which canaries are out and what came back (pure: times are passed in)."""

    def __init__(self, collector_id: str) -> None:
        self.collector_id = collector_id
        self.seq = 0
        self.pending: OrderedDict[int, float] = OrderedDict()  # seq -> monotonic send time
        self.sent = 0
        self.received = 0

    def next_payload(self, mono: float, wall_ms: int) -> bytes:
        """The payload of the next canary (and remember when it left)."""
        self.seq += 1
        self.sent += 1
        self.pending[self.seq] = mono
        while len(self.pending) > _MAX_PENDING:
            self.pending.popitem(last=False)
        return orjson.dumps({"collector_id": self.collector_id, "seq": self.seq, "at": wall_ms})

    def arrived(self, payload: bytes, mono: float) -> float | None:
        """The latency in seconds if ``payload`` is one of our pending canaries, else None."""
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or body.get("collector_id") != self.collector_id:
            return None  # another collector's (a previous leader's) canary
        seq = body.get("seq")
        if not isinstance(seq, int):
            return None
        sent = self.pending.pop(seq, None)
        if sent is None:
            return None
        for older in [s for s in self.pending if s < seq]:  # lost on the way (a refused batch)
            del self.pending[older]
        self.received += 1
        return max(0.0, mono - sent)


class Canary:
    """Sends canaries through the outbox and listens for them (one task: :meth:`run`)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        status: Status,
        outbox: Outbox[Outgoing],
        collector_id: str,
        interval: float = CANARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("canary interval must be positive")
        self._redis = redis
        self._keys = keys
        self._status = status
        self._outbox = outbox
        self.interval = interval
        self._clock = clock
        self.book = CanaryBook(collector_id)
        self.last_latency: float | None = None
        self._logs = LogLimiter(30.0)

    async def run(self) -> None:
        """Listen on ``P:canary`` and send a canary every interval, until cancelled."""
        sender = asyncio.create_task(self._send_loop(), name="collector-canary-sender")
        try:
            await self._listen_loop()
        finally:
            sender.cancel()
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.gather(sender, return_exceptions=True)
            except TimeoutError:  # pragma: no cover - a plain sleep loop stops at once
                log.error("canary sender did not stop")

    async def _send_loop(self) -> None:
        while True:
            payload = self.book.next_payload(self._clock(), now_ms())
            self._outbox.put_many(
                [Outgoing(topic=CANARY_TOPIC, payload=payload, type=CANARY_TOPIC)]
            )
            self._status.set(canary_sent_at=now_ms())
            self._status.set_counter("canaries_sent", self.book.sent)
            await asyncio.sleep(self.interval)

    async def _listen_loop(self) -> None:
        delays = backoff(0.2, 5.0)
        channel = self._keys.canary
        sharded = cluster_of(self._redis) is not None
        while True:
            # In a Redis Cluster the canary is SPUBLISHed like every event: listen with
            # SSUBSCRIBE on the node that owns its slot, as a consumer does.
            node: Redis | None = None
            if sharded:
                node = node_client(self._redis, *channel_node(self._redis, channel))
            pubsub = (node or self._redis).pubsub()
            try:
                if node is not None:
                    await pubsub.ssubscribe(channel)
                else:
                    await pubsub.subscribe(channel)
                while True:
                    message = await pubsub.get_message(timeout=self.interval * 2)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind in ("subscribe", "ssubscribe"):
                        self._status.set(canary_error="")
                        delays = backoff(0.2, 5.0)
                        continue
                    if kind == "sunsubscribe":  # the slot moved to another node
                        await refresh_slots(self._redis)
                        break
                    if kind not in ("message", "smessage"):
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes | str):
                        raw = data.encode() if isinstance(data, str) else data
                        self._arrived(raw)
            except REDIS_FAILURES as exc:
                text = f"cannot listen on {channel}: {type(exc).__name__}: {exc}"
                self._status.set(canary_error=text)
                allowed, held = self._logs.allow("listen")
                if allowed:
                    log.warning("canary: %s (%d similar held back)", text, held)
                if sharded:
                    with contextlib.suppress(RedisError, OSError):
                        await refresh_slots(self._redis)
            finally:
                try:
                    async with asyncio.timeout(2.0):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                        if node is not None:
                            await node.aclose()
                except (*REDIS_FAILURES, TimeoutError):
                    pass
            await asyncio.sleep(next(delays))

    def _arrived(self, payload: bytes) -> None:
        latency = self.book.arrived(payload, self._clock())
        if latency is None:
            return
        self.last_latency = latency
        self._status.set(canary_ok_at=now_ms(), canary_latency_ms=f"{latency * 1000:.1f}")
        self._status.set_counter("canaries_received", self.book.received)
        self._status.observe("canary_latency", latency)
