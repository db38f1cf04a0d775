"""client.events: typed events carry Upbit's exact digits, and bad input fails with a clear error.

Every sample frame goes through the pipeline a consumer sees: (SIMPLE/legacy frames renamed to
DEFAULT names, as the collector does) -> encode_event (json or msgpack) -> decode_event ->
parse_event. Each number of the sample must come out with exactly the digits Upbit wrote.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import SAMPLES
from upbit_fanout.client import events
from upbit_fanout.client.events import (
    AssetBalance,
    Candle,
    EventParseError,
    MyAsset,
    MyOrder,
    Orderbook,
    OrderbookUnit,
    PriceLevel,
    Ticker,
    Trade,
    parse_event,
)
from upbit_fanout.subscriptions.codec import CODECS, CodecName, decode_event, encode_event
from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.upbit_fields import infer_type, inverse, nested_tables, table_for

TYPES = ("ticker", "trade", "orderbook", "candle", "myOrder", "myAsset")
CLASSES: dict[str, type[Any]] = {
    "ticker": Ticker,
    "trade": Trade,
    "orderbook": Orderbook,
    "candle.1s": Candle,
    "myOrder": MyOrder,
    "myAsset": MyAsset,
}


class NumText(str):
    """A JSON number's source text, as the sample file wrote it."""

    __slots__ = ()


# --- sample handling --------------------------------------------------------------------------


def to_default(obj: Any) -> Any:
    """A sample value with DEFAULT names, as the collector republishes it (works on any leaves).

    A ``*_LIST`` frame (a JSON array) yields its element. SIMPLE keys are renamed with the
    subscriptions.upbit_fields tables; legacy DEFAULT frames (``market``, no ``type``) are kept
    as they are, since their names are already DEFAULT names.
    """
    if isinstance(obj, list):
        assert len(obj) == 1, "these samples' *_LIST frames hold one event"
        obj = obj[0]
    if "ty" not in obj and "mk" not in obj and "cd" not in obj:
        return obj
    type_name = infer_type(obj)
    assert type_name is not None
    table = table_for(type_name)
    top = inverse(table)
    nested = {table[key]: inverse(inner) for key, inner in nested_tables(type_name).items()}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in nested:
            out[top[key]] = [{nested[key][k]: v for k, v in item.items()} for item in value]
        else:
            out[top[key]] = value
    return out


def sample_lines() -> Iterator[tuple[str, int, str]]:
    for type_name in TYPES:
        path = SAMPLES / f"{type_name}.jsonl"
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                yield type_name, number, line


SAMPLE_LINES = list(sample_lines())


def is_default(line: str) -> bool:
    value = json.loads(line)
    obj = value[0] if isinstance(value, list) else value
    return "ty" not in obj and "mk" not in obj and "cd" not in obj


def payload_for(line: str, codec: CodecName) -> bytes:
    """What a consumer reads from Redis for this frame."""
    if codec == "json" and is_default(line) and not line.startswith("["):
        return line.encode()  # the collector forwards Upbit's own bytes untouched
    return encode_event(to_default(loads_exact(line)), codec)


def expected_texts(line: str) -> Any:
    return to_default(json.loads(line, parse_float=NumText, parse_int=NumText))


def assert_exact_digits(expected: Mapping[str, Any], obj: Any, where: str) -> None:
    """Every key of the sample is a typed attribute holding the sample's value exactly."""
    for key, text in expected.items():
        name = "code" if key == "market" else key  # legacy frames name the market `market`
        assert hasattr(obj, name), f"{where}: sample field {key!r} has no typed attribute"
        value = getattr(obj, name)
        path = f"{where}.{name}"
        if isinstance(text, NumText):
            if isinstance(value, Decimal):
                # Same digits and exponent as the sample, and the same text where the sample
                # used no exponent (Decimal prints 1.16539E8 as 1.16539E+8: same value, digits).
                assert value.as_tuple() == Decimal(text).as_tuple(), (path, value, text)
                if "e" not in text.lower():
                    assert str(value) == text, (path, value, text)
            else:
                assert type(value) is int, (path, value)
                assert str(value) == text, (path, value, text)
        elif isinstance(text, list):
            assert isinstance(value, tuple), path
            assert len(value) == len(text), path
            for index, (sub_text, item) in enumerate(zip(text, value, strict=True)):
                assert_exact_digits(sub_text, item, f"{path}[{index}]")
        else:
            assert value == text, (path, value, text)
            assert type(value) is type(text), (path, value, text)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("type_name", "line"),
    [pytest.param(t, line, id=f"{t}:{n}") for t, n, line in SAMPLE_LINES],
)
def test_every_sample_keeps_exact_digits(type_name: str, line: str, codec: CodecName) -> None:
    event = parse_event(decode_event(payload_for(line, codec)))
    expected_class = CLASSES["candle.1s" if type_name == "candle" else type_name]
    assert type(event) is expected_class
    assert_exact_digits(expected_texts(line), event, type_name)


