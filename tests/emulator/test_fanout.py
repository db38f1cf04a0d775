"""The emulator's fan-out (emulator.fanout): which connection is sent which frame. No sockets.

Connections are :class:`Recorder` objects with the attributes the fan-out reads; their queues are
decoded back into JSON to check what each would receive. The same behaviour over real sockets is
pinned by tests/emulator/test_server_public.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest

from upbit_fanout.emulator.fanout import Fanout, snapshot_frames
from upbit_fanout.emulator.markets import default_markets
from upbit_fanout.emulator.protocol import (
    ConnectionSubscription,
    Format,
    Stream,
    SubscribeRequest,
    compile_subscription,
    frame_binary,
    parse_request,
    render_event,
    wrap_list,
)
from upbit_fanout.emulator.replay import ReplayFrame
from upbit_fanout.emulator.simulation import ROW_SPECS, MarketSimulator, RowEvent

KNOWN = frozenset(market.code for market in default_markets())
T0 = 1_700_000_000_000
CODES = ("KRW-BTC", "KRW-ETH")
ORDER = [
    ("ticker", "KRW-BTC"),
    ("trade", "KRW-ETH"),
    ("orderbook", "KRW-BTC"),
    ("trade", "KRW-BTC"),
    ("candle.1s", "KRW-ETH"),
]


class Recorder:
    """A connection as the fan-out sees it: frames go to a list instead of a socket."""

    def __init__(self, request: Sequence[Mapping[str, Any]] | None = None, *, raw: bool = True):
        self.subscription: ConnectionSubscription | None = None
        self.closing = False
        self.dirty = False
        self.frames_sent = 0
        self.raw = raw
        self.out: list[bytes] = []
        """raw: frame bytes (header and payload, possibly in two pieces); else payloads."""
        self.format = Format.DEFAULT
        if request is not None:
            self.subscribe(request)

    def subscribe(self, request: Sequence[Mapping[str, Any]]) -> None:
        private = any(obj.get("type") in ("myOrder", "myAsset") for obj in request)
        parsed = parse_request(json.dumps([{"ticket": "t"}, *request]), private=private)
        assert isinstance(parsed, SubscribeRequest)
        self.subscription = compile_subscription(parsed, is_known=KNOWN.__contains__)
        self.format = self.subscription.format

    @property
    def format(self) -> Format:
        return self._format

    @format.setter
    def format(self, value: Format) -> None:
        self._format = value
        self.format_key = value.value
        self.simple = value.simple
        self.listed = value.listed

    def push(self, data: bytes, framed: bytes | None = None) -> bool:
        if self.closing:
            return False
        if self.raw:
            self.out.append(framed if framed is not None else frame_binary(data))
        else:
            self.out.append(data)
        self.frames_sent += 1
        return True

    def raw_queue(self) -> list[bytes] | None:
        return self.out if self.raw and not self.closing else None

    def payloads(self) -> list[bytes]:
        """What the client would read, one payload per frame (checking the framing)."""
        if not self.raw:
            return list(self.out)
        stream = b"".join(self.out)
        frames: list[bytes] = []
        while stream:
            assert stream[0] == 0x82, "a final, unmasked binary frame"
            length, at = stream[1], 2
            if length == 126:
                length, at = int.from_bytes(stream[2:4], "big"), 4
            elif length == 127:
                length, at = int.from_bytes(stream[2:10], "big"), 10
            frames.append(stream[at : at + length])
            stream = stream[at + length :]
        return frames

    def received(self) -> list[Any]:
        return [json.loads(payload) for payload in self.payloads()]


def sim_events() -> dict[tuple[str, str], RowEvent]:
    """The first simulated event of each (type, code) in :data:`ORDER`, as the generator makes
    them (rows for trades, tickers and books, dicts for candles)."""
    sim = MarketSimulator(default_markets(), seed=7, now_ms=T0)
    types = {type_ for type_, _ in ORDER}
    found: dict[tuple[str, str], RowEvent] = {}
    stamp = T0
    while not set(ORDER) <= set(found):
        stamp += 100
        for event in sim.next_rows(CODES, now_ms=stamp, max_events=64, types=types):
            found.setdefault((event[0], event[1]), event)
    return found


def expected(event: RowEvent, fmt: Format) -> Any:
    """The REALTIME frame of an event in a format, rendered the slow way (from the dict)."""
    type_, _, payload = event
    body = ROW_SPECS[type_].payload(payload) if isinstance(payload, tuple) else payload
    data = render_event(type_, body, "REALTIME", simple=fmt.simple)
    return json.loads(wrap_list(data) if fmt.listed else data)


def no_levels(stream: Stream, stamp: int) -> Mapping[str, Any]:
    raise AssertionError(f"no level stream here: {stream}")


def fanout_of(*clients: Recorder, always: Sequence[str] = ()) -> Fanout[Recorder]:
    fanout: Fanout[Recorder] = Fanout(book_at=no_levels)
    fanout.rebuild(clients, always=always)
    return fanout


EVENTS = sim_events()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "compressed"])
@pytest.mark.parametrize(
    ("request_", "wanted"),
    [
        pytest.param([{"type": "ticker", "codes": ["KRW-BTC"]}], [0], id="one-type"),
        pytest.param(
            [
                {"type": "ticker", "codes": ["KRW-BTC"]},
                {"type": "trade", "codes": ["KRW-ETH"]},
                {"format": "SIMPLE"},
            ],
            [0, 1],
            id="two-types-simple",
        ),
        pytest.param(
            [{"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"]}, {"format": "SIMPLE_LIST"}],
            [1, 3],
            id="two-codes-simple-list",
        ),
        pytest.param(
            [{"type": "orderbook", "codes": ["KRW-BTC"]}, {"format": "JSON_LIST"}],
            [2],
            id="orderbook-json-list",
        ),
        pytest.param(
            [{"type": "orderbook", "codes": ["KRW-BTC"], "is_only_snapshot": True}],
            [],
            id="only-snapshot-gets-no-realtime",
        ),
        pytest.param(
            [{"type": "trade", "codes": ["KRW-BTC"], "is_only_realtime": True}],
            [3],
            id="only-realtime",
        ),
        pytest.param(
            [{"type": "candle.1s", "codes": ["KRW-ETH"]}, {"format": "SIMPLE"}],
            [4],
            id="candle-from-a-dict",
        ),
        pytest.param([{"type": "ticker", "codes": ["KRW-XRP"]}], [], id="other-market"),
        pytest.param([{"type": "ticker", "codes": ["krw-btc"]}], [], id="unknown-code"),
    ],
)
def test_each_connection_gets_the_events_it_subscribed_in_its_format(
    request_: list[dict[str, Any]], wanted: list[int], raw: bool
) -> None:
    client = Recorder(request_, raw=raw)
    bystander = Recorder([{"type": "ticker", "codes": ["KRW-BTC"]}])  # two subscribers of 0
    fanout = fanout_of(client, bystander)
    fanout.deliver([EVENTS[key] for key in ORDER])
    fmt = client.format
    assert client.received() == [expected(EVENTS[ORDER[i]], fmt) for i in wanted]
    assert client.frames_sent == len(wanted)
    assert bystander.received() == [expected(EVENTS[ORDER[0]], Format.DEFAULT)]
    assert fanout.frames_sent == len(wanted) + 1


def test_alone_on_a_stream_too() -> None:
    # The generator's usual case (one subscriber per stream) takes an inlined path.
    for fmt in Format:
        client = Recorder([{"type": "trade", "codes": ["KRW-ETH"]}, {"format": fmt.value}])
        fanout_of(client).deliver([EVENTS["trade", "KRW-ETH"], EVENTS["ticker", "KRW-BTC"]])
        assert client.received() == [expected(EVENTS["trade", "KRW-ETH"], fmt)]


def test_nobody_unsubscribed_or_closing_is_sent_anything() -> None:
    unsubscribed = Recorder()
    closing = Recorder([{"type": "ticker", "codes": ["KRW-BTC"]}])
    closing.closing = True
    fanout = fanout_of(unsubscribed, closing)
    fanout.deliver(list(EVENTS.values()))
    assert unsubscribed.out == closing.out == []
    assert fanout.take_dirty() == []
    assert fanout.frames_sent == 0


def test_one_frame_built_once_is_shared_by_connections_in_the_same_format() -> None:
    ticker = [{"type": "ticker", "codes": ["KRW-BTC"]}]
    a, b = Recorder(ticker), Recorder(ticker)
    simple = Recorder([*ticker, {"format": "SIMPLE"}])
    compressed = Recorder(ticker, raw=False)
    fanout_of(a, b, simple, compressed).deliver([EVENTS["ticker", "KRW-BTC"]])
    assert a.out[0] is b.out[0]  # the same framed bytes object
    assert simple.out[0] != a.out[0]
    assert compressed.out == [a.payloads()[0]]  # unframed: websockets compresses it per socket


def test_orderbook_depths_and_levels_each_get_their_own_cut() -> None:
    asked: list[tuple[Stream, int]] = []
    grouped = {"type": "orderbook", "code": "KRW-BTC", "level": 10000, "orderbook_units": []}

    def book_at(stream: Stream, stamp: int) -> Mapping[str, Any]:
        asked.append((stream, stamp))
        return grouped

    full = Recorder([{"type": "orderbook", "codes": ["KRW-BTC"]}])
    both = Recorder([{"type": "orderbook", "codes": ["KRW-BTC.5", "KRW-BTC.1"]}])
    level = Recorder([{"type": "orderbook", "codes": ["KRW-BTC.15"], "level": 10000}])
    fanout: Fanout[Recorder] = Fanout(book_at=book_at)
    fanout.rebuild([full, both, level])
    event = EVENTS["orderbook", "KRW-BTC"]
    fanout.deliver([event])

    assert isinstance(event[2], tuple)  # a row of 30 units, as the generator makes it
    book = ROW_SPECS["orderbook"].payload(event[2])
    assert len(book["orderbook_units"]) == 30
    assert full.received() == [expected(event, Format.DEFAULT)]
    five, one = both.received()
    for got, depth in ((five, 5), (one, 1)):
        units = book["orderbook_units"][:depth]
        assert len(got["orderbook_units"]) == depth
        assert got["orderbook_units"][0]["ask_price"] == float(units[0]["ask_price"])
        total = sum((unit["bid_size"] for unit in units), Decimal(0))
        assert Decimal(str(got["total_bid_size"])) == total
    assert asked == [(Stream("orderbook", "KRW-BTC", 15, 10000), book["timestamp"])]
    assert level.received()[0]["level"] == 10000


def test_only_private_subscribers_get_their_private_events() -> None:
    orders_btc = Recorder([{"type": "myOrder", "codes": ["KRW-BTC"]}])
    orders_all = Recorder([{"type": "myOrder"}, {"format": "SIMPLE"}])
    assets = Recorder([{"type": "myAsset"}])
    public = Recorder([{"type": "ticker", "codes": ["KRW-BTC"]}])
    fanout = fanout_of(orders_btc, orders_all, assets, public)
    order: dict[str, Any] = {"type": "myOrder", "code": "KRW-ETH", "volume": Decimal("0.5")}
    asset: dict[str, Any] = {"type": "myAsset", "assets": [{"currency": "KRW"}]}
    fanout.deliver_private(
        [("myOrder", "KRW-ETH", order), ("myAsset", None, asset), ("myOrder", "KRW-BTC", order)]
    )
    assert [frame["code"] for frame in orders_btc.received()] == ["KRW-ETH"]  # the payload's
    assert len(orders_btc.out) == 1
    assert [frame["ty"] for frame in orders_all.received()] == ["myOrder", "myOrder"]
    assert [frame["type"] for frame in assets.received()] == ["myAsset"]
    assert public.out == []


@pytest.mark.parametrize(
    ("request_", "frames"),
    [
        pytest.param(
            [
                {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
                {"type": "trade", "codes": ["KRW-BTC"]},
            ],
            [("ticker", "KRW-BTC"), ("ticker", "KRW-ETH"), ("trade", "KRW-BTC")],
            id="request-order",
        ),
        pytest.param(
            [{"type": "ticker", "codes": ["KRW-BTC"], "is_only_realtime": True}],
            [],
            id="only-realtime-has-none",
        ),
        pytest.param(
            [{"type": "ticker", "codes": ["KRW-BTC"], "is_only_snapshot": True}],
            [("ticker", "KRW-BTC")],
            id="only-snapshot",
        ),
        pytest.param(
            [{"type": "trade", "codes": ["KRW-XRP", "KRW-BTC"]}],
            [("trade", "KRW-BTC")],
            id="no-data-yet-no-frame",
        ),
        pytest.param(
            [{"type": "ticker", "codes": ["KRW-BTC"]}, {"format": "SIMPLE_LIST"}],
            [("ticker", "KRW-BTC")],
            id="simple-list",
        ),
    ],
)
def test_snapshot_frames_answer_a_request(
    request_: list[dict[str, Any]], frames: list[tuple[str, str]]
) -> None:
    client = Recorder(request_)
    assert client.subscription is not None
    fmt = client.subscription.format
    payloads = {
        ("ticker", "KRW-BTC"): {"code": "KRW-BTC", "trade_price": Decimal("100.5")},
        ("ticker", "KRW-ETH"): {"code": "KRW-ETH", "trade_price": Decimal(7)},
        ("trade", "KRW-BTC"): {"code": "KRW-BTC", "trade_volume": Decimal("0.1")},
    }
    got = snapshot_frames(client.subscription, lambda s: payloads.get((s.type, s.code)))
    want = []
    for type_, code in frames:
        data = render_event(type_, payloads[type_, code], "SNAPSHOT", simple=fmt.simple)
        want.append(wrap_list(data) if fmt.listed else data)
    assert got == want
    assert all(b'"SNAPSHOT"' in frame for frame in got)


def test_rebuild_names_what_the_generator_must_make() -> None:
    a = Recorder([{"type": "ticker", "codes": ["KRW-BTC"]}])
    b = Recorder([{"type": "orderbook", "codes": ["KRW-ETH.5"], "is_only_snapshot": True}])
    fanout: Fanout[Recorder] = Fanout(book_at=no_levels)
    assert fanout.rebuild([a, b])
    assert fanout.generated_codes == {"KRW-BTC"}  # a snapshot needs no generated events
    assert fanout.generated_types == {"ticker"}
    assert not fanout.rebuild([a, b])  # nothing changed
    assert fanout.rebuild([a, b], always=["KRW-XRP"])  # resting orders, trading markets
    assert fanout.generated_codes == {"KRW-BTC", "KRW-XRP"}
    assert fanout.generated_types == {"ticker", "trade"}
    assert fanout.watched_codes == {"KRW-BTC"}
    a.closing = True
    assert fanout.rebuild([a, b])
    assert fanout.generated_codes == fanout.generated_types == frozenset()


def test_take_dirty_hands_each_connection_with_frames_once() -> None:
    ticker = [{"type": "ticker", "codes": ["KRW-BTC"]}]
    a, b, idle = Recorder(ticker), Recorder([*ticker, {"format": "SIMPLE"}]), Recorder()
    fanout = fanout_of(a, b, idle)
    fanout.deliver([EVENTS["ticker", "KRW-BTC"]] * 3)
    assert fanout.push(a, b"{}")
    assert fanout.take_dirty() == [a, b]
    assert not a.dirty
    assert not b.dirty
    assert fanout.take_dirty() == []
    a.closing = True
    assert not fanout.push(a, b"{}")
    assert fanout.take_dirty() == []
    assert fanout.frames_sent == 7


def test_a_recorded_frame_goes_to_the_streams_that_take_it() -> None:
    snapshot_line = b'{"type":"ticker","code":"KRW-BTC","stream_type":"SNAPSHOT","trade_price":1}'
    realtime_line = snapshot_line.replace(b"SNAPSHOT", b"REALTIME")
    only_snapshot = Recorder([{"type": "ticker", "codes": ["KRW-BTC"], "is_only_snapshot": True}])
    only_realtime = Recorder([{"type": "ticker", "codes": ["KRW-BTC"], "is_only_realtime": True}])
    listed = Recorder([{"type": "ticker", "codes": ["KRW-BTC"]}, {"format": "SIMPLE_LIST"}])
    fanout = fanout_of(only_snapshot, only_realtime, listed)
    for line in (snapshot_line, realtime_line):
        frame = ReplayFrame.parse(line)
        assert frame is not None
        for client in (only_snapshot, only_realtime, listed):
            fanout.offer(frame, client)
    assert [f["stream_type"] for f in only_snapshot.received()] == ["SNAPSHOT"]
    assert [f["stream_type"] for f in only_realtime.received()] == ["REALTIME"]
    assert [[f["st"] for f in frame] for frame in listed.received()] == [["SNAPSHOT"], ["REALTIME"]]
