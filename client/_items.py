"""What a client hands its consumer: :class:`Event`, :class:`Gap` and :class:`Notice`.

Every item has a ``kind`` (``"event"``, ``"gap"``, ``"notice"``) so a plain script can tell them
apart without ``isinstance``.

An :class:`Event` is cheap to make: it holds the payload bytes as they came from Redis and
decodes them only when asked (``data``, ``stream_type``, ``typed``), once. A recorder that only
writes ``payload`` somewhere never pays for decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from upbit_fanout.client.events import MarketEvent, parse_event
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["Event", "Gap", "Item", "Notice"]


class Event:
    """One market (or private) event of a topic the client subscribed to.

    ``topic``
        The topic as subscribed, e.g. ``"orderbook:KRW-BTC.5"``.
    ``type``, ``code``
        From the topic (``"orderbook"``, ``"KRW-BTC"``). For ``myOrder:*`` the code is the
        event's own market; for ``myAsset`` it is None.
    ``payload``
        The bytes published by the collector (JSON or msgpack).
    ``data``
        The payload decoded: Upbit's DEFAULT field names, numbers as exact ``Decimal`` (``int``
        for integers). Decoded on first access; raises ``CodecError`` for a malformed payload.
    ``stream_type``
        ``"SNAPSHOT"``, ``"REALTIME"`` or None (from ``data``); ``"REST"`` for a snapshot the
        collector answered from Upbit's REST API, ``"BACKFILL"`` for a trade it back-filled
        after an upstream gap (docs/contract.md, "Cold snapshots", "Back-fill after a gap").
    ``backfilled``
        True for a back-filled trade (``stream_type`` ``"BACKFILL"``): it happened during an
        upstream gap and arrives after live trades that followed it.
    ``typed``
        The typed event (:class:`client.Ticker`, :class:`client.Orderbook`, ...), built on first
        access; raises ``EventParseError`` when the payload is not a valid event of its type.
    ``cached``
        True when the event was read from the topic's last-value key (a snapshot answered from
        the cache, or the refresh after a reconnect) rather than received live: you may have
        seen it before.
    """

    __slots__ = ("_data", "_topic", "_typed", "cached", "payload", "topic")

    kind: ClassVar[Literal["event"]] = "event"

    def __init__(self, topic: str, info: Topic, payload: bytes, *, cached: bool = False) -> None:
        self.topic = topic
        self._topic = info
        self.payload = payload
        self.cached = cached
        self._data: Mapping[str, Any] | None = None
        self._typed: MarketEvent | None = None

    @property
    def type(self) -> str:
        return self._topic.type

    @property
    def code(self) -> str | None:
        code = self._topic.code
        if code is None or code == "*":
            value = self.data.get("code")
            return value if isinstance(value, str) else None
        return code

    @property
    def data(self) -> Mapping[str, Any]:
        data = self._data
        if data is None:
            value = decode_event(self.payload)
            if not isinstance(value, dict):
                raise CodecError(
                    f"the payload of {self.topic} is a {type(value).__name__}, not an object"
                )
            self._data = data = value
        return data

    @property
    def stream_type(self) -> str | None:
        value = self.data.get("stream_type")
        return value if isinstance(value, str) else None

    @property
    def backfilled(self) -> bool:
        return self.stream_type == "BACKFILL"

    @property
    def timestamp(self) -> int | None:
        """Upbit's ``timestamp`` (ms since the epoch), or None when the payload has none."""
        value = self.data.get("timestamp")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def typed(self) -> MarketEvent:
        typed = self._typed
        if typed is None:
            self._typed = typed = parse_event(self.data)
        return typed

    def __repr__(self) -> str:
        cached = ", cached" if self.cached else ""
        return f"<Event {self.topic} ({len(self.payload)} bytes{cached})>"


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of ``topics`` between ``started_at`` and ``ended_at`` may be missing.

    Three sources (``source``):

    ``"redis"``
        This client lost its Redis connection and is back. It comes after the client
        re-asserted its intents and resubscribed.
    ``"collector"``
        The collector announced a gap (a ``gap`` notice): its Upbit connection dropped and was
        re-established, a new collector took over, or events were dropped on the way to Redis.
        ``reason`` is the collector's; ``connection`` names its upstream connection
        (``"public"``/``"private"``) when the notice says. Reported unless the client was made
        with ``upstream_gaps=False``.
    ``"stream"``
        Read from a private stream (:class:`PrivateStream`, :class:`StreamGroup`): the
        collector's gap entry. Its private socket was down from ``started_at`` to ``ended_at``,
        so events of that time may be missing; ``topics`` is the stream's type and
        ``entry_id`` the entry's id (acknowledge it like any item). Reconciled entries
        (``source="rest"`` on the events) follow it.

    For the first two, the events that follow it first are the last values of ``topics``
    (``cached=True``), then live ones. ``started_at`` / ``ended_at`` are wall-clock seconds
    (``time.time()``); when the collector does not know when a gap began, ``started_at`` equals
    ``ended_at``.
    """

    reason: str
    started_at: float
    ended_at: float
    topics: tuple[str, ...] = ()
    source: Literal["redis", "collector", "stream"] = "redis"
    connection: str | None = None
    entry_id: str | None = None
    kind: ClassVar[Literal["gap"]] = "gap"

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True, slots=True)
class Notice:
    """A collector notice from ``P:notices``: ``connected``, ``disconnected``, ``subscribed``,
    ``error``, ``gap`` (the collector's upstream may have missed events), ``leader``.

    ``at`` is the collector's time in ms since the epoch (None if absent); ``data`` is the whole
    notice as sent.
    """

    event: str
    at: int | None
    data: Mapping[str, Any] = field(repr=False)
    kind: ClassVar[Literal["notice"]] = "notice"


Item: TypeAlias = Event | Gap | Notice
"""What the event iterator yields."""
