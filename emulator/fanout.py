"""The emulator's fan-out: which connection is sent which frame, with no socket in sight.

:class:`Fanout` keeps the index of the open subscriptions ((type, code) -> the connections and
streams that want REALTIME frames of it, plus the private subscribers) and queues each event's
frames on the connections that want it:

- every event is rendered once per (format, orderbook depth, level) and the same bytes are queued
  on every connection that wants it; connections that negotiated no compression share the framed
  bytes too (:func:`~emulator.protocol.frame_binary`, built once);
- orderbook streams at another depth or a price ``level`` get their own cut of the book;
- myOrder and myAsset events go to the private subscriptions that want them
  (:meth:`~emulator.protocol.ConnectionSubscription.wants`);
- :func:`snapshot_frames` renders the SNAPSHOT frames a new subscription is answered with, and
  :meth:`Fanout.offer` matches a recorded frame (replay mode, ``Emulator.inject``) against one
  connection.

A connection is anything with the :class:`Subscriber` attributes: the server hands in its
:class:`~emulator.connection.EmulatorConnection`, a test a recording object. ``push`` queues a
frame on it; :meth:`Fanout.take_dirty` hands back the connections with frames queued since the
last call, which the server writes (one write per connection per batch) and whose outgoing
queue policy it applies. Nothing here awaits, reads a socket or writes one: it is tested from
tables (tests/emulator/test_fanout.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from upbit_fanout.emulator.account import PrivateEvent
from upbit_fanout.emulator.protocol import (
    ConnectionSubscription,
    Format,
    Stream,
    frame_binary,
    frame_header,
    render_event,
    render_row,
    wrap_list,
)
from upbit_fanout.emulator.replay import ReplayFrame, matching_items
from upbit_fanout.emulator.simulation import ROW_SPECS, RowEvent, orderbook_at_depth
from upbit_fanout.subscriptions.clock import now_ms

__all__ = ["BookAt", "Fanout", "Subscriber", "snapshot_frames"]

ROW_DEPTH: Final = 30
"""The units of the simulator's orderbook rows (streams at another depth get a cut of them)."""

_UNSET: Final[Any] = object()
_HEADERS: dict[int, bytes] = {}  # payload length -> binary frame header (frame_binary's)


def _header(length: int) -> bytes:
    header = frame_header(length)
    if len(_HEADERS) < 65_536:
        _HEADERS[length] = header
    return header


# REALTIME templates (DEFAULT, SIMPLE) of the rows written without a units field
_ROW_TEMPLATES: Final = {
    type_: spec.realtime for type_, spec in ROW_SPECS.items() if spec.units_at is None
}


class Subscriber(Protocol):
    """What the fan-out reads and writes of a connection
    (:class:`~emulator.connection.EmulatorConnection` has it all)."""

    subscription: ConnectionSubscription | None
    closing: bool
    """Nothing more is sent: left out of the index."""
    dirty: bool
    """Frames are queued and a write is due (set by the fan-out, cleared by take_dirty)."""
    frames_sent: int
    format_key: str
    """``format.value``, and the three below, as plain attributes (the hot loop reads them)."""
    simple: bool
    listed: bool
    raw: bool
    """No compression: frames are queued ready-made and shared between connections."""

    @property
    def format(self) -> Format: ...

    def push(self, data: bytes, framed: bytes | None = None) -> bool:
        """Queue one binary frame (``framed`` is ``frame_binary(data)`` when the caller has it);
        False when the connection takes no more frames."""
        ...

    def raw_queue(self) -> list[bytes] | None:
        """The list ready-made frames are appended to (raw and open), else None; the caller
        counts what it appends in ``frames_sent``."""
        ...


C = TypeVar("C", bound=Subscriber)

BookAt = Callable[[Stream, int], Mapping[str, Any]]
"""The orderbook of ``stream.code`` at the stream's depth and price level, at a timestamp (ms):
``MarketSimulator.orderbook`` in the server."""


def snapshot_frames(
    subscription: ConnectionSubscription,
    snapshot: Callable[[Stream], Mapping[str, Any] | None],
) -> list[bytes]:
    """The SNAPSHOT frames that answer a subscribe request, in request order, in the request's
    format: one per snapshot stream (none for ``is_only_realtime`` streams) whose market has
    data (``snapshot(stream)`` returns None for one that has none yet)."""
    fmt = subscription.format
    frames: list[bytes] = []
    for stream in subscription.snapshots:
        payload = snapshot(stream)
        if payload is None:
            continue
        data = render_event(stream.type, payload, "SNAPSHOT", simple=fmt.simple)
        frames.append(wrap_list(data) if fmt.listed else data)
    return frames


