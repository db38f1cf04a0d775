"""Trade back-fill after an upstream gap: the trades the socket missed, from REST, in order.

When the public socket comes back after a loss, :class:`collector.upstream.Upstream` announces a
``gap`` and calls :meth:`Backfiller.gap` with the topics that were live before and after it. For
each trade topic among them the back-filler pages Upbit's ``GET /v1/trades/ticks`` backwards
(newest first, ``cursor`` = the oldest ``sequential_id`` of the previous page;
docs/upbit-protocol.md §13.2, §13.5) until it reaches the **anchor**, the last trade the router
published before the socket was replaced (:attr:`collector.routing.Router.trade_anchors`). The
trades newer than the anchor are published on the topic's channel oldest first, as ordinary trade
events with ``stream_type`` ``BACKFILL`` (collector/quotation.py maps REST's fields), through the
same outbox and fenced publisher as live events, without touching the last value (``last=False``:
they are older than it). The router's duplicate-trade filter (:meth:`Router.claim_trades`) is shared
with the live stream, so a trade the new socket already delivered is not repeated, and a
back-filled trade the socket delivers later is dropped there. Then a ``backfill`` notice on
``P:notices`` says, per topic, how many trades were filled and whether the hole is closed
(docs/contract.md, "Back-fill after a gap").

Bounds: at most ``max_trades`` trades per topic and gap (pages of up to 500); a hole that is
longer (the anchor not reached), a topic with no anchor (no trade before the gap; the pages then
stop at the gap's start), or a REST failure are said in the notice (``complete: false`` and a
``reason``). Requests are paced per Upbit's rate-limit group (:class:`QuotationClient`). Gaps that
arrive while a back-fill runs are merged: per topic the oldest anchor wins. Only the leader runs
this task.

After a takeover (:meth:`Backfiller.takeover`, a failover gap) the new leader has seen no trade
yet: once its socket is subscribed, each trade topic's anchor is the previous leader's last
trade, read from ``P:last:{topic}`` (if it is older than the takeover; otherwise the pages stop
at the gap's start). This leader's own first trade of a topic overwrites that value, and it may
be published before the hole is filled (the socket's trades flow at once, the hole waits its
turn): so the publisher calls :meth:`Backfiller.before_publish` with every batch during the
takeover window, and the last values of the trade topics a batch would write first are read
just before it is published and kept as their anchors.

:func:`missing_trades` is the pure decision: which trades of a page are missing, and whether the
page reached the anchor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis

from upbit_fanout.collector._log import log
from upbit_fanout.collector.exchange import ExchangeError
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.quotation import (
    BACKFILL,
    MAX_TRADES_PER_PAGE,
    QuotationClient,
    RestCall,
    stream_trade,
)
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.collector.status import Status
from upbit_fanout.subscriptions.clock import now_ms
from upbit_fanout.subscriptions.codec import decode_event, encode_event
from upbit_fanout.subscriptions.connection import REDIS_FAILURES
from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["Backfiller", "Hole", "missing_trades"]


_PUBLISH_WAIT: Final = 5.0
"""Seconds the notice waits for the back-filled trades to be published first."""
_TAKEOVER_WINDOW_MS: Final = 30_000
"""A takeover's hole is filled only if the socket is subscribed within this time: topics
wanted later were not live across it (nobody was waiting for their trades)."""


@dataclass(frozen=True, slots=True)
class Hole:
    """One trade topic to fill: ``anchor`` (last sequential_id before the gap, or None) and
    ``since`` (epoch ms when the socket was found lost). ``before`` (epoch ms, after a
    takeover): the anchor is read from ``P:last:{topic}``, the previous leader's last trade,
    if that trade is older than ``before``."""

    topic: str
    code: str
    anchor: int | None
    since: int
    before: int | None = None


def missing_trades(
    page: Sequence[Mapping[str, Any]], anchor: int | None, since: int
) -> tuple[list[Mapping[str, Any]], bool]:
    """The trades of one newest-first page that are newer than the anchor, and whether the page
    reached it (then no older page is needed).

    With no anchor, trades from ``since`` on are missing and a trade older than ``since`` ends
    the search. A malformed trade (no integer ``sequential_id``) is skipped.
    """
    found: list[Mapping[str, Any]] = []
    for trade in page:
        sid = trade.get("sequential_id")
        if not isinstance(sid, int) or isinstance(sid, bool):
            continue
        if anchor is not None and sid == anchor:
            return found, True
        if anchor is None:
            stamp = trade.get("timestamp")
            if isinstance(stamp, int) and stamp < since:
                return found, True
        found.append(trade)
    return found, False


def _anchor_of(payload: bytes | str | None, before: int) -> int | None:
    """The ``sequential_id`` of a last value that is a trade older than ``before`` (ms)."""
    raw = payload.encode() if isinstance(payload, str) else payload
    try:
        event = decode_event(raw) if raw else None
    except CodecError as exc:
        log.warning("back-fill: a trade's last value does not decode (%s); no anchor", exc)
        return None
    if not isinstance(event, dict):
        return None
    sid, stamp = event.get("sequential_id"), event.get("trade_timestamp")
    if isinstance(sid, int) and isinstance(stamp, int) and stamp < before:
        return sid
    return None  # written by this leader already (or not a trade): fill from ``since``


class Backfiller:
    """Fills each trade topic's hole after an upstream gap (see the module docstring).

    Counters: ``gaps`` (gaps handled), ``trades`` (trades back-filled), ``incomplete`` (topics
    whose hole could not be closed).
    """

    def __init__(
        self,
        *,
        client: QuotationClient,
        router: Router,
        outbox: Outbox[Outgoing],
        status: Status,
        codec: Literal["json", "msgpack"],
        published: Callable[[], int],
        max_trades: int = 2_000,
        publish_wait: float = _PUBLISH_WAIT,
        redis: Redis | None = None,
        keys: Keys | None = None,
    ) -> None:
        if max_trades < 1:
            raise ValueError("max_trades must be at least 1")
        self._client = client
        self._router = router
        self._outbox = outbox
        self._status = status
        self._codec: Literal["json", "msgpack"] = codec
        self._published = published
        self.max_trades = max_trades
        self._publish_wait = publish_wait
        self._pending: dict[str, Hole] = {}
        self._redis = redis
        self._keys = keys
        self._takeover: tuple[int, int] | None = None
        self._anchoring: tuple[int, set[str]] | None = None  # (takeover at, topics read)
        self._anchors: dict[str, int | None] = {}  # topic -> anchor read before it was written
        self._wake = asyncio.Event()
        self.gaps = 0
        self.trades = 0
        self.incomplete = 0

    def gap(self, since: int, topics: Iterable[Topic]) -> None:
        """An upstream gap ended: queue every trade topic of ``topics`` (live across it)."""
        anchors = self._router.trade_anchors
        added = False
        for topic in topics:
            if topic.type != "trade" or topic.code is None:
                continue
            text = str(topic)
            hole = Hole(text, topic.code, anchors.get(topic.code), since)
            earlier = self._pending.get(text)
            if earlier is not None:  # merged: the older anchor covers both holes
                hole = Hole(text, topic.code, earlier.anchor, min(earlier.since, since))
            self._pending[text] = hole
            added = True
        if added:
            self.gaps += 1
            self._wake.set()

    def takeover(self, since: int, at: int) -> None:
        """This collector took the lease at ``at`` (ms) after a hole from ``since``: once its
        socket is subscribed (:meth:`subscribed`), its trade topics are filled from the previous
        leader's last trades (``P:last``)."""
        self._takeover = (since, at)
        self._anchoring = (at, set())
        self._anchors = {}

    async def before_publish(self, batch: Sequence[Outgoing], *, now: int | None = None) -> None:
        """Called with every batch before it is published: during a takeover's window, read the
        previous leader's last trade of each trade topic whose last value the batch would write
        first, and keep it as the topic's anchor (see the module). Never raises; a read that
        fails leaves those topics without an anchor (their pages stop at the gap's start)."""
        anchoring = self._anchoring
        if anchoring is None:
            return
        at, read = anchoring
        if (now if now is not None else now_ms()) - at > _TAKEOVER_WINDOW_MS:
            self._anchoring = None
            return
        topics = sorted(
            {
                item.topic
                for item in batch
                if item.type == "trade" and item.publish and item.last and item.topic not in read
            }
        )
        if not topics or self._redis is None or self._keys is None:
            return
        read.update(topics)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic in topics:
                    pipe.get(self._keys.last(topic))
                values = await pipe.execute()
        except REDIS_FAILURES as exc:
            log.warning("back-fill after the takeover: no anchors from the last values (%s)", exc)
            self._anchors.update(dict.fromkeys(topics))
            return
        for topic, payload in zip(topics, values, strict=True):
            self._anchors[topic] = _anchor_of(payload, at)

    def subscribed(self, topics: Iterable[Topic], *, now: int | None = None) -> None:
        """The public socket is subscribed: after a takeover, queue its trade topics."""
        if self._takeover is None or self._redis is None:
            return
        since, at = self._takeover
        self._takeover = None
        if (now if now is not None else now_ms()) - at > _TAKEOVER_WINDOW_MS:
            return
        added = False
        for topic in topics:
            if topic.type == "trade" and topic.code is not None:
                text = str(topic)
                self._pending[text] = Hole(text, topic.code, None, since, before=at)
                added = True
        if added:
            self.gaps += 1
            self._wake.set()

    async def _anchor_from_last(self, hole: Hole) -> int | None:
        """The previous leader's last trade of the topic, if it is older than the takeover: as
        read before this leader first wrote the topic's last value, or read now."""
        if self._redis is None or self._keys is None or hole.before is None:
            return None
        if hole.topic in self._anchors:
            return self._anchors.pop(hole.topic)
        try:
            payload = await self._redis.get(self._keys.last(hole.topic))
        except REDIS_FAILURES as exc:
            log.warning("back-fill of %s: no anchor from its last value (%s)", hole.topic, exc)
            return None
        return _anchor_of(payload, hole.before)

    async def run(self) -> None:
        """Fill the queued holes, one topic at a time, forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                topic = next(iter(self._pending))
                hole = self._pending.pop(topic)
                try:
                    await self._fill(hole)
                except Exception as exc:  # never a silent hole: say it, then go on
                    log.exception("back-fill of %s failed", hole.topic)
                    self.incomplete += 1
                    self._status.count("incomplete_backfills")
                    self._status.notice(
                        "backfill",
                        connection="public",
                        topic=hole.topic,
                        count=0,
                        complete=False,
                        since=hole.since,
                        reason=f"internal error: {type(exc).__name__}",
                    )

    async def _fill(self, hole: Hole) -> None:
        if hole.before is not None and hole.anchor is None:
            hole = Hole(hole.topic, hole.code, await self._anchor_from_last(hole), hole.since)
        trades: list[Mapping[str, Any]] = []
        reached = False
        reason = ""
        cursor: int | None = None
        try:
            while len(trades) < self.max_trades:
                count = min(MAX_TRADES_PER_PAGE, self.max_trades - len(trades))
                params = [("market", hole.code), ("count", str(count))]
                if cursor is not None:
                    params.append(("cursor", str(cursor)))
                page = await self._client.get(RestCall("/v1/trades/ticks", tuple(params), "trade"))
                if not isinstance(page, list):
                    reason = "trades/ticks answered something that is not a list"
                    break
                found, reached = missing_trades(page, hole.anchor, hole.since)
                trades += found[: self.max_trades - len(trades)]
                if reached:
                    break
                if len(page) < count:
                    reason = "Upbit has no older trades, and the last trade before the gap was "
                    reason += "not among them"
                    break
                last = page[-1].get("sequential_id") if isinstance(page[-1], Mapping) else None
                if not isinstance(last, int) or last == cursor:
                    reason = "trades/ticks gave no usable cursor"
                    break
                cursor = last
            else:
                reason = f"more than {self.max_trades} trades were missed (max_backfill_trades)"
        except ExchangeError as exc:
            reason = f"Upbit's REST API failed: {exc}"
        if not reached and hole.anchor is None and not reason:
            reason = "no trade was seen before the gap"
        published = await self._publish(hole, trades)
        complete = reached and not reason
        if not complete:
            self.incomplete += 1
            self._status.count("incomplete_backfills")
            log.warning("back-fill of %s incomplete: %s", hole.topic, reason)
        details: dict[str, Any] = {
            "connection": "public",
            "topic": hole.topic,
            "count": published,
            "complete": complete,
            "since": hole.since,
        }
        if not complete:
            details["reason"] = reason
        self._status.notice("backfill", **details)

    async def _publish(self, hole: Hole, trades: list[Mapping[str, Any]]) -> int:
        """Queue the missing trades oldest first; wait (bounded) until they are published."""
        if hole.topic not in self._router.topics:
            return 0  # nobody wants the topic any more
        encoded: list[tuple[int, bytes]] = []
        for trade in reversed(trades):
            try:
                payload = stream_trade(trade, stream_type=BACKFILL)
                encoded.append((payload["sequential_id"], encode_event(payload, self._codec)))
            except (KeyError, TypeError, ValueError, ArithmeticError, CodecError):
                continue
        fresh = self._router.claim_trades(hole.code, [sid for sid, _ in encoded])
        items = [
            Outgoing(hole.topic, data, "trade", last=False)
            for (_, data), new in zip(encoded, fresh, strict=True)
            if new
        ]
        if not items:
            return 0
        target = self._published() + len(self._outbox) + len(items)
        self._outbox.put_many(items)
        self.trades += len(items)
        self._status.count("backfilled_trades", len(items))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_wait
        # The publisher counts what it wrote but signals nothing per batch: a short bounded poll.
        while self._published() < target and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return len(items)
