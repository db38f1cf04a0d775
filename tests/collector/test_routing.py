"""Routing: which topics an event feeds, depth slicing, resubscribes without duplicates."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SAMPLES
from upbit_fanout.collector.decode import Frame, InvalidEvent, decode_frame
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.subscriptions.codec import decode_event, encode_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.topics import parse_topic


def _line(name: str, number: int) -> bytes:
    return Path(SAMPLES, name).read_text().splitlines()[number - 1].encode()


def _frame(data: bytes) -> Frame:
    (frame,) = decode_frame(data)
    return frame


def _router(*topics: str, codec: Any = "json", **kwargs: Any) -> Router:
    router = Router(codec=codec, **kwargs)
    router.set_topics([parse_topic(t) for t in topics], fresh_connection=True)
    return router


def _resubscribe(router: Router, *topics: str, fresh: bool = False) -> None:
    router.set_topics([parse_topic(t) for t in topics], fresh_connection=fresh)


def _texts(data: bytes) -> Any:
    """A JSON payload with every number as its text."""
    return json.loads(data, parse_float=str, parse_int=str)


def _with_stream_type(data: bytes, stream_type: str) -> bytes:
    return data.replace(b'"stream_type":"SNAPSHOT"', f'"stream_type":"{stream_type}"'.encode())


def _trade(sid: int, stream_type: str = "REALTIME", code: str = "KRW-BTC") -> Frame:
    data = _line("trade.jsonl", 4).replace(b"17303368620470000", str(sid).encode())
    return _frame(_with_stream_type(data, stream_type).replace(b"KRW-BTC", code.encode()))


BOOK_30 = _line("orderbook.jsonl", 1)  # 30 units, SNAPSHOT


# -- where events go ------------------------------------------------------------------------


def test_json_passthrough_is_byte_identical() -> None:
    router = _router("ticker:KRW-BTC")
    data = _line("ticker.jsonl", 2)
    (item,) = router.route(_frame(data))
    assert item == Outgoing("ticker:KRW-BTC", data, "ticker")
    assert item.payload is data
    assert router.passthrough == 1
    assert router.encoded == 0


def test_orderbook_feeds_every_live_depth_with_exact_totals() -> None:
    router = _router("orderbook:KRW-BTC", "orderbook:KRW-BTC.5", "orderbook:KRW-BTC.30")
    items = {item.topic: item for item in router.route(_frame(BOOK_30))}
    assert set(items) == {"orderbook:KRW-BTC", "orderbook:KRW-BTC.5", "orderbook:KRW-BTC.30"}
    # 30 units wanted, 30 sent: Upbit's bytes, and the same object for both topics.
    assert items["orderbook:KRW-BTC"].payload is BOOK_30
    assert items["orderbook:KRW-BTC.30"].payload is BOOK_30

    source = _texts(BOOK_30)
    five = _texts(items["orderbook:KRW-BTC.5"].payload)
    assert five["orderbook_units"] == source["orderbook_units"][:5]  # digits unchanged
    asks = sum(Decimal(unit["ask_size"]) for unit in source["orderbook_units"][:5])
    bids = sum(Decimal(unit["bid_size"]) for unit in source["orderbook_units"][:5])
    assert Decimal(five["total_ask_size"]) == asks == Decimal("0.30555836")
    assert Decimal(five["total_bid_size"]) == bids
    # everything else is as Upbit sent it
    rest = {k: v for k, v in five.items() if k not in ("orderbook_units", "total_ask_size")}
    assert rest | {"total_bid_size": source["total_bid_size"]} == {
        k: v for k, v in source.items() if k not in ("orderbook_units", "total_ask_size")
    }


def test_slicing_keeps_exponent_and_trailing_zero_digits() -> None:
    router = _router("orderbook:KRW-BTC.1")
    (item,) = router.route(_frame(_line("orderbook.jsonl", 3)))  # 1.16539E8, 0.00077720
    sliced = _texts(item.payload)
    assert sliced["orderbook_units"] == [
        {
            "ask_price": "1.16539E8",
            "bid_price": "1.16538E8",
            "ask_size": "0.02054761",
            "bid_size": "0.06612366",
        }
    ]
    assert (sliced["total_ask_size"], sliced["total_bid_size"]) == ("0.02054761", "0.06612366")


def test_simple_orderbook_is_renamed_and_sliced() -> None:
    router = _router("orderbook:KRW-BTC.5", "orderbook:KRW-BTC.15")
    items = {i.topic: i for i in router.route(_frame(_line("orderbook.jsonl", 5)))}
    full = _texts(items["orderbook:KRW-BTC.15"].payload)
    assert full["total_ask_size"] == "20.67627941"  # as sent: nothing was cut
    assert len(full["orderbook_units"]) == 15
    assert full["orderbook_units"][0]["ask_price"] == "6727000.0"
    five = _texts(items["orderbook:KRW-BTC.5"].payload)
    assert len(five["orderbook_units"]) == 5
    assert Decimal(five["total_bid_size"]) == Decimal("7.42646301")


def test_myorder_goes_to_its_code_and_to_star_encoded_once() -> None:
    router = _router("myOrder:KRW-BTC", "myOrder:*")
    data = _line("myOrder.jsonl", 1)
    specific, every = router.route(_frame(data))
    assert (specific.topic, every.topic) == ("myOrder:KRW-BTC", "myOrder:*")
    assert specific.payload is every.payload is data
    assert specific.private
    assert every.private
    assert (specific.stream, every.stream) == (True, False)  # one durable copy per event
    # another market's order reaches only myOrder:*
    (other,) = router.route(_frame(_line("myOrder.jsonl", 2)))
    assert (other.topic, other.stream) == ("myOrder:*", True)


def test_myorder_of_an_unwanted_market_and_myasset() -> None:
    router = _router("myOrder:KRW-BTC", "myAsset")
    assert router.route(_frame(_line("myOrder.jsonl", 2))) == []  # SGD-XRP
    assert router.unrouted == 1
    (asset,) = router.route(_frame(_line("myAsset.jsonl", 2)))
    assert (asset.topic, asset.type, asset.private) == ("myAsset", "myAsset", True)
    assert _texts(asset.payload)["assets"][0]["balance"] == "1386929.37231066771348207123"


def test_events_for_no_live_topic_are_counted_and_dropped() -> None:
    router = _router("ticker:KRW-BTC")
    assert router.route(_frame(_line("ticker.jsonl", 3))) == []  # BTC-ETH
    assert router.route(_frame(BOOK_30)) == []
    assert router.route(_trade(1)) == []
    assert router.unrouted == 3
    assert router.outgoing == 0


def test_non_event_frames_route_nowhere() -> None:
    router = _router("ticker:KRW-BTC")
    assert router.route(_frame(b'{"status":"UP"}')) == []
    assert router.route(_frame(_line("errors.jsonl", 1))) == []
    assert router.unrouted == 0


def test_simple_and_legacy_frames_are_published_with_default_names() -> None:
    router = _router("trade:KRW-BTC", "ticker:KRW-BTC", "candle.1s:KRW-BTC")
    (trade,) = router.route(_frame(_line("trade.jsonl", 7)))
    assert _texts(trade.payload)["trade_price"] == "6759000.0"
    (ticker,) = router.route(_frame(_line("ticker.jsonl", 1)))
    obj = _texts(ticker.payload)
    assert (obj["type"], obj["code"], obj["acc_trade_price"]) == (
        "ticker",
        "KRW-BTC",
        "105514711074.18726000",
    )
    assert "market" not in obj
    (candle,) = router.route(_frame(_line("candle.jsonl", 2)))
    assert _texts(candle.payload)["candle_acc_trade_price"] == "49999.93"
    assert router.encoded == 3


@pytest.mark.parametrize(
    ("topics", "data"),
    [
        (("orderbook:KRW-BTC", "orderbook:KRW-BTC.5"), BOOK_30),
        (("ticker:KRW-BTC",), _line("ticker.jsonl", 2)),
        (("myAsset",), _line("myAsset.jsonl", 1)),
        (("trade:KRW-BTC",), _line("trade.jsonl", 7)),
        (("orderbook:KRW-BTC.1",), _line("orderbook.jsonl", 3)),
    ],
)
def test_msgpack_payloads_decode_to_the_same_values_and_digits(
    topics: tuple[str, ...], data: bytes
) -> None:
    json_items = _router(*topics).route(_frame(data))
    packed_items = _router(*topics, codec="msgpack").route(_frame(data))
    assert [i.topic for i in packed_items] == [i.topic for i in json_items]
    for as_json, as_msgpack in zip(json_items, packed_items, strict=True):
        assert as_msgpack.payload[:1] != b"{"
        from_json = decode_event(as_json.payload)
        from_msgpack = decode_event(as_msgpack.payload)
        assert from_msgpack == from_json
        assert _digits(from_msgpack) == _digits(from_json)  # 0.00077720 is not 0.0007772


# -- resubscribes ---------------------------------------------------------------------------


def test_resubscribe_suppresses_repeated_snapshots_and_new_topics_get_theirs() -> None:
    btc_snapshot = _line("ticker.jsonl", 2).replace(b"REALTIME", b"SNAPSHOT")
    eth_snapshot = _line("ticker.jsonl", 3)  # BTC-ETH SNAPSHOT
    router = _router("ticker:KRW-BTC")
    assert len(router.route(_frame(btc_snapshot))) == 1
    assert len(router.route(_frame(_line("ticker.jsonl", 2)))) == 1  # realtime

    _resubscribe(router, "ticker:KRW-BTC", "ticker:BTC-ETH")
    assert router.route(_frame(btc_snapshot)) == []  # already live and delivering
    assert router.dropped_snapshots == 1
    assert len(router.route(_frame(_line("ticker.jsonl", 2)))) == 1  # realtime still flows
    assert len(router.route(_frame(eth_snapshot))) == 1  # the new topic gets its snapshot
    assert router.route(_frame(eth_snapshot)) == []  # ... once per subscribe message
    assert router.dropped_snapshots == 2


def test_resubscribe_of_orderbook_depths_is_decided_per_topic() -> None:
    router = _router("orderbook:KRW-BTC")
    assert len(router.route(_frame(BOOK_30))) == 1
    _resubscribe(router, "orderbook:KRW-BTC", "orderbook:KRW-BTC.5")
    (item,) = router.route(_frame(BOOK_30))  # the re-sent SNAPSHOT
    assert item.topic == "orderbook:KRW-BTC.5"
    assert len(_texts(item.payload)["orderbook_units"]) == 5


def test_a_topic_dropped_and_wanted_again_gets_a_snapshot() -> None:
    snapshot = _line("ticker.jsonl", 3)
    router = _router("ticker:BTC-ETH")
    assert len(router.route(_frame(snapshot))) == 1
    _resubscribe(router, "ticker:KRW-BTC")
    assert router.route(_frame(_with_stream_type(snapshot, "REALTIME"))) == []  # in flight
    assert router.unrouted == 1
    _resubscribe(router, "ticker:KRW-BTC", "ticker:BTC-ETH")
    assert len(router.route(_frame(snapshot))) == 1


def test_fresh_connection_lets_snapshots_through() -> None:
    snapshot = _line("ticker.jsonl", 3)
    router = _router("ticker:BTC-ETH")
    assert len(router.route(_frame(snapshot))) == 1
    _resubscribe(router, "ticker:BTC-ETH", fresh=True)
    assert len(router.route(_frame(snapshot))) == 1
    assert router.dropped_snapshots == 0


def test_trades_are_deduplicated_across_resubscribes_and_reconnects() -> None:
    router = _router("trade:KRW-BTC")
    assert len(router.route(_trade(100, "SNAPSHOT"))) == 1
    assert len(router.route(_trade(101))) == 1
    _resubscribe(router, "trade:KRW-BTC", "trade:KRW-ETH")
    assert router.route(_trade(101, "SNAPSHOT")) == []  # the re-sent latest trade
    assert len(router.route(_trade(101, "SNAPSHOT", code="KRW-ETH"))) == 1  # per code
    _resubscribe(router, "trade:KRW-BTC", "trade:KRW-ETH", fresh=True)
    assert router.route(_trade(101, "SNAPSHOT")) == []  # even on a new connection
    assert router.duplicate_trades >= 2
    assert len(router.route(_trade(102))) == 1


def test_dedupe_memory_is_bounded() -> None:
    router = _router("trade:KRW-BTC", dedupe_window=3)
    for sid in range(1, 6):
        assert len(router.route(_trade(sid))) == 1
    assert router.route(_trade(5)) == []  # remembered
    assert len(router.route(_trade(1))) == 1  # forgotten: only the last 3 ids are kept


def test_counters() -> None:
    router = _router("ticker:KRW-BTC")
    router.route(_frame(_line("ticker.jsonl", 2)))
    router.route(_frame(_line("ticker.jsonl", 3)))
    counters = router.counters()
    assert counters["events"] == 2
    assert counters["outgoing"] == 1
    assert counters["unrouted"] == 1
    assert router.topics == frozenset({"ticker:KRW-BTC"})


def test_a_malformed_orderbook_unit_is_counted_not_raised() -> None:
    # The decoder refuses such a frame (test_decode); the router still copes with one built
    # without it.
    data = BOOK_30.replace(b'"ask_size":0.10623869', b'"ask_size":"oops"')
    with pytest.raises(InvalidEvent):
        decode_frame(data)
    good = _frame(BOOK_30)
    frame = Frame("event", "orderbook", good.code, good.stream_type, data, None, None, None, 30)
    router = _router("orderbook:KRW-BTC", "orderbook:KRW-BTC.5")
    items = router.route(frame)
    assert [i.topic for i in items] == ["orderbook:KRW-BTC"]
    assert router.encode_errors == 1


def _digits(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _digits(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_digits(item) for item in value]
    if isinstance(value, Decimal):
        return value.as_tuple()
    return value


def _sample_events() -> list[bytes]:
    lines = [
        line.encode()
        for path in sorted(Path(SAMPLES).glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    return [data for data in lines if all(f.kind == "event" for f in decode_frame(data))]


@pytest.mark.parametrize("data", _sample_events(), ids=lambda d: d[:30].decode())
def test_msgpack_payload_is_exactly_what_the_codec_writes(data: bytes) -> None:
    # Unchanged DEFAULT objects take a fast path (numbers packed while parsing); it must write
    # the very bytes subscriptions.codec writes from the exact object.
    (frame,) = decode_frame(data)
    passthrough = frame.obj is None
    expected = encode_event(loads_exact(frame.raw) if frame.raw else frame.exact(), "msgpack")
    if frame.type == "myAsset":
        topic = "myAsset"
    elif frame.type == "myOrder":
        topic = "myOrder:*"
    else:
        topic = f"{frame.type}:{frame.code}"
    router = Router(codec="msgpack")
    router.set_topics([parse_topic(topic)], fresh_connection=True)
    (item,) = router.route(frame)
    assert item.payload == expected
    if passthrough:
        assert frame.obj is None  # packed straight from Upbit's bytes, no RawNumber object


def test_grouped_books_feed_only_the_topics_of_their_level() -> None:
    grouped_line = _with_stream_type(_line("orderbook.jsonl", 2), "REALTIME")
    grouped = _frame(grouped_line)  # KRW-BTC at level 10000, 30 units
    plain = _frame(_with_stream_type(BOOK_30, "REALTIME"))  # level 0
    router = _router("orderbook:KRW-BTC.5", "orderbook:KRW-BTC@10000", "orderbook:KRW-BTC.5@10000")
    assert sorted(item.topic for item in router.route(grouped)) == [
        "orderbook:KRW-BTC.5@10000",
        "orderbook:KRW-BTC@10000",
    ]
    sliced = next(i for i in router.route(grouped) if i.topic.endswith(".5@10000"))
    assert len(json.loads(sliced.payload)["orderbook_units"]) == 5
    assert [item.topic for item in router.route(plain)] == ["orderbook:KRW-BTC.5"]
    # a level nobody asked for (a grouped book in flight after a resubscribe) goes nowhere
    other = _frame(grouped_line.replace(b'"level":10000', b'"level":1000'))
    assert router.route(other) == []
    assert router.unrouted == 1
    # a float level is the same level
    floated = _frame(grouped_line.replace(b'"level":10000', b'"level":10000.0'))
    assert len(router.route(floated)) == 2


def test_codes_without_level_topics_never_look_at_the_level() -> None:
    router = _router("orderbook:KRW-BTC")
    grouped = _frame(_line("orderbook.jsonl", 2))
    # nobody wants a grouped book of KRW-BTC: the frame goes to the plain topic as before
    assert [item.topic for item in router.route(grouped)] == ["orderbook:KRW-BTC"]
