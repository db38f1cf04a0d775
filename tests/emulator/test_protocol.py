"""The emulator's pure protocol core, from tables (no sockets, no event loop)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.emulator.markets import default_markets
from upbit_fanout.emulator.protocol import (
    PING,
    ConnectLimiter,
    Format,
    ListRequest,
    RequestError,
    RowSpec,
    SlidingWindow,
    Stream,
    SubscribeRequest,
    compile_subscription,
    dumps_fast,
    error_frame,
    frame_binary,
    parse_request,
    render_event,
    render_list_subscriptions,
    render_row,
    split_depth,
    without_code,
    wrap_list,
)
from upbit_fanout.emulator.simulation import ROW_SPECS, MarketSimulator
from upbit_fanout.subscriptions.jsontext import RawNumber, dumps_exact, loads_exact
from upbit_fanout.subscriptions.upbit_fields import to_simple

KNOWN = {"KRW-BTC", "KRW-ETH", "BTC-ETH", "USDT-BTC"}


def parse(obj: Any, *, private: bool = False) -> Any:
    return parse_request(json.dumps(obj), private=private)


def compile_(obj: Any) -> Any:
    request = parse(obj)
    assert isinstance(request, SubscribeRequest)
    return compile_subscription(request, is_known=KNOWN.__contains__)


T = {"ticket": "t"}
BAD = "INVALID_PARAM"


@pytest.mark.parametrize(
    ("message", "private", "name"),
    [
        ("hello", False, "WRONG_FORMAT"),
        ('{"ticket":"t"}', False, "WRONG_FORMAT"),
        ('[{"ticket":"t"}, "ticker"]', False, "WRONG_FORMAT"),
        (b"\xff\xfe", False, "WRONG_FORMAT"),
        # NaN and Infinity are not JSON numbers (Python's json would take them)
        ('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"],"level":NaN}]', False, "WRONG_FORMAT"),  # noqa: E501
        ('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"],"level":-Infinity}]', False, "WRONG_FORMAT"),  # noqa: E501
        ("[]", False, "NO_TICKET"),
        ('[{"type":"ticker","codes":["KRW-BTC"]}]', False, "NO_TICKET"),
        ('[{"ticket":""},{"type":"ticker","codes":["KRW-BTC"]}]', False, "NO_TICKET"),
        ('[{"ticket":null},{"type":"ticker","codes":["KRW-BTC"]}]', False, "NO_TICKET"),
        ('[{"ticket":"t"}]', False, "NO_TYPE"),
        ('[{"ticket":"t"},{"codes":["KRW-BTC"]}]', False, "NO_TYPE"),
        ('[{"ticket":"t"},{"type":"ticker"}]', False, "NO_CODES"),
        ('[{"ticket":"t"},{"type":"trade","codes":[]}]', False, "NO_CODES"),
        ('[{"ticket":"t"},{"type":"nope","codes":["KRW-BTC"]}]', False, "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"candle.2m","codes":["KRW-BTC"]}]', False, "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"myOrder"}]', False, "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"ticker","codes":["KRW-BTC"]}]', True, "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"ticker","codes":"KRW-BTC"}]', False, "INVALID_PARAM"),
        (
            '[{"ticket":"t"},{"type":"ticker","codes":["KRW-BTC"],"is_only_snapshot":"true"}]',
            False,
            "INVALID_PARAM",
        ),
        (
            '[{"ticket":"t"},{"type":"ticker","codes":["KRW-BTC"],"isOnlyRealtime":1}]',
            False,
            "INVALID_PARAM",
        ),
        ('[{"ticket":"t"},{"type":"ticker","codes":["KRW-BTC"]},{"format":"XML"}]', False, BAD),
        ('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"],"level":-1}]', False, BAD),
        ('[{"ticket":"t"},{"type":"orderbook","codes":["KRW-BTC"],"level":"x"}]', False, BAD),
        ('[{"ticket":"t"},{"method":"SUBSCRIBE"}]', False, "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"myAsset","codes":["KRW-BTC"]}]', True, "WRONG_FORMAT"),
        ('[{"ticket":"t"},{"type":"myAsset","codes":[]}]', True, "WRONG_FORMAT"),
    ],
)  # fmt: skip
def test_bad_requests_get_upbits_error_name(message: str | bytes, private: bool, name: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(message, private=private)
    assert caught.value.name == name
    frame = json.loads(caught.value.frame())
    assert frame == {"error": {"name": name, "message": caught.value.message}}
    assert caught.value.message  # a Korean (or English) sentence, never empty


def test_korean_messages_match_the_korea_host() -> None:
    with pytest.raises(RequestError) as caught:
        parse([{"type": "ticker"}])
    assert caught.value.message == "티켓이 존재하지 않거나, 유효하지 않습니다."
    with pytest.raises(RequestError) as caught:
        parse([T, {"type": "nope", "codes": ["KRW-BTC"]}])
    assert caught.value.message == "nope 은 지원하지 않는 타입입니다."
    assert json.loads(error_frame("WRONG_FORMAT"))["error"]["message"] == "Format 이 맞지 않습니다."


def test_text_ping_is_not_a_json_error() -> None:
    assert parse_request("PING", private=False) is PING
    assert parse_request(b"PING", private=True) is PING


@pytest.mark.parametrize(
    "request_",
    [
        [{"format": "SIMPLE"}, {"ticket": "t"}, {"type": "ticker", "codes": ["KRW-BTC"]}],
        [{"ticket": "t"}, {"format": "SIMPLE"}, {"type": "ticker", "codes": ["KRW-BTC"]}],
        [{"ticket": "t"}, {"type": "ticker", "codes": ["KRW-BTC"]}, {"format": "SIMPLE"}],
    ],
)
def test_object_order_after_the_ticket_is_tolerated(request_: Any) -> None:
    parsed = parse(request_)
    assert isinstance(parsed, SubscribeRequest)
    assert parsed.format is Format.SIMPLE
    assert [t.type for t in parsed.types] == ["ticker"]


def test_missing_format_is_default_and_integer_ticket_is_accepted() -> None:
    sub = compile_([{"ticket": 42}, {"type": "trade", "codes": ["KRW-BTC"]}])
    assert sub.format is Format.DEFAULT
    assert sub.ticket == 42


@pytest.mark.parametrize(
    ("flags", "snapshot", "realtime"),
    [
        ({}, True, True),
        ({"is_only_snapshot": True}, True, False),
        ({"isOnlySnapshot": True}, True, False),
        ({"is_only_realtime": True}, False, True),
        ({"isOnlyRealtime": True}, False, True),
        ({"is_only_realtime": False, "isOnlyRealtime": True}, True, True),
        ({"is_only_snapshot": True, "is_only_realtime": True}, False, False),
    ],
)
def test_snapshot_and_realtime_flags_in_both_spellings(
    flags: dict[str, bool], snapshot: bool, realtime: bool
) -> None:
    sub = compile_([T, {"type": "ticker", "codes": ["KRW-BTC"], **flags}])
    assert (Stream("ticker", "KRW-BTC") in sub.snapshots) is snapshot
    assert (("ticker", "KRW-BTC") in sub.realtime) is realtime
    assert sub.replay[("ticker", "KRW-BTC")] == (snapshot, realtime)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("KRW-BTC", ("KRW-BTC", 30)),
        ("KRW-BTC.1", ("KRW-BTC", 1)),
        ("KRW-BTC.5", ("KRW-BTC", 5)),
        ("KRW-BTC.15", ("KRW-BTC", 15)),
        ("KRW-BTC.30", ("KRW-BTC", 30)),
        ("KRW-BTC.20", ("KRW-BTC", 30)),
        ("KRW-BTC.2", ("KRW-BTC", 30)),
        ("KRW-BTC.abc", ("KRW-BTC", 30)),
        ("KRW-BTC.", ("KRW-BTC", 30)),
    ],
)
def test_depth_suffix(code: str, expected: tuple[str, int]) -> None:
    assert split_depth(code) == expected


def test_unknown_lower_case_codes_are_dropped_silently() -> None:
    sub = compile_([T, {"type": "ticker", "codes": ["krw-btc", "KRW-NOPE", "KRW-ETH"]}])
    assert set(sub.realtime) == {("ticker", "KRW-ETH")}
    assert [s.code for s in sub.snapshots] == ["KRW-ETH"]
    # ... but LIST_SUBSCRIPTIONS shows what was asked
    assert sub.listing == ({"type": "ticker", "codes": ["krw-btc", "KRW-NOPE", "KRW-ETH"]},)


def test_same_code_at_two_depths_is_served_at_both_and_duplicates_merge() -> None:
    sub = compile_(
        [
            T,
            {"type": "orderbook", "codes": ["KRW-BTC.5", "KRW-ETH"]},
            {"type": "orderbook", "codes": ["KRW-BTC.15", "KRW-BTC.5"]},
            {"type": "ticker", "codes": ["KRW-BTC"]},
            {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
        ]
    )
    assert sub.realtime[("orderbook", "KRW-BTC")] == (
        Stream("orderbook", "KRW-BTC", 5, 0),
        Stream("orderbook", "KRW-BTC", 15, 0),
    )
    assert sub.realtime[("ticker", "KRW-BTC")] == (Stream("ticker", "KRW-BTC"),)
    assert sub.snapshots == (
        Stream("orderbook", "KRW-BTC", 5, 0),
        Stream("orderbook", "KRW-ETH", 30, 0),
        Stream("orderbook", "KRW-BTC", 15, 0),
        Stream("ticker", "KRW-BTC"),
        Stream("ticker", "KRW-ETH"),
    )
    assert sub.listing == (
        {"type": "orderbook", "codes": ["KRW-BTC.5", "KRW-ETH", "KRW-BTC.15"], "level": 0},
        {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
    )


def test_level_is_honoured_on_krw_pairs_only() -> None:
    sub = compile_([T, {"type": "orderbook", "codes": ["KRW-BTC", "USDT-BTC"], "level": 10000}])
    assert sub.realtime == {("orderbook", "KRW-BTC"): (Stream("orderbook", "KRW-BTC", 30, 10000),)}
    sub = compile_([T, {"type": "orderbook", "codes": ["USDT-BTC"], "level": 0}])
    assert ("orderbook", "USDT-BTC") in sub.realtime
    sub = compile_([T, {"type": "orderbook", "codes": ["KRW-BTC"], "level": "0.5"}])
    assert sub.realtime[("orderbook", "KRW-BTC")][0].level == Decimal("0.5")


def test_private_types() -> None:
    request = parse([T, {"type": "myOrder"}, {"type": "myAsset"}], private=True)
    assert isinstance(request, SubscribeRequest)
    sub = compile_subscription(request, is_known=KNOWN.__contains__)
    assert sub.my_order == frozenset()
    assert sub.my_asset
    assert sub.wants("myOrder", "KRW-XRP")
    assert sub.wants("myAsset", None)
    assert not sub.realtime
    assert not sub.snapshots
    request = parse([T, {"type": "myOrder", "codes": ["KRW-BTC"]}], private=True)
    assert isinstance(request, SubscribeRequest)
    sub = compile_subscription(request, is_known=KNOWN.__contains__)
    assert sub.wants("myOrder", "KRW-BTC")
    assert not sub.wants("myOrder", "KRW-ETH")
    assert not sub.wants("myAsset", None)
    request = parse([T, {"type": "myOrder", "codes": []}], private=True)
    assert isinstance(request, SubscribeRequest)
    assert compile_subscription(request, is_known=KNOWN.__contains__).wants("myOrder", "X-Y")


def test_list_subscriptions_request_and_answer() -> None:
    request = parse([{"ticket": "q"}, {"method": "LIST_SUBSCRIPTIONS"}, {"format": "SIMPLE"}])
    assert request == ListRequest(ticket="q", format=Format.SIMPLE)
    two = ["KRW-BTC", "KRW-ETH"]
    listing = compile_(
        [T, {"type": "ticker", "codes": two}, {"type": "orderbook", "codes": two}]
    ).listing
    default = json.loads(render_list_subscriptions(listing, "unique uuid", Format.DEFAULT))
    # the first line of upbit-samples/list_subscriptions.jsonl, exactly
    assert default == {
        "method": "LIST_SUBSCRIPTIONS",
        "result": [
            {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
            {"type": "orderbook", "codes": ["KRW-BTC", "KRW-ETH"], "level": 0},
        ],
        "ticket": "unique uuid",
    }
    simple = json.loads(render_list_subscriptions(listing, "q", Format.SIMPLE_LIST))
    assert simple == {
        "mthd": "LIST_SUBSCRIPTIONS",
        "rslt": [
            {"ty": "ticker", "cds": ["KRW-BTC", "KRW-ETH"]},
            {"ty": "orderbook", "cds": ["KRW-BTC", "KRW-ETH"], "lv": 0},
        ],
        "tckt": "q",
    }


def test_render_event_in_simple_keys_with_nested_units_and_exact_numbers() -> None:
    payload = {
        "type": "orderbook",
        "code": "KRW-BTC",
        "timestamp": 1,
        "total_ask_size": Decimal("0.00077720"),
        "total_bid_size": Decimal("1.5"),
        "orderbook_units": [
            {"ask_price": Decimal("1.16539E+8"), "bid_price": 1, "ask_size": 2, "bid_size": 3}
        ],
        "level": 0,
    }
    default = render_event("orderbook", payload, "SNAPSHOT", simple=False)
    assert list(json.loads(default)) == [
        "type", "code", "timestamp", "total_ask_size", "total_bid_size", "orderbook_units",
        "stream_type", "level",
    ]  # fmt: skip
    assert b'"total_ask_size":0.00077720' in default
    simple = json.loads(render_event("orderbook", payload, "REALTIME", simple=True))
    assert simple["obu"] == [{"ap": 1.16539e8, "bp": 1, "as": 2, "bs": 3}]
    assert simple["st"] == "REALTIME"
    assert simple["tas"] == 0.0007772
    assert simple["lv"] == 0
    asset = {"type": "myAsset", "assets": [{"currency": "KRW", "balance": 1, "locked": 0}]}
    simple_asset = json.loads(render_event("myAsset", asset, "REALTIME", simple=True))
    assert simple_asset == {
        "ty": "myAsset",
        "ast": [{"cu": "KRW", "b": 1, "l": 0}],
        "st": "REALTIME",
    }
    assert wrap_list(b'{"a":1}', b'{"b":2}') == b'[{"a":1},{"b":2}]'


def test_sliding_window_is_five_per_second_and_hundred_per_minute() -> None:
    window = SlidingWindow([(5, 1.0), (100, 60.0)])
    assert all(window.try_acquire(0.1 * i) for i in range(5))
    assert not window.try_acquire(0.5)
    assert window.try_acquire(1.01)  # the first one left the one-second window
    # a steady 4 per second passes the per-second limit but hits 100 per minute
    window = SlidingWindow([(5, 1.0), (100, 60.0)])
    times = [0.25 * i for i in range(100)]
    assert all(window.try_acquire(t) for t in times)
    assert not window.try_acquire(25.0)
    assert window.try_acquire(60.01)
    assert SlidingWindow([(0, 1.0)]).try_acquire(0.0)  # a limit of 0 is off


def test_connect_limiter_is_per_address() -> None:
    limiter = ConnectLimiter(5)
    assert all(limiter.try_acquire("a", 0.0) for _ in range(5))
    assert not limiter.try_acquire("a", 0.5)
    assert limiter.remaining("a", 0.5) == 0
    assert limiter.try_acquire("b", 0.5)
    assert limiter.try_acquire("a", 1.5)
    assert ConnectLimiter(0).try_acquire("a", 0.0)


def test_replayed_numbers_keep_their_text() -> None:
    obj = loads_exact(b'{"type":"trade","trade_price":1.16539E8,"trade_volume":8.428e-05}')
    assert to_simple("trade", obj) == {"ty": "trade", "tp": "1.16539E8", "tv": "8.428e-05"}


_numbers = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(alphabet="0123456789", min_size=1, max_size=5).map(lambda s: RawNumber(s + ".10")),
)
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(max_size=5), _numbers),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), _values, max_size=6))
def test_dumps_fast_writes_exactly_what_dumps_exact_writes(obj: dict[str, Any]) -> None:
    assert dumps_fast(obj) == dumps_exact(obj)


def test_rendered_simulator_events_equal_the_reference_writer() -> None:
    markets = [m for m in default_markets() if m.code in {"KRW-BTC", "KRW-ETH", "USDT-BTC"}]
    sim = MarketSimulator(markets, seed=3, now_ms=1_790_000_000_000)
    events = sim.next_events(
        frozenset(m.code for m in markets), now_ms=1_790_000_000_100, max_events=300
    )
    assert {e[0] for e in events} >= {"ticker", "trade", "orderbook"}
    for type_, _, payload in events:
        for simple in (False, True):
            obj = {k: v for k, v in payload.items() if k != "level"}
            obj["stream_type"] = "REALTIME"
            if "level" in payload:
                obj["level"] = payload["level"]
            expected = dumps_exact(to_simple(type_, obj) if simple else obj)
            assert render_event(type_, payload, "REALTIME", simple=simple) == expected


def test_rows_are_written_exactly_as_their_payloads_in_every_format() -> None:
    # The firehose writes trades, tickers and books from rows (tuples of number text) through
    # templates; a client must not be able to tell them from the dicts' frames.
    markets = [m for m in default_markets() if m.code in {"KRW-BTC", "KRW-ETH", "BTC-ETH"}]
    sim = MarketSimulator(markets, seed=11, now_ms=1_790_000_000_000)
    seen: set[str] = set()
    for step in range(40):
        rows = sim.next_rows(
            frozenset(m.code for m in markets), now_ms=1_790_000_000_000 + 40 * step, max_events=60
        )
        for type_, _, row in rows:
            if not isinstance(row, tuple):
                continue  # candles stay dicts
            seen.add(type_)
            payload = ROW_SPECS[type_].payload(row)
            for stream_type in ("REALTIME", "SNAPSHOT"):
                for simple in (False, True):
                    written = render_row(ROW_SPECS[type_], row, stream_type, simple=simple)
                    assert written == render_event(type_, payload, stream_type, simple=simple)
    assert seen == {"trade", "ticker", "orderbook"}


def test_row_templates_escape_and_place_constants() -> None:
    spec = RowSpec(
        "trade",
        (
            ("type", "const", "trade"),
            ("code", "json", None),
            ("note", "const", "100%"),
            ("trade_price", "num", None),
            ("sequential_id", "int", None),
        ),
        tail=(("level", 0),),
    )
    row = ('"KRW-\\"X"', "0.50", 7)
    assert json.loads(render_row(spec, row, "REALTIME", simple=False)) == {
        "type": "trade",
        "code": 'KRW-"X',
        "note": "100%",
        "trade_price": 0.5,
        "sequential_id": 7,
        "stream_type": "REALTIME",
        "level": 0,
    }
    assert spec.payload(row) == {
        "type": "trade",
        "code": 'KRW-"X',
        "note": "100%",
        "trade_price": Decimal("0.50"),
        "sequential_id": 7,
        "level": 0,
    }
    simple = json.loads(render_row(spec, row, "REALTIME", simple=True))
    assert (simple["ty"], simple["tp"], simple["st"]) == ("trade", 0.5, "REALTIME")
    with pytest.raises(ValueError, match="kind"):
        RowSpec("trade", (("x", "float", None),))


def test_frame_binary_lengths() -> None:
    for size, header in ((125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"), (70000, b"\x82\x7f")):
        frame = frame_binary(b"x" * size)
        assert frame.startswith(header)
        assert frame.endswith(b"x" * size)


def test_without_code_takes_one_code_out_of_a_request() -> None:
    parsed = parse(
        [
            T,
            {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
            {"type": "orderbook", "codes": ["KRW-ETH.15"], "level": 1000},
        ]
    )
    assert isinstance(parsed, SubscribeRequest)
    named, taken = without_code(parsed, "KRW-ETH")
    assert taken == "KRW-ETH"
    assert [t.codes for t in named.types] == [("KRW-BTC",), ("KRW-ETH.15",)]
    _, taken = without_code(parsed)
    assert taken == "KRW-ETH"  # the last code of the first object with codes
    book, taken = without_code(named, "KRW-ETH")  # suffix ignored; an emptied object goes
    assert taken == "KRW-ETH.15"
    assert [t.type for t in book.types] == ["ticker"]
    assert without_code(parsed, "KRW-XRP") == (parsed, None)
