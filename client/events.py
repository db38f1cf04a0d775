"""Typed, immutable Upbit events built from a decoded payload.

A payload on Redis is one Upbit object with Upbit's DEFAULT names (docs/contract.md, "Payloads").
:func:`subscriptions.codec.decode_event` turns it into a mapping whose non-integer numbers are
:class:`~decimal.Decimal` holding exactly the digits Upbit sent, and :func:`parse_event` turns that
mapping into one of :class:`Ticker`, :class:`Trade`, :class:`Orderbook`, :class:`Candle`,
:class:`MyOrder` or :class:`MyAsset`::

    event = parse_event(decode_event(payload))
    if isinstance(event, Orderbook) and event.best_ask is not None:
        ...

Field names are Upbit's DEFAULT names (docs/upbit-protocol.md §4), so Upbit's docs describe them.

Types
    * prices, sizes, volumes, amounts, rates, fees, balances and the orderbook ``level``:
      ``Decimal``. A JSON integer (``31883000``) becomes ``Decimal(31883000)``; a ``Decimal`` is
      kept as it is, so ``str()`` gives back Upbit's digits (``0.00077720`` stays ``0.00077720``;
      an exponent form such as ``1.16539E8`` keeps its digits and exponent and prints as
      ``1.16539E+8``). A Python ``float`` is refused: it means digits were lost upstream.
    * timestamps (ms), ``trades_count`` and ``sequential_id``: ``int``.
    * dates, times, codes and enum values (``RISE``, ``ASK``, ``wait``...): ``str``, unchanged.
    * ``X | None`` where §4 says a value can be null, and for keys that some frames lack
      (older frames, deprecated or recently added fields). A ``| None`` field is ``None`` both
      when the key is absent and when it is null. Every other field is required.

``raw``
    Every event keeps the mapping it was built from in ``raw`` (the same object, not a copy: do
    not mutate it), so fields Upbit adds later are never lost. ``raw`` takes no part in ``==``,
    ``hash()`` or ``repr()``: two events are equal when their typed fields are.

Nested items (:class:`OrderbookUnit`, :class:`AssetBalance`, :class:`PriceLevel`) are
``NamedTuple`` s: immutable, unpackable, and about twice as cheap to build as a frozen dataclass,
which matters for 30-unit orderbooks. Their raw form is inside the parent event's ``raw``.

Errors: anything :func:`parse_event` cannot read raises :class:`EventParseError`, naming the data
type and the field (``orderbook_units[3].ask_price`` for nested ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias

from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.jsontext import EXACT_CONTEXT, RawNumber
from upbit_fanout.subscriptions.upbit_fields import CANDLE_TYPES, infer_type

__all__ = [
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

_NO_RAW: Final[Mapping[str, Any]] = MappingProxyType({})

# Arithmetic in the helpers is exact: the default context would round a 28-digit balance sum.


def _no_raw() -> Mapping[str, Any]:
    """``raw`` of an event built by hand rather than by :func:`parse_event`."""
    return _NO_RAW


class EventParseError(UpbitFanoutError, ValueError):
    """A mapping that is not a well-formed Upbit event of its type.

    ``type_name`` is the event's data type (None when it could not be told), ``field`` the
    offending field (None when the problem is the whole value), ``reason`` what is wrong.
    """

    def __init__(self, type_name: str | None, field: str | None, reason: str) -> None:
        what = f"{type_name} event" if type_name else "event"
        where = f": field {field!r} " if field else ": "
        super().__init__(f"cannot parse {what}{where}{reason}")
        self.type_name = type_name
        self.field = field
        self.reason = reason


# --- nested items -----------------------------------------------------------------------------


class PriceLevel(NamedTuple):
    """One side of one orderbook level."""

    price: Decimal
    size: Decimal


class OrderbookUnit(NamedTuple):
    """Unit *i* of an orderbook: the i-th best ask and the i-th best bid, as Upbit sent them.

    A thin side is padded with price 0 and size 0; :meth:`Orderbook.asks` and
    :meth:`Orderbook.bids` drop that padding.
    """

    ask_price: Decimal
    bid_price: Decimal
    ask_size: Decimal
    bid_size: Decimal


class AssetBalance(NamedTuple):
    """One currency of a :class:`MyAsset` event."""

    currency: str
    balance: Decimal
    """Available."""
    locked: Decimal
    """Held by open orders."""

    @property
    def total(self) -> Decimal:
        """``balance + locked``, exact (never rounded to the default 28 digits)."""
        return EXACT_CONTEXT.add(self.balance, self.locked)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticker:
    """``ticker`` (docs/upbit-protocol.md §4.1).

    ``trade_date`` is ``yyyyMMdd`` and ``trade_time`` ``HHmmss`` (UTC); the 52-week dates are
    ``yyyy-MM-dd``. ``acc_*`` count from 00:00 UTC, ``*_24h`` over a rolling 24 h.
    """

    type: str
    code: str
    opening_price: Decimal
    high_price: Decimal
    low_price: Decimal
    trade_price: Decimal
    prev_closing_price: Decimal
    change: str
    change_price: Decimal
    signed_change_price: Decimal
    change_rate: Decimal
    signed_change_rate: Decimal
    trade_volume: Decimal
    acc_trade_volume: Decimal
    acc_trade_volume_24h: Decimal
    acc_trade_price: Decimal
    acc_trade_price_24h: Decimal
    trade_date: str
    trade_time: str
    trade_timestamp: int
    ask_bid: str | None = None
    """None in a snapshot answered from REST (``stream_type`` ``REST``): Upbit's REST ticker
    has no ``ask_bid``, ``acc_ask_volume``, ``acc_bid_volume`` or ``market_state``."""
    acc_ask_volume: Decimal | None = None
    acc_bid_volume: Decimal | None = None
    highest_52_week_price: Decimal
    highest_52_week_date: str
    lowest_52_week_price: Decimal
    lowest_52_week_date: str
    market_state: str | None = None
    is_trading_suspended: bool | None = None
    """Deprecated by Upbit: None once Upbit stops sending it."""
    delisting_date: str | None = None
    market_warning: str | None = None
    """Deprecated by Upbit: None once Upbit stops sending it."""
    timestamp: int
    stream_type: str | None = None
    trade_status: str | None = None
    """Legacy key of older frames."""
    market_state_for_ios: str | None = None
    """Legacy key of older frames."""
    raw: Mapping[str, Any] = field(default_factory=_no_raw, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """``trade`` (docs/upbit-protocol.md §4.2). Dates are ``yyyy-MM-dd``, times ``HH:mm:ss``, UTC.

    ``sequential_id`` is unique but not ordered: dedupe on it, order by ``trade_timestamp``.
    """

    type: str
    code: str
    trade_price: Decimal
    trade_volume: Decimal
    ask_bid: str
    prev_closing_price: Decimal
    change: str
    change_price: Decimal
    trade_date: str
    trade_time: str
    trade_timestamp: int
    timestamp: int
    sequential_id: int
    best_ask_price: Decimal | None = None
    best_ask_size: Decimal | None = None
    best_bid_price: Decimal | None = None
    best_bid_size: Decimal | None = None
    stream_type: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_no_raw, repr=False, compare=False)

    @property
    def is_buy(self) -> bool:
        """True when the taker bought (``ask_bid == "BID"``), False when the taker sold."""
        return self.ask_bid == "BID"


@dataclass(frozen=True, slots=True, kw_only=True)
class Orderbook:
    """``orderbook`` (docs/upbit-protocol.md §4.3): always the whole book, never a delta.

    ``orderbook_units`` are exactly the units sent, padding included; ``total_*_size`` cover only
    those units. ``level`` is None in frames that lack it.
    """

    type: str
    code: str
    total_ask_size: Decimal
    total_bid_size: Decimal
    orderbook_units: tuple[OrderbookUnit, ...]
    timestamp: int
    level: Decimal | None = None
    stream_type: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_no_raw, repr=False, compare=False)

    def asks(self) -> tuple[PriceLevel, ...]:
        """Ask levels, best (lowest) first, without zero-price padding."""
        return tuple(
            PriceLevel(u.ask_price, u.ask_size) for u in self.orderbook_units if u.ask_price
        )

    def bids(self) -> tuple[PriceLevel, ...]:
        """Bid levels, best (highest) first, without zero-price padding."""
        return tuple(
            PriceLevel(u.bid_price, u.bid_size) for u in self.orderbook_units if u.bid_price
        )

    @property
    def best_ask(self) -> PriceLevel | None:
        """The lowest ask, or None when the ask side is empty."""
        for u in self.orderbook_units:
            if u.ask_price:
                return PriceLevel(u.ask_price, u.ask_size)
        return None

    @property
    def best_bid(self) -> PriceLevel | None:
        """The highest bid, or None when the bid side is empty."""
        for u in self.orderbook_units:
            if u.bid_price:
                return PriceLevel(u.bid_price, u.bid_size)
        return None

    @property
    def spread(self) -> Decimal | None:
        """Best ask price minus best bid price, exact; None when either side is empty."""
        ask, bid = self.best_ask, self.best_bid
        if ask is None or bid is None:
            return None
        return EXACT_CONTEXT.subtract(ask.price, bid.price)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candle:
    """``candle.1s`` ... ``candle.240m`` (docs/upbit-protocol.md §4.4).

    The same bucket (``candle_date_time_utc``) can arrive many times: the last one wins.
    """

    type: str
    code: str
    candle_date_time_utc: str
    candle_date_time_kst: str
    opening_price: Decimal
    high_price: Decimal
    low_price: Decimal
    trade_price: Decimal
    candle_acc_trade_volume: Decimal
    candle_acc_trade_price: Decimal
    timestamp: int
    stream_type: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_no_raw, repr=False, compare=False)

    @property
    def unit(self) -> str:
        """The bucket size from ``type``: ``"1s"``, ``"1m"`` ... ``"240m"``."""
        return self.type.partition(".")[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class MyOrder:
    """``myOrder`` (docs/upbit-protocol.md §4.5), one order event of your account.

    When ``state == "trade"`` (a fill), ``price`` and ``volume`` are the fill's.
    """

    type: str
    code: str
    uuid: str
    ask_bid: str
    order_type: str
    state: str
    trade_uuid: str | None = None
    price: Decimal | None = None
    avg_price: Decimal
    volume: Decimal | None = None
    remaining_volume: Decimal | None = None
    executed_volume: Decimal | None = None
    trades_count: int
    reserved_fee: Decimal
    remaining_fee: Decimal
    paid_fee: Decimal
    locked: Decimal
    executed_funds: Decimal
    time_in_force: str | None = None
    trade_fee: Decimal | None = None
    is_maker: bool | None = None
    identifier: str | None = None
    smp_type: str | None = None
    prevented_volume: Decimal | None = None
    prevented_locked: Decimal | None = None
    """A number per the docs, but absent from frames older than the SMP fields (2025-07)."""
    trade_timestamp: int | None = None
    order_timestamp: int
    timestamp: int
    stream_type: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_no_raw, repr=False, compare=False)

    @property
    def is_fill(self) -> bool:
        """True for a trade (fill) event, i.e. ``trade_uuid`` is set (as ccxt decides)."""
        return self.trade_uuid is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class MyAsset:
    """``myAsset`` (docs/upbit-protocol.md §4.6): balances of your account.

    Whether ``assets`` lists every holding or only the changed currencies is not documented.
    ``code`` is not an Upbit field of myAsset; it is None unless a frame carries one.
    """

    type: str
    asset_uuid: str
    assets: tuple[AssetBalance, ...]
    asset_timestamp: int
    timestamp: int
    stream_type: str | None = None
    code: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_no_raw, repr=False, compare=False)

    def balance_of(self, currency: str) -> AssetBalance | None:
        """The entry for ``currency`` (e.g. ``"KRW"``), or None when this event has none."""
        for asset in self.assets:
            if asset.currency == currency:
                return asset
        return None


MarketEvent: TypeAlias = Ticker | Trade | Orderbook | Candle | MyOrder | MyAsset


# --- field readers ----------------------------------------------------------------------------
# Each reader has a fast path (the value already has the right Python type) and a slow path that
# converts (int -> Decimal) or raises _Bad, which parse_event turns into EventParseError.


class _Bad(Exception):
    """A field problem, before parse_event adds the data type."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