class Fanout(Generic[C]):
    """The subscription index, and the frames each event puts on each connection's queue.

    ``book_at`` answers for orderbook streams with a price ``level`` (those are cut from the
    market's book, not from the event).
    """

    def __init__(self, *, book_at: BookAt) -> None:
        self._book_at = book_at
        self._index: dict[tuple[str, str], list[tuple[C, Stream]]] = {}
        self._private: list[C] = []
        self._dirty: list[C] = []
        self.frames_sent = 0
        """Frames queued on connections since the start (all kinds)."""
        self.generated_codes: frozenset[str] = frozenset()
        """The markets the generator must move: watched ones and the ``always`` of rebuild."""
        self.generated_types: frozenset[str] = frozenset()
        """The event types the generator must make."""

    # --- the index -----------------------------------------------------------------------------

    def rebuild(self, subscribers: Iterable[C], *, always: Iterable[str] = ()) -> bool:
        """Index the subscriptions of ``subscribers`` (closing ones and those without a
        subscription are left out). ``always`` names markets that must trade whether or not
        anyone watches them (resting orders, ``trading`` markets). True when the generated
        codes or types changed."""
        index: dict[tuple[str, str], list[tuple[C, Stream]]] = {}
        private: list[C] = []
        for client in subscribers:
            subscription = client.subscription
            if subscription is None or client.closing:
                continue
            if subscription.my_order is not None or subscription.my_asset:
                private.append(client)
            for key, streams in subscription.realtime.items():
                targets = index.setdefault(key, [])
                targets.extend((client, stream) for stream in streams)
        self._index = index
        self._private = private
        trading = frozenset(always)
        codes = frozenset(code for _, code in index) | trading
        types = frozenset(type_ for type_, _ in index)
        if trading:
            types |= {"trade"}  # resting orders fill on trades (Account.on_trade)
        if codes == self.generated_codes and types == self.generated_types:
            return False
        self.generated_codes = codes
        self.generated_types = types
        return True

    @property
    def watched_codes(self) -> frozenset[str]:
        """Markets some connection wants REALTIME frames of."""
        return frozenset(code for _, code in self._index)

    # --- the queue -----------------------------------------------------------------------------

    def push(self, client: C, data: bytes, framed: bytes | None = None) -> bool:
        """Queue one frame on a connection (False if it takes no more); it is then dirty."""
        if not client.push(data, framed):
            return False
        self.frames_sent += 1
        if not client.dirty:
            client.dirty = True
            self._dirty.append(client)
        return True

    def take_dirty(self) -> list[C]:
        """The connections with frames queued since the last call (each once), to be written."""
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.dirty = False
        return dirty

    # --- public events -------------------------------------------------------------------------

    def deliver(self, events: Iterable[RowEvent]) -> None:
        """Queue REALTIME events on the connections that want them (the generator's batch)."""
        index = self._index
        # raw connections' frame queues, looked up once per batch: nothing in this synchronous
        # loop can close a connection (writes happen after it)
        queues: dict[C, list[bytes] | None] = {}
        sent: dict[C, int] = {}
        for type_, code, payload in events:
            if not isinstance(payload, tuple) or (templates := _ROW_TEMPLATES.get(type_)) is None:
                self.dispatch(type_, code, payload)
            elif targets := index.get((type_, code)):
                if len(targets) == 1:  # _dispatch_row's single-subscriber case, inlined
                    client = targets[0][0]
                    data = (templates[client.simple] % payload).encode()
                    if client.listed:
                        data = wrap_list(data)
                    queue = queues.get(client, _UNSET)
                    if queue is _UNSET:
                        queue = queues[client] = client.raw_queue()
                        sent[client] = 0
                    if queue is not None:  # frame_binary's header, then the payload as it is
                        n = len(data)
                        queue.append(_HEADERS.get(n) or _header(n))
                        queue.append(data)
                        sent[client] += 1
                    else:
                        self.push(client, data)
                else:
                    self._dispatch_row(type_, payload, targets)
        for client, count in sent.items():
            if count:
                client.frames_sent += count
                self.frames_sent += count
                if not client.dirty:
                    client.dirty = True
                    self._dirty.append(client)

    def dispatch(self, type_: str, code: str, payload: Mapping[str, Any] | tuple[Any, ...]) -> None:
        """Render one REALTIME event once per (format, depth, level) and queue it.

        ``payload`` is a dict or, for the simulator's trades, tickers and books, a row
        (``MarketSimulator.next_rows``), written by template.
        """
        targets = self._index.get((type_, code))
        if not targets:
            return
        if isinstance(payload, tuple):
            if type_ != "orderbook" or all(
                s.depth == ROW_DEPTH and not s.level for _, s in targets
            ):
                self._dispatch_row(type_, payload, targets)
                return
            payload = ROW_SPECS[type_].payload(payload)  # other depths or levels: cut from it
        # keys are plain strings/tuples: hashing the Format enum costs a Python call each time
        frames: dict[Any, list[Any]] = {}
        objects: dict[Any, bytes] = {}
        for client, stream in targets:
            fmt_key = client.format_key
            key = fmt_key if not stream.depth else (fmt_key, stream.depth, stream.level)
            hit = frames.get(key)
            if hit is None:
                simple = client.simple
                inner_key = (simple, stream.depth, stream.level)
                data = objects.get(inner_key)
                if data is None:
                    body = payload
                    if type_ == "orderbook":
                        body = self._orderbook_variant(payload, stream)
                    data = render_event(type_, body, "REALTIME", simple=simple)
                    objects[inner_key] = data
                hit = frames[key] = [wrap_list(data) if client.listed else data, None]
            if client.raw:
                if hit[1] is None:
                    hit[1] = frame_binary(hit[0])
                self.push(client, hit[0], hit[1])
            else:
                self.push(client, hit[0])

    def _dispatch_row(
        self, type_: str, row: tuple[Any, ...], targets: list[tuple[C, Stream]]
    ) -> None:
        """:meth:`dispatch` of a row: one object per key set, one frame per format (orderbook
        rows: only for streams at the row's own depth and level 0)."""
        spec = ROW_SPECS[type_]
        if len(targets) == 1:  # the usual case, without the sharing below
            client = targets[0][0]
            if spec.units_at is None:
                data = (spec.realtime[client.simple] % row).encode()
            else:
                data = render_row(spec, row, "REALTIME", simple=client.simple)
            if client.listed:
                data = wrap_list(data)
            if client.push(data, frame_binary(data) if client.raw else None):  # push, inlined
                self.frames_sent += 1
                if not client.dirty:
                    client.dirty = True
                    self._dirty.append(client)
            return
        frames: dict[str, list[Any]] = {}
        for client, _ in targets:
            hit = frames.get(client.format_key)
            if hit is None:
                data = render_row(spec, row, "REALTIME", simple=client.simple)
                hit = frames[client.format_key] = [
                    wrap_list(data) if client.listed else data,
                    None,
                ]
            if client.raw:
                if hit[1] is None:
                    hit[1] = frame_binary(hit[0])
                self.push(client, hit[0], hit[1])
            else:
                self.push(client, hit[0])

    def _orderbook_variant(self, payload: Mapping[str, Any], stream: Stream) -> Mapping[str, Any]:
        """The orderbook event at the stream's depth and level (totals for the units sent)."""
        if stream.level:
            return self._book_at(stream, int(payload.get("timestamp") or now_ms()))
        units = payload.get("orderbook_units")
        if not isinstance(units, list) or len(units) <= stream.depth:
            return payload
        return orderbook_at_depth(dict(payload), stream.depth)

    # --- private events ------------------------------------------------------------------------

    def deliver_private(self, events: Iterable[PrivateEvent]) -> None:
        """Queue myOrder / myAsset events on the private subscriptions that want them, rendered
        once per format."""
        for type_, code, payload in events:
            rendered: dict[Format, bytes] = {}
            for client in self._private:
                subscription = client.subscription
                if subscription is None or not subscription.wants(type_, code):
                    continue
                fmt = client.format
                data = rendered.get(fmt)
                if data is None:
                    data = render_event(type_, payload, "REALTIME", simple=fmt.simple)
                    if fmt.listed:
                        data = wrap_list(data)
                    rendered[fmt] = data
                self.push(client, data)

    # --- recorded frames -----------------------------------------------------------------------

    def offer(self, frame: ReplayFrame, client: C) -> int:
        """Queue on ``client`` what it takes of a recorded frame (the items its subscription
        matches, in its format); returns how many frames that is (0: none of it matches)."""
        picked = matching_items(frame, client.subscription)
        if not picked:
            return 0
        frames = frame.render(client.format, picked)
        for data in frames:
            self.push(client, data)
        return len(frames)
