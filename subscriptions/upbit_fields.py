"""Upbit's field names: DEFAULT (full) names and their SIMPLE abbreviations, per data type.

Source: docs/upbit-protocol.md §4. The tables are per type because abbreviations
collide across types (``ap`` is ``avg_price`` in myOrder but ``ask_price`` in an orderbook unit;
``td`` is the trade's ``trade_date`` while the ticker's is ``tdt``). Both the emulator (to write
SIMPLE frames) and the collector (to read them) rename with :func:`to_simple` / :func:`to_default`,
so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

_COMMON: dict[str, str] = {"type": "ty", "code": "cd", "timestamp": "tms", "stream_type": "st"}

TICKER: Mapping[str, str] = MappingProxyType(
    {
        **_COMMON,
        "opening_price": "op",
        "high_price": "hp",
        "low_price": "lp",
        "trade_price": "tp",
        "prev_closing_price": "pcp",
        "change": "c",
        "change_price": "cp",
        "signed_change_price": "scp",
        "change_rate": "cr",
        "signed_change_rate": "scr",
        "trade_volume": "tv",
        "acc_trade_volume": "atv",
        "acc_trade_volume_24h": "atv24h",
        "acc_trade_price": "atp",
        "acc_trade_price_24h": "atp24h",
        "trade_date": "tdt",
        "trade_time": "ttm",
        "trade_timestamp": "ttms",
        "ask_bid": "ab",
        "acc_ask_volume": "aav",
        "acc_bid_volume": "abv",
        "highest_52_week_price": "h52wp",
        "highest_52_week_date": "h52wdt",
        "lowest_52_week_price": "l52wp",
        "lowest_52_week_date": "l52wdt",
        "market_state": "ms",
        "is_trading_suspended": "its",
        "delisting_date": "dd",
        "market_warning": "mw",
        # legacy keys still seen in older frames (docs/upbit-protocol.md §4.1)
        "trade_status": "ts",
        "market_state_for_ios": "msfi",
        "market": "mk",
    }
)

TRADE: Mapping[str, str] = MappingProxyType(
    {
        **_COMMON,
        "trade_price": "tp",
        "trade_volume": "tv",
        "ask_bid": "ab",
        "prev_closing_price": "pcp",
        "change": "c",
        "change_price": "cp",
        "trade_date": "td",
        "trade_time": "ttm",
        "trade_timestamp": "ttms",
        "sequential_id": "sid",
        "best_ask_price": "bap",
        "best_ask_size": "bas",
        "best_bid_price": "bbp",
        "best_bid_size": "bbs",
        "market": "mk",
    }
)

ORDERBOOK: Mapping[str, str] = MappingProxyType(
    {
        **_COMMON,
        "total_ask_size": "tas",
        "total_bid_size": "tbs",
        "orderbook_units": "obu",
        "level": "lv",
        "market": "mk",
    }
)

ORDERBOOK_UNIT: Mapping[str, str] = MappingProxyType(
    {"ask_price": "ap", "bid_price": "bp", "ask_size": "as", "bid_size": "bs"}
)

CANDLE: Mapping[str, str] = MappingProxyType(
    {
        **_COMMON,
        "candle_date_time_utc": "cdttmu",
        "candle_date_time_kst": "cdttmk",
        "opening_price": "op",
        "high_price": "hp",
        "low_price": "lp",
        "trade_price": "tp",
        "candle_acc_trade_volume": "catv",
        "candle_acc_trade_price": "catp",
        "market": "mk",
    }
)

MY_ORDER: Mapping[str, str] = MappingProxyType(
    {
        **_COMMON,
        "uuid": "uid",
        "ask_bid": "ab",
        "order_type": "ot",
        "state": "s",
        "trade_uuid": "tuid",
        "price": "p",
        "avg_price": "ap",
        "volume": "v",
        "remaining_volume": "rv",
        "executed_volume": "ev",
        "trades_count": "tc",
        "reserved_fee": "rsf",
        "remaining_fee": "rmf",
        "paid_fee": "pf",
        "locked": "l",
        "executed_funds": "ef",
        "time_in_force": "tif",
        "trade_fee": "tf",
        "is_maker": "im",
        "identifier": "id",
        "smp_type": "smpt",
        "prevented_volume": "pv",
        "prevented_locked": "pl",
        "trade_timestamp": "ttms",
        "order_timestamp": "otms",
    }
)

MY_ASSET: Mapping[str, str] = MappingProxyType(
    {
        "type": "ty",
        "asset_uuid": "astuid",
        "assets": "ast",
        "asset_timestamp": "asttms",
        "timestamp": "tms",
        "stream_type": "st",
    }
)

MY_ASSET_ITEM: Mapping[str, str] = MappingProxyType(
    {"currency": "cu", "balance": "b", "locked": "l"}
)

LIST_SUBSCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {"method": "mthd", "result": "rslt", "ticket": "tckt"}
)

LIST_SUBSCRIPTIONS_ITEM: Mapping[str, str] = MappingProxyType(
    {"type": "ty", "codes": "cds", "level": "lv"}
)

LIST_SUBSCRIPTIONS_METHOD = "LIST_SUBSCRIPTIONS"
"""The ``method`` of a LIST_SUBSCRIPTIONS reply; as a type name, :func:`to_simple` and
:func:`to_default` rename such a reply and the items of its ``result``."""

CANDLE_UNITS: tuple[str, ...] = ("1s", "1m", "3m", "5m", "10m", "15m", "30m", "60m", "240m")
CANDLE_TYPES: tuple[str, ...] = tuple(f"candle.{unit}" for unit in CANDLE_UNITS)
QUOTATION_TYPES: tuple[str, ...] = ("ticker", "trade", "orderbook", *CANDLE_TYPES)
PRIVATE_TYPES: tuple[str, ...] = ("myOrder", "myAsset")


def table_for(type_name: str) -> Mapping[str, str]:
    """The top-level DEFAULT -> SIMPLE table for a data type; KeyError for an unknown type."""
    if type_name.startswith("candle."):
        return CANDLE
    return _TABLES[type_name]


def nested_tables(type_name: str) -> Mapping[str, Mapping[str, str]]:
    """Tables for nested lists, keyed by the DEFAULT name of the list field."""
    if type_name == "orderbook":
        return {"orderbook_units": ORDERBOOK_UNIT}
    if type_name == "myAsset":
        return {"assets": MY_ASSET_ITEM}
    return {}


def inverse(table: Mapping[str, str]) -> dict[str, str]:
    """SIMPLE -> DEFAULT for one table."""
    return {short: full for full, short in table.items()}


_TABLES: dict[str, Mapping[str, str]] = {
    "ticker": TICKER,
    "trade": TRADE,
    "orderbook": ORDERBOOK,
    "myOrder": MY_ORDER,
    "myAsset": MY_ASSET,
}


# -- renaming --------------------------------------------------------------------------------------
# One object of a data type from one naming to the other, nested orderbook units and myAsset assets
# included. Keys the type's table does not know are kept as they are (a field Upbit adds before the
# table has it passes through under its own name), and so are the items of a list under such a
# key. So to_default(t, to_simple(t, obj)) == obj for every object whose keys are DEFAULT names of
# type t or names unknown to t in both namings, and the same the other way round
# (tests/subscriptions/test_upbit_fields.py). The name LIST_SUBSCRIPTIONS_METHOD renames the reply
# to a LIST_SUBSCRIPTIONS request (§2.7) the same way.

_Renaming = tuple[dict[str, str], dict[str, dict[str, str]]]
"""(top-level table, list key in the source naming -> table for the list's items)."""


def _renaming(type_name: str, *, simple: bool) -> _Renaming:
    if type_name == LIST_SUBSCRIPTIONS_METHOD:
        table: Mapping[str, str] = LIST_SUBSCRIPTIONS
        nested: Mapping[str, Mapping[str, str]] = {"result": LIST_SUBSCRIPTIONS_ITEM}
    else:
        try:
            table = table_for(type_name)
        except KeyError:
            return {}, {}
        nested = nested_tables(type_name)
    if simple:
        return dict(table), {full: dict(items) for full, items in nested.items()}
    return inverse(table), {table.get(full, full): inverse(items) for full, items in nested.items()}


_RENAMINGS: dict[tuple[str, bool], _Renaming] = {
    (type_name, simple): _renaming(type_name, simple=simple)
    for type_name in (*QUOTATION_TYPES, *PRIVATE_TYPES, LIST_SUBSCRIPTIONS_METHOD)
    for simple in (False, True)
}


def _rename(type_name: str, obj: Mapping[str, Any], *, simple: bool) -> dict[str, Any]:
    found = _RENAMINGS.get((type_name, simple))
    top, nested = found if found is not None else _renaming(type_name, simple=simple)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        items = nested.get(key)
        if items is not None and isinstance(value, list):
            out[top.get(key, key)] = [
                {items.get(k, k): v for k, v in item.items()} if isinstance(item, dict) else item
                for item in value
            ]
        else:
            out[top.get(key, key)] = value
    return out


def to_simple(type_name: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A new object with ``obj``'s DEFAULT keys renamed to SIMPLE ones (§4); an unknown type's
    object is copied unchanged."""
    return _rename(type_name, obj, simple=True)


def to_default(type_name: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A new object with ``obj``'s SIMPLE keys renamed to DEFAULT ones (§4); the inverse of
    :func:`to_simple`."""
    return _rename(type_name, obj, simple=False)


def infer_type(payload: Mapping[str, object]) -> str | None:
    """The data type of an Upbit object, also for legacy frames that carry no ``type``/``ty``.

    2018-era frames name the market in ``market``/``mk`` and omit the type (docs/upbit-protocol.md
    §4.1, §10.11); their type is recognised from fields only that type has. Candle frames always
    carry their type (the unit cannot be inferred). Returns None when nothing fits.
    """
    declared = payload.get("type", payload.get("ty"))
    if isinstance(declared, str):
        return declared
    if "orderbook_units" in payload or "obu" in payload:
        return "orderbook"
    if "sequential_id" in payload or "sid" in payload:
        return "trade"
    if "assets" in payload or "ast" in payload:
        return "myAsset"
    if "order_type" in payload or "ot" in payload:
        return "myOrder"
    if any(key in payload for key in ("acc_trade_volume", "atv", "acc_trade_price", "atp")):
        return "ticker"
    return None


# -- JSON types ------------------------------------------------------------------------------------
# The JSON type of each DEFAULT field (docs/upbit-protocol.md §4): "number", "integer" or "string",
# with a trailing "?" where Upbit sends null too. The collector refuses an event whose field has
# another type (collector.decode). Fields not listed (booleans, the type, nested lists) are not
# checked; absent fields are fine (older frames lack some).


def _typed(**groups: str) -> Mapping[str, str]:
    """``number="a b", string="c"`` -> ``{"a": "number", "b": "number", "c": "string"}``
    (``number_null`` stands for ``"number?"``), plus the fields every quotation type has."""
    table = {"code": "string", "timestamp": "integer", "stream_type": "string"}
    for kind, names in groups.items():
        table.update(dict.fromkeys(names.split(), kind.replace("_null", "?")))
    return MappingProxyType(table)


FIELD_TYPES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "ticker": _typed(
            number="opening_price high_price low_price trade_price prev_closing_price "
            "change_price signed_change_price change_rate signed_change_rate trade_volume "
            "acc_trade_volume acc_trade_volume_24h acc_trade_price acc_trade_price_24h "
            "acc_ask_volume acc_bid_volume highest_52_week_price lowest_52_week_price",
            string="change trade_date trade_time ask_bid highest_52_week_date "
            "lowest_52_week_date market_state market_warning",
            string_null="delisting_date",
            integer="trade_timestamp",
        ),
        "trade": _typed(
            number="trade_price trade_volume prev_closing_price change_price best_ask_price "
            "best_ask_size best_bid_price best_bid_size",
            string="ask_bid change trade_date trade_time",
            integer="trade_timestamp sequential_id",
        ),
        "orderbook": _typed(number="total_ask_size total_bid_size level"),
        "candle": _typed(
            number="opening_price high_price low_price trade_price candle_acc_trade_volume "
            "candle_acc_trade_price",
            string="candle_date_time_utc candle_date_time_kst",
        ),
        "myOrder": _typed(
            string="uuid ask_bid order_type state",
            string_null="trade_uuid time_in_force identifier smp_type",
            number="avg_price reserved_fee remaining_fee paid_fee locked executed_funds "
            "prevented_locked",
            number_null="price volume remaining_volume executed_volume trade_fee prevented_volume",
            integer="trades_count order_timestamp",
            integer_null="trade_timestamp",
        ),
        "myAsset": _typed(string="asset_uuid", integer="asset_timestamp"),
    }
)
"""Per type (``candle`` for every candle unit): DEFAULT field name -> its JSON type."""

NESTED_FIELD_TYPES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "orderbook_units": MappingProxyType(
            dict.fromkeys(("ask_price", "bid_price", "ask_size", "bid_size"), "number")
        ),
        "assets": MappingProxyType({"currency": "string", "balance": "number", "locked": "number"}),
    }
)
"""JSON types of the items of nested lists, keyed by the list's DEFAULT name."""


def field_types(type_name: str) -> Mapping[str, str]:
    """The field -> JSON type table of a data type (empty for an unknown type)."""
    return FIELD_TYPES.get("candle" if type_name.startswith("candle.") else type_name, {})