def test_the_documented_tricky_numbers_print_as_upbit_wrote_them() -> None:
    lines = {(t, n): line for t, n, line in SAMPLE_LINES}
    book = parse_event(decode_event(lines["orderbook", 3].encode()))
    assert isinstance(book, Orderbook)
    assert str(book.orderbook_units[1].ask_size) == "0.00077720"
    assert book.orderbook_units[0].ask_price == Decimal("1.16539E8")
    assert book.orderbook_units[0].ask_price.as_tuple() == Decimal("1.16539E8").as_tuple()

    asset = parse_event(decode_event(lines["myAsset", 1].encode()))
    assert isinstance(asset, MyAsset)
    krw = asset.balance_of("KRW")
    assert krw is not None
    assert str(krw.balance) == "1386929.37231066771348207123"
    assert str(krw.locked) == "10329.670127489597585685"
    assert krw.total == Decimal("1397259.04243815731106775623")
    tiny = AssetBalance("BTC", krw.balance, Decimal("1E-40"))  # Decimal's `+` would round this
    assert str(tiny.total) == "1386929.3723106677134820712300000000000000000001"

    ticker = parse_event(decode_event(lines["ticker", 2].encode()))
    assert isinstance(ticker, Ticker)
    assert type(ticker.opening_price) is Decimal  # JSON 31883000 (an integer) in a price field
    assert str(ticker.opening_price) == "31883000"
    assert str(ticker.prev_closing_price) == "31883000.00000000"


def test_classes_have_exactly_the_documented_fields() -> None:
    """Attribute names are the DEFAULT names of docs/upbit-protocol.md §4, no more, no less."""
    for type_name, cls in CLASSES.items():
        documented = set(table_for(type_name)) - {"market"}  # `market` is read as `code`
        if cls is MyAsset:
            documented.add("code")  # optional, not an Upbit field of myAsset
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        assert names == documented, type_name
    assert set(OrderbookUnit._fields) == set(nested_tables("orderbook")["orderbook_units"])
    assert set(AssetBalance._fields) == set(nested_tables("myAsset")["assets"])


# --- fixtures from the samples ----------------------------------------------------------------


def sample(type_name: str, number: int) -> dict[str, Any]:
    """Line ``number`` of a type's sample file, as decode_event returns it."""
    line = next(line for t, n, line in SAMPLE_LINES if (t, n) == (type_name, number))
    value = decode_event(line.encode())
    assert isinstance(value, dict)
    return value


def modern(type_name: str) -> dict[str, Any]:
    """A current-shape DEFAULT sample: has type and stream_type."""
    for t, _, line in SAMPLE_LINES:
        if t == type_name and is_default(line) and line[0] == "{":
            value = decode_event(line.encode())
            if "type" in value and "stream_type" in value:
                assert isinstance(value, dict)
                return value
    raise AssertionError(f"no current {type_name} sample")


def required_fields(cls: type[Any]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def optional_fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.default is None]


MODERN = {name: modern(name) for name in TYPES}
TYPE_OF = {"candle": Candle, "ticker": Ticker, "trade": Trade, "orderbook": Orderbook}
TYPE_OF |= {"myOrder": MyOrder, "myAsset": MyAsset}


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "field_name"),
    [
        (t, f)
        for t in TYPES
        for f in required_fields(TYPE_OF[t])
        if f != "type"  # without `type` a frame is typed from its fields (legacy support)
    ],
)
def test_missing_required_field_is_named(type_name: str, field_name: str) -> None:
    data = dict(MODERN[type_name])
    del data[field_name]
    with pytest.raises(EventParseError) as info:
        parse_event(data)
    assert info.value.field == field_name
    assert info.value.type_name == data["type"]
    assert repr(field_name) in str(info.value)
    assert "missing" in str(info.value)


