"""The frame decoder against every real sample line, the four formats, and garbage."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import SAMPLES
from upbit_fanout.collector.decode import Frame, InvalidEvent, decode_frame, decode_frame_report
from upbit_fanout.subscriptions.errors import FrameError
from upbit_fanout.subscriptions.jsontext import RawNumber, dumps_exact
from upbit_fanout.subscriptions.upbit_fields import nested_tables, table_for


def _line(name: str, number: int) -> bytes:
    return Path(SAMPLES, name).read_text().splitlines()[number - 1].encode()


# (file, line) -> [(kind, type, code, stream_type, passthrough)], one tuple per object in the
# frame; passthrough: published as Upbit's bytes, without an exact parse (non-events: never)
EXPECTED: dict[tuple[str, int], list[tuple[str, str | None, str | None, str | None, bool]]] = {
    ("candle.jsonl", 1): [("event", "candle.1s", "KRW-BTC", "REALTIME", True)],
    ("candle.jsonl", 2): [("event", "candle.1s", "KRW-BTC", "SNAPSHOT", False)],  # SIMPLE
    ("candle.jsonl", 3): [("event", "candle.1m", "KRW-BTC", "SNAPSHOT", True)],
    ("errors.jsonl", 1): [("error", None, None, None, False)],
    ("errors.jsonl", 2): [("error", None, None, None, False)],
    ("errors.jsonl", 3): [("error", None, None, None, False)],
    ("list_subscriptions.jsonl", 1): [("list_subscriptions", None, None, None, False)],
    ("list_subscriptions.jsonl", 2): [("list_subscriptions", None, None, None, False)],
    ("myAsset.jsonl", 1): [("event", "myAsset", None, "REALTIME", True)],
    ("myAsset.jsonl", 2): [("event", "myAsset", None, "REALTIME", True)],  # JSON_LIST
    ("myOrder.jsonl", 1): [("event", "myOrder", "KRW-BTC", "REALTIME", True)],
    ("myOrder.jsonl", 2): [("event", "myOrder", "SGD-XRP", "REALTIME", True)],
    ("orderbook.jsonl", 1): [("event", "orderbook", "KRW-BTC", "SNAPSHOT", True)],
    ("orderbook.jsonl", 2): [("event", "orderbook", "KRW-BTC", "SNAPSHOT", True)],
    ("orderbook.jsonl", 3): [("event", "orderbook", "KRW-BTC", "REALTIME", True)],
    ("orderbook.jsonl", 4): [("event", "orderbook", "USDT-BTC", "SNAPSHOT", True)],
    ("orderbook.jsonl", 5): [("event", "orderbook", "KRW-BTC", "REALTIME", False)],  # SIMPLE
    ("status.jsonl", 1): [("status", None, None, None, False)],
    ("ticker.jsonl", 1): [("event", "ticker", "KRW-BTC", None, False)],  # legacy `market`
    ("ticker.jsonl", 2): [("event", "ticker", "KRW-BTC", "REALTIME", True)],
    ("ticker.jsonl", 3): [("event", "ticker", "BTC-ETH", "SNAPSHOT", True)],
    ("trade.jsonl", 1): [("event", "trade", "KRW-BTC", "SNAPSHOT", False)],  # legacy SIMPLE `mk`
    ("trade.jsonl", 2): [("event", "trade", "BTC-BCH", "SNAPSHOT", False)],
    ("trade.jsonl", 3): [("event", "trade", "KRW-BTC", "REALTIME", False)],
    ("trade.jsonl", 4): [("event", "trade", "KRW-BTC", "SNAPSHOT", True)],
    ("trade.jsonl", 5): [("event", "trade", "KRW-ETH", "SNAPSHOT", True)],
    ("trade.jsonl", 6): [("event", "trade", "KRW-ETH", "SNAPSHOT", True)],
    ("trade.jsonl", 7): [("event", "trade", "KRW-BTC", "SNAPSHOT", False)],  # SIMPLE
}


def test_every_sample_line_has_an_expectation() -> None:
    lines = {
        (path.name, number)
        for path in Path(SAMPLES).glob("*.jsonl")
        for number, text in enumerate(path.read_text().splitlines(), 1)
        if text.strip()
    }
    assert lines == set(EXPECTED)


@pytest.mark.parametrize(("name", "number"), sorted(EXPECTED))
@pytest.mark.parametrize("as_text", [False, True], ids=["binary", "text"])
def test_sample_lines_decode(name: str, number: int, as_text: bool) -> None:
    data = _line(name, number)
    frames = decode_frame(data.decode() if as_text else data)
    got = [
        (f.kind, f.type, f.code, f.stream_type, f.raw is not None and f.obj is None) for f in frames
    ]
    assert got == EXPECTED[(name, number)]
    for frame in frames:
        assert frame.raw is not None or frame.obj is not None
        # Every object's numbers survive with Upbit's exact digits, whatever shape it came in.
        expected = _number_texts(_source_objects(data)[0])
        assert Counter(_number_texts(frame.exact())) == Counter(expected)


def test_default_frames_are_kept_as_upbits_bytes() -> None:
    data = _line("orderbook.jsonl", 3)
    (frame,) = decode_frame(data)
    assert frame.raw is data  # not even copied
    assert frame.units == 2
    # ... and the exact object is there on demand, with the sample's number text.
    assert frame.exact()["orderbook_units"][0]["ask_price"] == "1.16539E8"
    assert frame.exact()["orderbook_units"][1]["ask_size"] == "0.00077720"


def test_trade_sequential_id_is_exact_beyond_2_to_the_53() -> None:
    (frame,) = decode_frame(_line("trade.jsonl", 5))
    assert frame.sequential_id == 17303368620800006
    (legacy,) = decode_frame(_line("trade.jsonl", 2))
    assert legacy.sequential_id == 15235317454810000


def test_simple_orderbook_gets_default_names_with_the_samples_digits() -> None:
    (frame,) = decode_frame(_line("orderbook.jsonl", 5))
    obj = frame.exact()
    _assert_default_names(obj, "orderbook")
    assert obj["type"] == "orderbook"
    assert obj["code"] == "KRW-BTC"
    assert obj["total_ask_size"] == "20.67627941"
    assert obj["timestamp"] == 1584263923870
    assert obj["orderbook_units"][0] == {
        "ask_price": "6727000.0",
        "ask_size": "0.4744314",
        "bid_price": "6721000.0",
        "bid_size": "0.0014551",
    }
    assert frame.units == 15
    # re-encoded text keeps the digits exactly
    text = json.loads(dumps_exact(obj), parse_float=str)
    assert text["orderbook_units"][5]["bid_size"] == "610.45535023"


def test_simple_trade_and_candle_get_default_names() -> None:
    (trade,) = decode_frame(_line("trade.jsonl", 7))
    obj = trade.exact()
    _assert_default_names(obj, "trade")
    assert obj["trade_price"] == "6759000.0"
    assert obj["sequential_id"] == 1584257228000000
    assert obj["trade_date"] == "2020-03-15"
    assert trade.sequential_id == 1584257228000000

    (candle,) = decode_frame(_line("candle.jsonl", 2))
    obj = candle.exact()
    _assert_default_names(obj, "candle.1s")
    assert obj["candle_acc_trade_volume"] == "0.00033557"
    assert obj["candle_date_time_kst"] == "2025-07-07T11:29:24"


def test_legacy_market_frames_become_type_and_code() -> None:
    (ticker,) = decode_frame(_line("ticker.jsonl", 1))
    obj = ticker.exact()
    assert list(obj)[:2] == ["type", "code"]
    assert (obj["type"], obj["code"]) == ("ticker", "KRW-BTC")
    assert "market" not in obj
    assert "stream_type" not in obj  # not invented
    assert obj["trade_status"] == "ACTIVE"  # every other field kept
    assert obj["acc_trade_price"] == "105514711074.18726000"

    (trade,) = decode_frame(_line("trade.jsonl", 1))
    obj = trade.exact()
    assert (obj["type"], obj["code"]) == ("trade", "KRW-BTC")
    assert "mk" not in obj
    assert "market" not in obj
    assert obj["prev_closing_price"] == "7429000.00000000"


def test_myasset_balance_keeps_more_than_17_digits() -> None:
    (frame,) = decode_frame(_line("myAsset.jsonl", 1))
    assert frame.exact()["assets"][0]["balance"] == "1386929.37231066771348207123"


def test_one_element_list_frame_is_published_as_the_element_itself() -> None:
    (frame,) = decode_frame(_line("myAsset.jsonl", 2))
    assert frame.raw == _line("myAsset.jsonl", 1)


def test_list_frames_give_one_frame_per_element() -> None:
    a, b = _line("trade.jsonl", 4), _line("trade.jsonl", 5)
    frames = decode_frame(b"[" + a + b" , " + b + b"]")
    assert [(f.type, f.code, f.sequential_id) for f in frames] == [
        ("trade", "KRW-BTC", 17303368620470000),
        ("trade", "KRW-ETH", 17303368620800006),
    ]
    # The elements were re-parsed exactly: writing them back gives the sample lines.
    assert [dumps_exact(f.exact()) for f in frames] == [a, b]


def test_simple_list_frame() -> None:
    simple = _line("candle.jsonl", 2)
    frames = decode_frame(b"[" + simple + b"," + simple + b"]")
    assert len(frames) == 2
    for frame in frames:
        assert frame.type == "candle.1s"
        _assert_default_names(frame.exact(), "candle.1s")


def test_a_bad_list_element_is_reported_and_the_good_ones_kept() -> None:
    good = _line("ticker.jsonl", 2)
    data = b"[" + good + b', 5, {"nothing":"here"}]'
    frames = decode_frame(data)
    assert [f.code for f in frames] == ["KRW-BTC"]
    frames, errors = decode_frame_report(data)
    assert len(frames) == 1
    assert len(errors) == 2
    assert all(isinstance(error, FrameError) for error in errors)
    with pytest.raises(FrameError):
        decode_frame(b'[5, {"nothing":"here"}]')


def test_error_status_and_list_frames_are_never_events() -> None:
    (error,) = decode_frame(_line("errors.jsonl", 1))
    assert error.kind == "error"
    assert error.error == ("INVALID_AUTH", "인증 정보가 올바르지 않습니다.")
    (error,) = decode_frame(_line("errors.jsonl", 3))  # key order swapped on the wire
    assert error.error == ("WRONG_FORMAT", "Requested using wrong format.")
    (status,) = decode_frame(b'{"status":"UP"}')
    assert (status.kind, status.obj) == ("status", {"status": "UP"})

    (listing,) = decode_frame(_line("list_subscriptions.jsonl", 1))
    assert listing.kind == "list_subscriptions"
    assert listing.obj is not None
    assert listing.obj["result"][1]["codes"] == ["KRW-BTC", "KRW-ETH"]
    simple = b'{"mthd":"LIST_SUBSCRIPTIONS","rslt":[{"ty":"ticker","cds":["KRW-BTC"]}],"tckt":"t"}'
    (listing,) = decode_frame(simple)
    assert listing.obj == {
        "method": "LIST_SUBSCRIPTIONS",
        "result": [{"type": "ticker", "codes": ["KRW-BTC"]}],
        "ticket": "t",
    }


def test_depth_suffix_in_code_is_removed() -> None:
    data = _line("orderbook.jsonl", 3).replace(b'"code":"KRW-BTC"', b'"code":"KRW-BTC.5"')
    (frame,) = decode_frame(data)
    assert frame.code == "KRW-BTC"
    assert frame.raw is None  # it needed a change, so it will be re-encoded
    assert frame.exact()["code"] == "KRW-BTC"


TRUNCATED = _line("ticker.jsonl", 2)[:-7]

MALFORMED: list[bytes | str] = [
    b"\x00\x01garbage\xfe",
    b"",
    b"   ",
    b"[]",
    b"123",
    b'"a string"',
    b"null",
    b"[1, 2]",
    '{"type":5}',
    '{"ty":["ticker"],"cd":"KRW-BTC"}',
    TRUNCATED,
    b'{"type":"ticker","code":"KRW-\xff\xfe"}',
    b'{"foo":1}',
    b"{}",
    b'{"type":"ticker"}',
    b'{"type":"ticker","code":""}',
    b'{"type":"trade","code":7}',
    b'{"type":"nope","code":"KRW-BTC"}',
    b'{"type":"orderbook","code":"KRW-BTC","orderbook_units":5}',
    b'{"type":"ticker","code":"KRW-BTC","trade_price":NaN}',
    b'{"type":"ticker","code":"KRW-BTC","trade_price":-Infinity}',
    b'{"ty":"ticker","cd":"KRW-BTC","tp":Infinity}',  # SIMPLE: renamed on the exact path
    b'[{"type":"trade","code":"KRW-BTC","trade_volume":NaN}]',
    b'{"error":5}',
    b'{"method":"SOMETHING"}',
    "[" * 100_000,
    "\ud800",
]


@pytest.mark.parametrize("data", MALFORMED, ids=lambda d: repr(d)[:40])
def test_malformed_frames_raise_frame_error_with_a_short_message(data: bytes | str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(data)
    assert len(str(info.value)) <= 200


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_any_input_gives_frames_or_frame_error(data: bytes | str) -> None:
    _frames_or_frame_error(data)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "ty", "code", "cd", "market", "mk", "sid", "obu", "error"])
            | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_any_json_gives_frames_or_frame_error(value: Any) -> None:
    _frames_or_frame_error(json.dumps(value).encode())


def _frames_or_frame_error(data: bytes | str) -> None:
    try:
        frames = decode_frame(data)
    except FrameError as exc:
        message = str(exc)
    else:
        message = ""
    assert len(message) <= 200
    if message:
        return
    assert frames
    for frame in frames:
        assert isinstance(frame, Frame)
        assert frame.kind in ("event", "error", "status", "list_subscriptions")
        if frame.kind == "event":
            assert isinstance(frame.type, str)
            assert frame.type == "myAsset" or isinstance(frame.code, str)


def _assert_default_names(obj: dict[str, Any], type_name: str) -> None:
    table = table_for(type_name)
    assert set(obj) <= set(table), set(obj) - set(table)
    for field, item_table in nested_tables(type_name).items():
        for item in obj.get(field, []):
            assert set(item) <= set(item_table)


class _Num(str):
    """A number of the source line, kept as its text."""


def _source_objects(data: bytes) -> list[Any]:
    value = json.loads(data, parse_float=_Num, parse_int=_Num)
    return value if isinstance(value, list) else [value]


def _number_texts(value: Any) -> list[str]:
    """Every number in a value (an exact parse, or a source parse) as its text."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in _number_texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _number_texts(item)]
    if type(value) is int or isinstance(value, RawNumber | _Num):
        return [str(value)]
    return []


