"""Event routing: decoded upstream frames -> (topic, payload) items for the publisher.

Pure and stateful, no I/O. One :class:`Router` per upstream connection (the public one and the
private one each get their own): :meth:`Router.set_topics` is told the topics of every subscribe
message sent on that connection, and :meth:`Router.route` turns one event :class:`Frame` into the
:class:`Outgoing` items to publish.

Which topics an event feeds
    ``TYPE:CODE`` when that topic is live (ticker, trade, candle.*); an orderbook frame feeds every
    live depth topic of its code and level (``orderbook:KRW-BTC``, ``.1``, ``.5``, ``.15``,
    ``.30``; a grouped book, whose frames carry a non-zero ``level``, feeds the topics of that
    level, ``orderbook:KRW-BTC.15@10000``, and no others): a topic
    wanting fewer units than the frame carries gets the first N units and ``total_ask_size`` /
    ``total_bid_size`` recomputed as the exact ``Decimal`` sum of the units kept (the units' own
    number text is unchanged); a topic wanting as many or more gets the frame as it is. myOrder
    feeds ``myOrder:CODE`` and ``myOrder:*``; myAsset feeds ``myAsset``. An event for no live
    topic (in-flight frames of a replaced subscription, docs/upbit-protocol.md §3) is counted in
    :attr:`Router.unrouted` and dropped.

No duplicates across a resubscribe (docs/contract.md, "Upstream behaviour")
    Upbit probably re-sends a SNAPSHOT per code on every subscribe message (§3, §12.1). After
    ``set_topics(..., fresh_connection=False)``, SNAPSHOT frames for topics that stayed live and
    had already delivered an event on this connection are dropped (:attr:`dropped_snapshots`);
    new topics get theirs, and each topic passes at most one SNAPSHOT per subscribe message (an
    in-flight snapshot of the replaced message counts). After a fresh connection every topic's
    first snapshot passes (consumers need fresh state; the collector announces a gap). Trades are
    also deduplicated on ``sequential_id`` per code, always, remembering the last
    ``dedupe_window`` ids of each code (:attr:`duplicate_trades`): the snapshot trade is the
    code's latest trade, so a small window is enough; memory is about 100 bytes per id.

Payloads
    Field names are always Upbit's DEFAULT names and numbers keep Upbit's digits. With the
    ``json`` codec, a DEFAULT frame that needs no change is published as Upbit's bytes (zero
    re-encoding); anything else is written by :func:`subscriptions.codec.encode_event` from the
    exact object. With ``msgpack`` every payload is encoded from an exact parse. Each distinct
    payload is encoded once per frame, however many topics it goes to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import msgpack
import orjson

from upbit_fanout.collector.decode import Frame
from upbit_fanout.collector.private_sync import identity
from upbit_fanout.subscriptions.codec import EXT_DECIMAL, encode_event
from upbit_fanout.subscriptions.errors import CodecError, FrameError
from upbit_fanout.subscriptions.jsontext import (
    EXACT_CONTEXT,
    RawNumber,
    exact_decoder,
    loads_exact,
)
from upbit_fanout.subscriptions.topics import ALL_MARKETS, Topic, canonical_level
from upbit_fanout.subscriptions.upbit_fields import PRIVATE_TYPES

__all__ = ["Outgoing", "Router"]

_PRIVATE: Final = frozenset(PRIVATE_TYPES)
_SNAPSHOT: Final = "SNAPSHOT"


@dataclass(slots=True)
class Outgoing:
    """One item to publish: ``payload`` on the topic's channel and in its last-value key.

    ``Outgoing(topic, payload, type)`` is a public market event; every field after ``type`` is
    keyword-only, so a call names what it changes (``private=True, stream=False``) instead of a
    row of bare booleans. The three positional fields keep the router's one construction per
    event as cheap as a positional call (keywords cost a few hundred ns more per item).

    ``private`` items (myOrder, myAsset) also go to the capped stream ``P:stream:{type}`` unless
    ``stream`` is False: an event feeding both ``myOrder:CODE`` and ``myOrder:*`` is streamed once,
    with the code topic (the twin item for ``myOrder:*`` carries ``stream=False``).
    """

    topic: str
    payload: bytes
    type: str
    _: KW_ONLY
    private: bool = False
    """True: a private event (myOrder, myAsset), also appended to its stream."""
    stream: bool = True
    publish: bool = True
    """False: stream entry only (recorded while no intent asks for the topic's channel)."""
    identity: str | None = None
    """The event's dedupe identity (collector.private_sync.identity) for the stream entry."""
    source: str = "ws"
    """The stream entry's ``source``: ``ws``, ``rest`` (reconciled) or ``gap``."""
    last: bool = True
    """False: published on the channel but not written to the last-value key (a back-filled
    trade is older than the topic's last value)."""


class _Dedupe:
    """The last ``window`` trade ids of one code: a set for lookups, a deque for eviction."""

    __slots__ = ("order", "seen", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.seen: set[int] = set()
        self.order: deque[int] = deque()

    def add(self, sequential_id: int) -> None:
        self.seen.add(sequential_id)
        self.order.append(sequential_id)
        if len(self.order) > self.window:
            self.seen.discard(self.order.popleft())


class Router:
    """Turns decoded event frames into :class:`Outgoing` items for the live topics.

    Counters (plain ints, read them any time; :meth:`counters` gives them as a dict):
    ``events`` event frames routed in, ``outgoing`` items produced, ``unrouted`` events for no
    live topic, ``dropped_snapshots`` snapshot deliveries suppressed after a resubscribe (one per
    topic), ``duplicate_trades`` trades dropped as already published, ``passthrough`` items
    published as Upbit's own bytes, ``encoded`` payloads encoded, ``encode_errors`` deliveries
    dropped because the event could not be encoded (a malformed orderbook unit, say).
    """

    def __init__(self, *, codec: Literal["json", "msgpack"], dedupe_window: int = 1_000) -> None:
        if codec not in ("json", "msgpack"):
            raise ValueError(f"codec must be 'json' or 'msgpack', not {codec!r}")
        if dedupe_window < 1:
            raise ValueError("dedupe_window must be at least 1")
        self.codec: Literal["json", "msgpack"] = codec
        self.dedupe_window = dedupe_window
        self._passthrough = codec == "json"
        self.record = False
        """True: private events no topic asks for still go to their stream (on no channel)."""
        self._live: frozenset[str] = frozenset()
        # routing tables, rebuilt by set_topics
        self._plain: dict[str, dict[str, str]] = {}  # type -> code -> topic (ticker/trade/candle)
        self._books: dict[str, tuple[tuple[str, int], ...]] = {}  # code -> ((topic, units), ...)
        # (code, level) -> ((topic, units), ...) for grouped books; codes having any
        self._level_books: dict[tuple[str, str], tuple[tuple[str, int], ...]] = {}
        self._level_codes: frozenset[str] = frozenset()
        self._orders: dict[str, str] = {}  # code -> "myOrder:CODE"
        self._orders_all: str | None = None
        self._asset: str | None = None
        # resubscribe bookkeeping
        self._delivered: set[str] = set()
        self._suppress: set[str] = set()
        self._dedupe: dict[str, _Dedupe] = {}
        self.trade_anchors: dict[str, int] = {}
        """Per code, the ``sequential_id`` of the last trade routed before the latest fresh
        connection: where a back-fill after an upstream gap starts (collector/backfill.py)."""
        # counters
        self.events = 0
        self.outgoing = 0
        self.unrouted = 0
        self.dropped_snapshots = 0
        self.duplicate_trades = 0
        self.passthrough = 0
        self.encoded = 0
        self.encode_errors = 0

    @property
    def topics(self) -> frozenset[str]:
        """The live topics (canonical spelling) this router delivers to."""
        return self._live

    def counters(self) -> dict[str, int]:
        return {
            "events": self.events,
            "outgoing": self.outgoing,
            "unrouted": self.unrouted,
            "dropped_snapshots": self.dropped_snapshots,
            "duplicate_trades": self.duplicate_trades,
            "passthrough": self.passthrough,
            "encoded": self.encoded,
            "encode_errors": self.encode_errors,
        }

    def set_topics(self, topics: Iterable[Topic], *, fresh_connection: bool) -> None:
        """The topics of the subscribe message just sent on this router's connection.

        ``fresh_connection`` is True for the first message after a (re)connect: every topic's
        snapshot then passes. For a resubscribe on a live connection, topics that stayed live and
        have delivered an event keep their stream without a repeated snapshot.
        """
        topic_list = list(topics)
        live = frozenset(str(topic) for topic in topic_list)
        if fresh_connection:
            self._delivered = set()
            self.trade_anchors = {
                code: dedupe.order[-1] for code, dedupe in self._dedupe.items() if dedupe.order
            }
        else:
            self._delivered &= live  # a topic dropped and wanted again counts as new
        self._suppress = set(self._delivered)
        self._live = live

        plain: dict[str, dict[str, str]] = {}
        books: dict[str, list[tuple[str, int]]] = {}
        level_books: dict[tuple[str, str], list[tuple[str, int]]] = {}
        orders: dict[str, str] = {}
        self._orders_all = None
        self._asset = None
        for topic in topic_list:
            text = str(topic)
            if topic.type == "orderbook" and topic.code is not None:
                if topic.level is None:
                    books.setdefault(topic.code, []).append((text, topic.units))
                else:
                    level_books.setdefault((topic.code, topic.level), []).append(
                        (text, topic.units)
                    )
            elif topic.type == "myOrder":
                if topic.code == ALL_MARKETS or topic.code is None:
                    self._orders_all = text
                else:
                    orders[topic.code] = text
            elif topic.type == "myAsset":
                self._asset = text
            elif topic.code is not None:
                plain.setdefault(topic.type, {})[topic.code] = text
        self._plain = plain
        self._books = {code: tuple(sorted(entries)) for code, entries in books.items()}
        self._level_books = {key: tuple(sorted(entries)) for key, entries in level_books.items()}
        self._level_codes = frozenset(code for code, _ in level_books)
        self._orders = orders

    # -- routing --------------------------------------------------------------------------------

    def route(self, frame: Frame) -> list[Outgoing]:
        """The items to publish for one frame (empty for non-events and dropped events)."""
        if frame.kind != "event":
            return []
        self.events += 1
        type_name = frame.type
        code = frame.code
        if type_name is None:  # pragma: no cover - the decoder always sets an event's type
            self.unrouted += 1
            return []
        if type_name == "orderbook":
            return self._route_orderbook(frame, code)
        if type_name in _PRIVATE:
            return self._route_private(frame, type_name, code)

        codes = self._plain.get(type_name)
        topic = codes.get(code) if codes is not None and code is not None else None
        if topic is None:
            self.unrouted += 1
            return []
        sequential_id = frame.sequential_id
        if sequential_id is not None and code is not None:
            dedupe = self._dedupe.get(code)
            if dedupe is None:
                dedupe = self._dedupe[code] = _Dedupe(self.dedupe_window)
            elif sequential_id in dedupe.seen:
                self.duplicate_trades += 1
                return []
        else:
            dedupe = None
        if frame.stream_type == _SNAPSHOT and not self._snapshot_passes(topic):
            return []
        payload = self._payload(frame)
        if payload is None:
            return []
        if dedupe is not None and sequential_id is not None:
            dedupe.add(sequential_id)
        self._delivered.add(topic)
        self.outgoing += 1
        return [Outgoing(topic, payload, type_name)]

    def claim_trades(self, code: str, sequential_ids: list[int]) -> list[bool]:
        """Mark trades as published unless they already were (the duplicate-trade filter, for
        trades that did not come from the socket: back-fill); True: publish it. Every id is
        checked before any is added, so a long batch cannot push the ids it is checked against
        out of the window."""
        dedupe = self._dedupe.get(code)
        if dedupe is None:
            dedupe = self._dedupe[code] = _Dedupe(self.dedupe_window)
        seen = dedupe.seen
        batch: set[int] = set()
        fresh: list[bool] = []
        for sid in sequential_ids:
            fresh.append(sid not in seen and sid not in batch)
            batch.add(sid)
        for sid, new in zip(sequential_ids, fresh, strict=True):
            if new:
                dedupe.add(sid)
            else:
                self.duplicate_trades += 1
        return fresh

    def _snapshot_passes(self, topic: str) -> bool:
        """At most one snapshot per topic and subscribe message; none for continuing topics."""
        if topic in self._suppress:
            self.dropped_snapshots += 1
            return False
        self._suppress.add(topic)
        return True

    def _payload(self, frame: Frame) -> bytes | None:
        """The frame's whole object as a payload: Upbit's bytes when possible."""
        raw = frame.raw
        if raw is not None:
            if self._passthrough:
                self.passthrough += 1
                return raw
            if frame.obj is None:
                packed = _msgpack_from_json(raw)
                if packed is not None:
                    self.encoded += 1
                    return packed
        try:
            payload = encode_event(frame.exact(), self.codec)
        except (CodecError, FrameError):
            self.encode_errors += 1
            return None
        self.encoded += 1
        return payload

    def _route_orderbook(self, frame: Frame, code: str | None) -> list[Outgoing]:
        if code in self._level_codes:  # someone wants a grouped book of this code
            level = _frame_level(frame)
            if level is not None:
                entries = self._level_books.get((code, level))
            else:
                entries = self._books.get(code)
        else:
            entries = self._books.get(code) if code is not None else None
        if not entries:
            self.unrouted += 1
            return []
        snapshot = frame.stream_type == _SNAPSHOT
        have = frame.units if frame.units is not None else 0
        payloads: dict[int, bytes | None] = {}
        out: list[Outgoing] = []
        for topic, units in entries:
            if snapshot and not self._snapshot_passes(topic):
                continue
            key = units if units < have else 0  # 0: the frame as it is
            if key in payloads:
                payload = payloads[key]
            else:
                payload = payloads[key] = (
                    self._payload(frame) if key == 0 else self._sliced(frame, key)
                )
            if payload is None:
                continue
            self._delivered.add(topic)
            out.append(Outgoing(topic, payload, "orderbook"))
        self.outgoing += len(out)
        return out

    def _sliced(self, frame: Frame, units: int) -> bytes | None:
        """The book cut to its first ``units`` units, with exact recomputed totals."""
        try:
            obj = frame.exact()
            kept = obj["orderbook_units"][:units]
            sliced = dict(obj)
            sliced["orderbook_units"] = kept
            sliced["total_ask_size"] = _exact_sum(kept, "ask_size")
            sliced["total_bid_size"] = _exact_sum(kept, "bid_size")
            payload = encode_event(sliced, self.codec)
        except (CodecError, FrameError, ArithmeticError, LookupError, TypeError, ValueError):
            self.encode_errors += 1
            return None
        self.encoded += 1
        return payload

    def _route_private(self, frame: Frame, type_name: str, code: str | None) -> list[Outgoing]:
        topics: list[str] = []
        if type_name == "myAsset":
            if self._asset is not None:
                topics.append(self._asset)
        else:
            specific = self._orders.get(code) if code is not None else None
            if specific is not None:
                topics.append(specific)
            if self._orders_all is not None:
                topics.append(self._orders_all)
        quiet = False
        if not topics:
            if not self.record:
                self.unrouted += 1
                return []
            # Always-on recording: into the stream, on no channel (nobody asked for one).
            quiet = True
            topics.append("myAsset" if type_name == "myAsset" else f"myOrder:{code or ALL_MARKETS}")
        snapshot = frame.stream_type == _SNAPSHOT
        payload: bytes | None = None
        out: list[Outgoing] = []
        for topic in topics:
            if snapshot and not quiet and not self._snapshot_passes(topic):
                continue
            if payload is None:
                payload = self._payload(frame)
                if payload is None:
                    return []
            if not quiet:
                self._delivered.add(topic)
            item = Outgoing(
                topic, payload, type_name, private=True, stream=not out, publish=not quiet
            )
            if not out:
                item.identity = _identity(type_name, frame)
            out.append(item)
        self.outgoing += len(out)
        return out


def _frame_level(frame: Frame) -> str | None:
    """The canonical ``level`` of an orderbook frame (None: 0 or absent, an ungrouped book).

    Read only for codes someone wants grouped: a fast parse of Upbit's bytes (a level is a
    short number; its float is exact enough for its text) or the exact object."""
    obj: Any = frame.obj
    if obj is None and frame.raw is not None:
        try:
            obj = orjson.loads(frame.raw)
        except orjson.JSONDecodeError:
            return None
    return canonical_level(obj.get("level")) if isinstance(obj, dict) else None


def _identity(type_name: str, frame: Frame) -> str | None:
    """The private event's dedupe identity, without caching a parsed object on the frame."""
    obj: Any = frame.obj
    if obj is None and frame.raw is not None:
        try:
            obj = loads_exact(frame.raw)
        except ValueError:
            return None
    return identity(type_name, obj) if isinstance(obj, dict) else None


_NEW_TUPLE: Final = tuple.__new__
_EXT_TYPE: Final = msgpack.ExtType


def _decimal_ext(text: str) -> msgpack.ExtType:
    # tuple.__new__ skips ExtType.__new__'s Python-level argument checks (2x faster); the
    # arguments are right by construction: an int code and the number's ASCII text.
    ext: msgpack.ExtType = _NEW_TUPLE(_EXT_TYPE, (EXT_DECIMAL, text.encode("ascii")))
    return ext


# Upbit's DEFAULT bytes straight to our msgpack: every non-integer number becomes the codec's
# decimal extension as the JSON is parsed, so packing needs no Python callback per number. The
# bytes are exactly what subscriptions.codec.encode_event(loads_exact(raw), "msgpack") writes
# (tests/collector/test_routing.py checks it on every sample).
_JSON_TO_EXT: Final = exact_decoder(_decimal_ext)
_PACK_PLAIN: Final = msgpack.Packer(use_bin_type=True, strict_types=True, datetime=False).pack


def _msgpack_from_json(raw: bytes) -> bytes | None:
    """``raw`` (already validated JSON) as a msgpack payload; None to take the general path."""
    try:
        return bytes(_PACK_PLAIN(_JSON_TO_EXT.decode(raw.decode("utf-8"))))
    except (ValueError, TypeError, OverflowError):  # an integer wider than 64 bits, say
        return None


def _exact_sum(units: list[Any], field: str) -> Decimal:
    total = Decimal(0)
    for unit in units:
        value = unit[field]
        if type(value) is not RawNumber and type(value) is not int:
            raise TypeError(f"orderbook unit {field} is not a number")
        total = EXACT_CONTEXT.add(total, Decimal(value))
    return total