@pytest.mark.parametrize(
    ("type_name", "field_name"),
    [
        ("ticker", "trade_price"),
        ("trade", "trade_volume"),
        ("trade", "best_bid_size"),
        ("candle", "candle_acc_trade_price"),
        ("myOrder", "paid_fee"),
        ("myOrder", "price"),
        ("orderbook", "total_ask_size"),
        ("orderbook", "level"),
    ],
)
def test_float_in_a_decimal_field_is_refused(type_name: str, field_name: str) -> None:
    data = dict(MODERN[type_name])
    data[field_name] = 0.1
    with pytest.raises(EventParseError, match="float") as info:
        parse_event(data)
    assert info.value.field == field_name
    assert "decode_event" in str(info.value)  # tells the user how to get exact numbers


def test_float_in_nested_fields_is_refused_with_its_path() -> None:
    book = dict(MODERN["orderbook"])
    units = [dict(u) for u in book["orderbook_units"]]
    units[1]["ask_size"] = 0.5
    book["orderbook_units"] = units
    with pytest.raises(EventParseError) as info:
        parse_event(book)
    assert info.value.field == "orderbook_units[1].ask_size"

    asset = dict(MODERN["myAsset"])
    asset["assets"] = [{"currency": "KRW", "balance": 1386929.3723106677, "locked": 0}]
    with pytest.raises(EventParseError, match="float") as info:
        parse_event(asset)
    assert info.value.field == "assets[0].balance"


@pytest.mark.parametrize(
    ("type_name", "field_name", "value"),
    [
        ("ticker", "trade_price", "32287000"),  # a string where a number must be
        ("ticker", "trade_price", True),  # bool is an int in Python, not a number in JSON
        ("ticker", "trade_price", None),  # required, not nullable
        ("ticker", "code", 5),
        ("ticker", "trade_timestamp", Decimal("1676965262139.5")),
        ("ticker", "trade_timestamp", "1676965262139"),
        ("trade", "sequential_id", 1.7e16),
        ("myOrder", "is_maker", "true"),
        ("myOrder", "trades_count", False),
        ("orderbook", "orderbook_units", {"ask_price": 1}),
        ("myAsset", "assets", None),
    ],
)
def test_wrong_json_type_is_named(type_name: str, field_name: str, value: Any) -> None:
    data = dict(MODERN[type_name])
    data[field_name] = value
    with pytest.raises(EventParseError) as info:
        parse_event(data)
    assert info.value.field == field_name


def test_integral_numbers_in_integer_fields_are_accepted() -> None:
    """1.0 or 1.7E12 is an exact integer; Upbit's Java writer uses such forms for doubles."""
    event = parse_event({**MODERN["myOrder"], "trades_count": Decimal("1.0")})
    assert isinstance(event, MyOrder)
    assert event.trades_count == 1
    assert type(event.trades_count) is int
    ticker = parse_event({**MODERN["ticker"], "timestamp": Decimal("1.676965262177E12")})
    assert isinstance(ticker, Ticker)
    assert ticker.timestamp == 1676965262177


@pytest.mark.parametrize("line", [pytest.param(line, id=f"{t}:{n}") for t, n, line in SAMPLE_LINES])
def test_loads_exact_output_parses_the_same(line: str) -> None:
    """The collector's own parse (numbers as RawNumber text) gives the same typed event."""
    assert parse_event(to_default(loads_exact(line))) == parse_event(
        decode_event(payload_for(line, "msgpack"))
    )


def test_nested_item_that_is_not_an_object() -> None:
    book = dict(MODERN["orderbook"])
    book["orderbook_units"] = [*book["orderbook_units"][:2], [1, 2, 3, 4]]
    with pytest.raises(EventParseError, match="JSON object") as info:
        parse_event(book)
    assert info.value.field == "orderbook_units[2]"

    units = [dict(u) for u in MODERN["orderbook"]["orderbook_units"]]
    del units[0]["bid_size"]
    book["orderbook_units"] = units
    with pytest.raises(EventParseError, match="missing") as info:
        parse_event(book)
    assert info.value.field == "orderbook_units[0].bid_size"