_FLOAT_HINT: Final = (
    "a float has lost Upbit's exact digits; decode payloads with "
    "subscriptions.codec.decode_event, which keeps numbers as Decimal"
)


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _wrong(key: str, expected: str, value: Any) -> _Bad:
    if value is None:
        return _Bad(key, f"is null; expected {expected}")
    if isinstance(value, float):
        return _Bad(key, f"is a float ({value!r}); expected {expected}: {_FLOAT_HINT}")
    return _Bad(key, f"must be {expected}, got {_shown(value)}")


def _missing(key: str) -> _Bad:
    return _Bad(key, "is missing")


def _to_decimal(value: Any, key: str) -> Decimal:
    if type(value) is int:
        return Decimal(value)
    if isinstance(value, RawNumber):  # subscriptions.jsontext.loads_exact output: exact text
        try:
            return Decimal(value)
        except ArithmeticError:
            raise _wrong(key, "a JSON number", value) from None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(int(value))
    raise _wrong(key, "a JSON number", value)


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, RawNumber):
        try:
            value = Decimal(value)
        except ArithmeticError:
            raise _wrong(key, "a JSON integer", value) from None
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    # An integral number written with a fraction or exponent (1.0, 1.7E12) is still exact;
    # the size bound keeps a hostile exponent (1E999999999) from building a gigantic int.
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < 64
        and value == value.to_integral_value()
    ):
        return int(value)
    raise _wrong(key, "a JSON integer", value)