# -- field types -----------------------------------------------------------------------------------
def _sample_lines() -> list[bytes]:
    return [
        line.encode()
        for path in sorted(Path(SAMPLES).glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_every_real_sample_frame_passes_the_field_type_check() -> None:
    for line in _sample_lines():
        frames, errors = decode_frame_report(line)
        assert errors == [], line[:80]
        assert frames


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b'{"type":"ticker","code":"KRW-BTC","trade_price":"abc"}', "ticker.trade_price"),
        (b'{"type":"ticker","code":"KRW-BTC","trade_price":null}', "ticker.trade_price"),
        (b'{"type":"ticker","code":"KRW-BTC","trade_price":true}', "ticker.trade_price"),
        (b'{"type":"ticker","code":"KRW-BTC","change":1}', "ticker.change"),
        (b'{"type":"trade","code":"KRW-BTC","sequential_id":"1"}', "trade.sequential_id"),
        (b'{"type":"trade","code":"KRW-BTC","trade_timestamp":1.5}', "trade.trade_timestamp"),
        (b'{"type":"candle.1m","code":"KRW-BTC","high_price":[]}', "candle.1m.high_price"),
        (
            b'{"type":"orderbook","code":"KRW-BTC","orderbook_units":'
            b'[{"ask_price":1,"bid_price":"x","ask_size":1,"bid_size":1}]}',
            "orderbook.orderbook_units[].bid_price",
        ),
        (
            b'{"type":"orderbook","code":"KRW-BTC","orderbook_units":[1]}',
            "orderbook.orderbook_units",
        ),
        (b'{"type":"myOrder","code":"KRW-BTC","uuid":null}', "myOrder.uuid"),
        (
            b'{"type":"myAsset","assets":[{"currency":"KRW","balance":"1"}]}',
            "myAsset.assets[].balance",
        ),
        # SIMPLE frames are checked under their DEFAULT names, after renaming
        (b'{"ty":"ticker","cd":"KRW-BTC","tp":"abc"}', "ticker.trade_price"),
    ],
)
def test_a_field_of_the_wrong_json_type_makes_an_invalid_event(frame: bytes, kind: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_frame(frame)
    assert caught.value.kind == kind
    assert "abc" not in str(caught.value)  # the message names types, never echoes payloads


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"ticker","code":"KRW-BTC","trade_price":1.5E8,"delisting_date":null}',
        b'{"type":"trade","code":"KRW-BTC","sequential_id":17877285547970000}',
        b'{"type":"myOrder","code":"KRW-BTC","uuid":"u","price":null,"trade_timestamp":null}',
        b'{"type":"ticker","code":"KRW-BTC","unknown_field":"anything"}',  # not checked
        b'{"type":"ticker","code":"KRW-BTC","is_trading_suspended":false}',  # booleans: not checked
    ],
)
def test_fields_of_the_right_type_or_absent_pass(frame: bytes) -> None:
    (decoded,) = decode_frame(frame)
    assert decoded.kind == "event"


def test_a_bad_element_of_a_list_frame_is_reported_and_the_good_ones_kept() -> None:
    frame = (
        b'[{"type":"ticker","code":"KRW-BTC","trade_price":1},'
        b'{"type":"ticker","code":"KRW-ETH","trade_price":"abc"}]'
    )
    frames, errors = decode_frame_report(frame)
    assert [f.code for f in frames] == ["KRW-BTC"]
    assert len(errors) == 1
    assert isinstance(errors[0], InvalidEvent)
    assert errors[0].kind == "ticker.trade_price"