def test_not_an_event() -> None:
    with pytest.raises(EventParseError, match="parse each element"):
        parse_event(decode_event(b'[{"type":"myAsset"}]'))
    with pytest.raises(EventParseError, match="not a data type") as info:
        parse_event({**MODERN["ticker"], "type": "myTrade"})
    assert info.value.field == "type"
    with pytest.raises(EventParseError, match="match no known type"):
        parse_event({"status": "UP"})
    with pytest.raises(EventParseError, match="must be a string"):
        parse_event({**MODERN["ticker"], "type": ["ticker"]})


def test_error_is_part_of_the_project_tree() -> None:
    error = EventParseError("ticker", "trade_price", "is missing")
    assert isinstance(error, UpbitFanoutError)
    assert isinstance(error, ValueError)
    assert str(error) == "cannot parse ticker event: field 'trade_price' is missing"


# --- optional and nullable fields --------------------------------------------------------------


def test_nullable_fields_accept_null_and_absence() -> None:
    order = sample("myOrder", 2)  # a cancelled order: nulls, and no SMP / fee / maker keys
    event = parse_event(order)
    assert isinstance(event, MyOrder)
    assert event.trade_uuid is None
    assert event.trade_timestamp is None
    assert event.time_in_force is None
    assert event.trade_fee is None  # absent from this frame
    assert event.is_maker is None
    assert event.identifier is None
    assert event.prevented_locked is None
    assert not event.is_fill
    assert event.price == Decimal("1.5")
    assert event.volume == Decimal(5)
    assert event.avg_price == Decimal(0)

    for name in optional_fields(MyOrder):
        event = parse_event({**MODERN["myOrder"], name: None})
        assert getattr(event, name) is None, name
    for name in optional_fields(Ticker):
        assert getattr(parse_event({**MODERN["ticker"], name: None}), name) is None, name


def test_older_frames_without_optional_keys() -> None:
    book = parse_event(sample("orderbook", 4))  # no `level`
    assert isinstance(book, Orderbook)
    assert book.level is None
    legacy = parse_event(sample("ticker", 1))  # `market`, no type
    assert isinstance(legacy, Ticker)
    assert (legacy.type, legacy.code, legacy.stream_type) == ("ticker", "KRW-BTC", None)
    assert legacy.trade_status == "ACTIVE"
    simple_line = next(line for t, n, line in SAMPLE_LINES if (t, n) == ("trade", 1))
    old_trade = parse_event(decode_event(payload_for(simple_line, "json")))  # SIMPLE, `mk`
    assert isinstance(old_trade, Trade)
    assert old_trade.best_ask_price is None
    assert old_trade.code == "KRW-BTC"


def test_unknown_fields_are_kept_in_raw() -> None:
    data = {**MODERN["trade"], "brand_new_field": Decimal("1.5")}
    event = parse_event(data)
    assert event.raw is data
    assert event.raw["brand_new_field"] == Decimal("1.5")
    assert "raw" not in repr(event)


# --- helpers ----------------------------------------------------------------------------------


def book_with(units: list[tuple[str, str, str, str]]) -> Orderbook:
    data = {
        **MODERN["orderbook"],
        "orderbook_units": [
            {
                "ask_price": Decimal(a),
                "ask_size": Decimal(b),
                "bid_price": Decimal(c),
                "bid_size": Decimal(d),
            }
            for a, b, c, d in units
        ],
    }
    event = parse_event(data)
    assert isinstance(event, Orderbook)
    return event


def test_orderbook_helpers_drop_zero_padding() -> None:
    book = book_with(
        [
            ("100.5", "1.0", "99.5", "2.0"),
            ("101.0", "3.0", "0", "0"),  # the bid side is thin: padded
            ("101.5", "0.25", "0.0", "0.00000000"),
        ]
    )
    assert len(book.orderbook_units) == 3  # as sent
    assert book.asks() == (
        PriceLevel(Decimal("100.5"), Decimal("1.0")),
        PriceLevel(Decimal("101.0"), Decimal("3.0")),
        PriceLevel(Decimal("101.5"), Decimal("0.25")),
    )
    assert book.bids() == (PriceLevel(Decimal("99.5"), Decimal("2.0")),)
    assert book.best_ask == PriceLevel(Decimal("100.5"), Decimal("1.0"))
    assert book.best_bid == PriceLevel(Decimal("99.5"), Decimal("2.0"))
    assert book.spread == Decimal("1.0")

    empty_bids = book_with([("100", "1", "0", "0"), ("101", "1", "0", "0")])
    assert empty_bids.bids() == ()
    assert empty_bids.best_bid is None
    assert empty_bids.spread is None