def _dec(d: Mapping[str, Any], key: str) -> Decimal:
    try:
        value = d[key]
    except KeyError:
        raise _missing(key) from None
    if type(value) is Decimal:
        return value
    return _to_decimal(value, key)


def _dec_opt(d: Mapping[str, Any], key: str) -> Decimal | None:
    value = d.get(key)
    if value is None or type(value) is Decimal:
        return value
    return _to_decimal(value, key)


def _int(d: Mapping[str, Any], key: str) -> int:
    try:
        value = d[key]
    except KeyError:
        raise _missing(key) from None
    if type(value) is int:
        return value
    return _to_int(value, key)


def _int_opt(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is None or type(value) is int:
        return value
    return _to_int(value, key)


def _str(d: Mapping[str, Any], key: str) -> str:
    try:
        value = d[key]
    except KeyError:
        raise _missing(key) from None
    if type(value) is str:
        return value
    if isinstance(value, str) and not isinstance(value, RawNumber):
        return str(value)
    raise _wrong(key, "a string", value)


def _str_opt(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or type(value) is str:
        return value
    if isinstance(value, str) and not isinstance(value, RawNumber):
        return str(value)
    raise _wrong(key, "a string or null", value)


def _bool(d: Mapping[str, Any], key: str) -> bool:
    try:
        value = d[key]
    except KeyError:
        raise _missing(key) from None
    if type(value) is bool:
        return value
    raise _wrong(key, "true or false", value)


def _bool_opt(d: Mapping[str, Any], key: str) -> bool | None:
    value = d.get(key)
    if value is None or type(value) is bool:
        return value
    raise _wrong(key, "true, false or null", value)


def _code(d: Mapping[str, Any]) -> str:
    """``code``; 2018 frames name the market ``market`` instead (docs/upbit-protocol.md §4.1)."""
    value = d.get("code")
    if value is None:
        value = d.get("market")
        if value is None:
            raise _missing("code")
    if type(value) is str:
        return value
    if isinstance(value, str) and not isinstance(value, RawNumber):
        return str(value)
    raise _wrong("code", "a string", value)


def _array(d: Mapping[str, Any], key: str) -> list[Any] | tuple[Any, ...]:
    try:
        value = d[key]
    except KeyError:
        raise _missing(key) from None
    if isinstance(value, list | tuple):
        return value
    raise _wrong(key, "a JSON array", value)


def _nested(key: str, index: int, item: Any, exc: _Bad | None) -> _Bad:
    where = f"{key}[{index}]"
    if exc is not None:
        return _Bad(f"{where}.{exc.field}", exc.reason)
    return _wrong(where, "a JSON object", item)


# --- parsers, one per type --------------------------------------------------------------------


def _ticker(d: Mapping[str, Any], type_name: str) -> Ticker:
    return Ticker(
        type=type_name,
        code=_code(d),
        opening_price=_dec(d, "opening_price"),
        high_price=_dec(d, "high_price"),
        low_price=_dec(d, "low_price"),
        trade_price=_dec(d, "trade_price"),
        prev_closing_price=_dec(d, "prev_closing_price"),
        change=_str(d, "change"),
        change_price=_dec(d, "change_price"),
        signed_change_price=_dec(d, "signed_change_price"),
        change_rate=_dec(d, "change_rate"),
        signed_change_rate=_dec(d, "signed_change_rate"),
        trade_volume=_dec(d, "trade_volume"),
        acc_trade_volume=_dec(d, "acc_trade_volume"),
        acc_trade_volume_24h=_dec(d, "acc_trade_volume_24h"),
        acc_trade_price=_dec(d, "acc_trade_price"),
        acc_trade_price_24h=_dec(d, "acc_trade_price_24h"),
        trade_date=_str(d, "trade_date"),
        trade_time=_str(d, "trade_time"),
        trade_timestamp=_int(d, "trade_timestamp"),
        ask_bid=_str_opt(d, "ask_bid"),
        acc_ask_volume=_dec_opt(d, "acc_ask_volume"),
        acc_bid_volume=_dec_opt(d, "acc_bid_volume"),
        highest_52_week_price=_dec(d, "highest_52_week_price"),
        highest_52_week_date=_str(d, "highest_52_week_date"),
        lowest_52_week_price=_dec(d, "lowest_52_week_price"),
        lowest_52_week_date=_str(d, "lowest_52_week_date"),
        market_state=_str_opt(d, "market_state"),
        is_trading_suspended=_bool_opt(d, "is_trading_suspended"),
        delisting_date=_str_opt(d, "delisting_date"),
        market_warning=_str_opt(d, "market_warning"),
        timestamp=_int(d, "timestamp"),
        stream_type=_str_opt(d, "stream_type"),
        trade_status=_str_opt(d, "trade_status"),
        market_state_for_ios=_str_opt(d, "market_state_for_ios"),
        raw=d,
    )


def _trade(d: Mapping[str, Any], type_name: str) -> Trade:
    return Trade(
        type=type_name,
        code=_code(d),
        trade_price=_dec(d, "trade_price"),
        trade_volume=_dec(d, "trade_volume"),
        ask_bid=_str(d, "ask_bid"),
        prev_closing_price=_dec(d, "prev_closing_price"),
        change=_str(d, "change"),
        change_price=_dec(d, "change_price"),
        trade_date=_str(d, "trade_date"),
        trade_time=_str(d, "trade_time"),
        trade_timestamp=_int(d, "trade_timestamp"),
        timestamp=_int(d, "timestamp"),
        sequential_id=_int(d, "sequential_id"),
        best_ask_price=_dec_opt(d, "best_ask_price"),
        best_ask_size=_dec_opt(d, "best_ask_size"),
        best_bid_price=_dec_opt(d, "best_bid_price"),
        best_bid_size=_dec_opt(d, "best_bid_size"),
        stream_type=_str_opt(d, "stream_type"),
        raw=d,
    )


def _orderbook_unit(item: Mapping[str, Any]) -> OrderbookUnit:
    """Slow, checking path for one unit; the loop in _orderbook inlines the common case."""
    return OrderbookUnit(
        _dec(item, "ask_price"),
        _dec(item, "bid_price"),
        _dec(item, "ask_size"),
        _dec(item, "bid_size"),
    )


def _orderbook(d: Mapping[str, Any], type_name: str) -> Orderbook:
    raw_units = _array(d, "orderbook_units")
    units: list[OrderbookUnit] = []
    append = units.append
    new_unit = OrderbookUnit._make
    try:
        # Hot loop (30 units per frame, ~10 frames/s per code): inline the Decimal fast path.
        for u in raw_units:
            ap, bp, asz, bsz = u["ask_price"], u["bid_price"], u["ask_size"], u["bid_size"]
            if type(ap) is not Decimal:
                ap = Decimal(ap) if type(ap) is int else _to_decimal(ap, "ask_price")
            if type(bp) is not Decimal:
                bp = Decimal(bp) if type(bp) is int else _to_decimal(bp, "bid_price")
            if type(asz) is not Decimal:
                asz = Decimal(asz) if type(asz) is int else _to_decimal(asz, "ask_size")
            if type(bsz) is not Decimal:
                bsz = Decimal(bsz) if type(bsz) is int else _to_decimal(bsz, "bid_size")
            append(new_unit((ap, bp, asz, bsz)))
    except _Bad as exc:
        raise _nested("orderbook_units", len(units), None, exc) from None
    except (KeyError, TypeError, IndexError):
        index = len(units)
        item = raw_units[index]
        if not isinstance(item, Mapping):
            raise _nested("orderbook_units", index, item, None) from None
        try:
            _orderbook_unit(item)
        except _Bad as exc:
            raise _nested("orderbook_units", index, item, exc) from None
        raise  # not a field problem we know how to name: a bug, let it show
    return Orderbook(
        type=type_name,
        code=_code(d),
        total_ask_size=_dec(d, "total_ask_size"),
        total_bid_size=_dec(d, "total_bid_size"),
        orderbook_units=tuple(units),
        timestamp=_int(d, "timestamp"),
        level=_dec_opt(d, "level"),
        stream_type=_str_opt(d, "stream_type"),
        raw=d,
    )


def _candle(d: Mapping[str, Any], type_name: str) -> Candle:
    return Candle(
        type=type_name,
        code=_code(d),
        candle_date_time_utc=_str(d, "candle_date_time_utc"),
        candle_date_time_kst=_str(d, "candle_date_time_kst"),
        opening_price=_dec(d, "opening_price"),
        high_price=_dec(d, "high_price"),
        low_price=_dec(d, "low_price"),
        trade_price=_dec(d, "trade_price"),
        candle_acc_trade_volume=_dec(d, "candle_acc_trade_volume"),
        candle_acc_trade_price=_dec(d, "candle_acc_trade_price"),
        timestamp=_int(d, "timestamp"),
        stream_type=_str_opt(d, "stream_type"),
        raw=d,
    )


def _my_order(d: Mapping[str, Any], type_name: str) -> MyOrder:
    return MyOrder(
        type=type_name,
        code=_code(d),
        uuid=_str(d, "uuid"),
        ask_bid=_str(d, "ask_bid"),
        order_type=_str(d, "order_type"),
        state=_str(d, "state"),
        trade_uuid=_str_opt(d, "trade_uuid"),
        price=_dec_opt(d, "price"),
        avg_price=_dec(d, "avg_price"),
        volume=_dec_opt(d, "volume"),
        remaining_volume=_dec_opt(d, "remaining_volume"),
        executed_volume=_dec_opt(d, "executed_volume"),
        trades_count=_int(d, "trades_count"),
        reserved_fee=_dec(d, "reserved_fee"),
        remaining_fee=_dec(d, "remaining_fee"),
        paid_fee=_dec(d, "paid_fee"),
        locked=_dec(d, "locked"),
        executed_funds=_dec(d, "executed_funds"),
        time_in_force=_str_opt(d, "time_in_force"),
        trade_fee=_dec_opt(d, "trade_fee"),
        is_maker=_bool_opt(d, "is_maker"),
        identifier=_str_opt(d, "identifier"),
        smp_type=_str_opt(d, "smp_type"),
        prevented_volume=_dec_opt(d, "prevented_volume"),
        prevented_locked=_dec_opt(d, "prevented_locked"),
        trade_timestamp=_int_opt(d, "trade_timestamp"),
        order_timestamp=_int(d, "order_timestamp"),
        timestamp=_int(d, "timestamp"),
        stream_type=_str_opt(d, "stream_type"),
        raw=d,
    )


def _my_asset(d: Mapping[str, Any], type_name: str) -> MyAsset:
    assets: list[AssetBalance] = []
    for index, item in enumerate(_array(d, "assets")):
        if not isinstance(item, Mapping):
            raise _nested("assets", index, item, None)
        try:
            assets.append(
                AssetBalance(_str(item, "currency"), _dec(item, "balance"), _dec(item, "locked"))
            )
        except _Bad as exc:
            raise _nested("assets", index, item, exc) from None
    return MyAsset(
        type=type_name,
        asset_uuid=_str(d, "asset_uuid"),
        assets=tuple(assets),
        asset_timestamp=_int(d, "asset_timestamp"),
        timestamp=_int(d, "timestamp"),
        stream_type=_str_opt(d, "stream_type"),
        code=_str_opt(d, "code"),
        raw=d,
    )


_Parser: TypeAlias = Callable[[Mapping[str, Any], str], MarketEvent]
_PARSERS: Final[dict[str, _Parser]] = {
    "ticker": _ticker,
    "trade": _trade,
    "orderbook": _orderbook,
    "myOrder": _my_order,
    "myAsset": _my_asset,
    **dict.fromkeys(CANDLE_TYPES, _candle),
}


def parse_event(data: Mapping[str, Any]) -> MarketEvent:
    """The typed event for one decoded payload (DEFAULT names; numbers ``Decimal`` or ``int``).

    The class is chosen by ``data["type"]``: ``ticker``, ``trade``, ``orderbook``,
    ``candle.<unit>``, ``myOrder`` or ``myAsset``. A legacy frame without ``type`` is recognised
    from its fields (:func:`subscriptions.upbit_fields.infer_type`), and its ``market`` key is
    read as ``code``. Unknown extra keys are kept in ``raw`` and otherwise ignored.

    Raises :class:`EventParseError` naming the type and field when ``data`` is not a mapping, the
    type is unknown, a required field is missing or null, or a field has the wrong JSON type
    (a ``float`` in a number field is refused: exact digits were already lost).
    """
    value: object = data  # decode_event returns Any: check what really arrived
    if type(value) is not dict and not isinstance(value, Mapping):
        hint = "; a *_LIST frame is a JSON array: parse each element" if type(value) is list else ""
        raise EventParseError(None, None, f"expected a JSON object, got {_shown(value)}{hint}")
    type_name = data.get("type")
    if type_name is None:
        type_name = infer_type(data)
        if type_name is None:
            raise EventParseError(None, "type", "is missing and the fields match no known type")
    parser = _PARSERS.get(type_name) if type(type_name) is str else None
    if parser is None:
        if not isinstance(type_name, str):
            raise EventParseError(None, "type", f"must be a string, got {_shown(type_name)}")
        if type_name.startswith("candle.") and len(type_name) > len("candle."):
            parser = _candle  # a candle unit newer than this library: still a candle
        else:
            known = ", ".join(
                ("ticker", "trade", "orderbook", "candle.<unit>", "myOrder", "myAsset")
            )
            raise EventParseError(type_name, "type", f"is not a data type we know ({known})")
    try:
        return parser(data, type_name)
    except _Bad as exc:
        raise EventParseError(type_name, exc.field, exc.reason) from None