def test_orderbook_helpers_on_a_real_book() -> None:
    book = parse_event(MODERN["orderbook"])
    assert isinstance(book, Orderbook)
    assert book.best_ask == PriceLevel(Decimal(137002000), Decimal("0.10623869"))
    assert book.best_bid == PriceLevel(Decimal(137001000), Decimal("0.03656812"))
    assert book.spread == Decimal(1000)
    assert len(book.asks()) == len(book.bids()) == 30
    asks = [level.price for level in book.asks()]
    assert asks == sorted(asks)


def test_small_helpers() -> None:
    trade = parse_event(MODERN["trade"])
    assert isinstance(trade, Trade)
    assert trade.is_buy  # ask_bid BID: the taker bought
    sell = parse_event({**MODERN["trade"], "ask_bid": "ASK"})
    assert isinstance(sell, Trade)
    assert not sell.is_buy
    candle = parse_event(MODERN["candle"])
    assert isinstance(candle, Candle)
    assert candle.unit == "1s"
    slow = parse_event({**MODERN["candle"], "type": "candle.240m"})
    assert isinstance(slow, Candle)
    assert slow.unit == "240m"
    order = parse_event(MODERN["myOrder"])
    assert isinstance(order, MyOrder)
    assert order.is_fill
    assert order.is_maker is True
    asset = parse_event(MODERN["myAsset"])
    assert isinstance(asset, MyAsset)
    assert asset.code is None
    assert asset.balance_of("BTC") is None


def test_events_are_immutable_values() -> None:
    first = parse_event(MODERN["orderbook"])
    second = parse_event(dict(MODERN["orderbook"]))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.code = "KRW-ETH"  # type: ignore[misc]


def test_public_names() -> None:
    assert sorted(events.__all__) == [
        "AssetBalance",
        "Candle",
        "EventParseError",
        "MarketEvent",
        "MyAsset",
        "MyOrder",
        "Orderbook",
        "OrderbookUnit",
        "PriceLevel",
        "Ticker",
        "Trade",
        "parse_event",
    ]


# --- properties -------------------------------------------------------------------------------

json_number_texts = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,25}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,30}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,3}", fullmatch=True)),
).filter(lambda text: text != "-0")  # JSON integer -0 is the int 0: no sign to keep


TRADE_LINE = next(line for t, n, line in SAMPLE_LINES if (t, n) == ("trade", 4))


@settings(max_examples=200, deadline=None)
@given(text=json_number_texts, codec=st.sampled_from(CODECS))
def test_any_number_text_survives_exactly(text: str, codec: CodecName) -> None:
    line = TRADE_LINE.replace('"trade_price":100473000.00000000', f'"trade_price":{text}')
    assert f'"trade_price":{text},' in line
    payload = line.encode() if codec == "json" else encode_event(loads_exact(line), codec)
    event = parse_event(decode_event(payload))
    assert isinstance(event, Trade)
    assert type(event.trade_price) is Decimal
    assert event.trade_price == Decimal(text)
    assert str(event.trade_price) == str(Decimal(text))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    type_name=st.sampled_from(TYPES),
    key_index=st.integers(min_value=0, max_value=40),
    value=json_values,
    delete=st.booleans(),
)
def test_damaged_events_parse_or_raise_the_documented_error(
    type_name: str, key_index: int, value: Any, delete: bool
) -> None:
    data = dict(MODERN[type_name])
    key = list(data)[key_index % len(data)]
    if delete:
        del data[key]
    else:
        data[key] = value
    try:
        event = parse_event(data)
    except EventParseError as exc:
        named = exc.field
    else:
        assert event.raw is data
        return
    if key != "type":  # another type string makes other fields wrong: any may be named
        assert named is not None
        assert named.split("[")[0] in (key, "code", "type")
