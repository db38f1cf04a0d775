"""One renaming table for SIMPLE <-> DEFAULT names, shared by the decoder and the emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.collector.decode import decode_frame
from upbit_fanout.emulator.protocol import render_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.upbit_fields import (
    LIST_SUBSCRIPTIONS,
    LIST_SUBSCRIPTIONS_ITEM,
    LIST_SUBSCRIPTIONS_METHOD,
    PRIVATE_TYPES,
    QUOTATION_TYPES,
    nested_tables,
    table_for,
    to_default,
    to_simple,
)

NAMES = (*QUOTATION_TYPES, *PRIVATE_TYPES, LIST_SUBSCRIPTIONS_METHOD)


def _tables(name: str) -> tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]]:
    if name == LIST_SUBSCRIPTIONS_METHOD:
        return LIST_SUBSCRIPTIONS, {"result": LIST_SUBSCRIPTIONS_ITEM}
    return table_for(name), nested_tables(name)


@pytest.mark.parametrize("name", NAMES)
def test_every_table_is_one_to_one(name: str) -> None:
    # Two DEFAULT names sharing an abbreviation would make SIMPLE frames ambiguous.
    table, nested = _tables(name)
    for one in (table, *nested.values()):
        assert len(set(one.values())) == len(one)
        # no abbreviation is the DEFAULT name of another field (a key would be read two ways)
        assert all(short == full or short not in one for full, short in one.items())
    for full in nested:
        assert full in table


def _unknown(*tables: Mapping[str, str]) -> st.SearchStrategy[str]:
    """Keys neither naming of these tables knows: the documented pass-through case."""
    known = {key for table in tables for pair in table.items() for key in pair}
    return st.text(min_size=1, max_size=6).filter(lambda key: key not in known)


_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=4)


@st.composite
def _objects(draw: st.DrawFn, *, simple: bool) -> tuple[str, dict[str, Any]]:
    """(name, an object of that type in one naming: some of its fields, nested items included,
    and a few unknown keys)."""
    name = draw(st.sampled_from(NAMES))
    table, nested = _tables(name)
    keys: list[str] = draw(st.lists(st.sampled_from(sorted(table)), unique=True))
    extra = draw(st.lists(_unknown(table, *nested.values()), max_size=2, unique=True))
    obj: dict[str, Any] = {}
    for key in keys:
        items = nested.get(key)
        if items is None:
            obj[key] = draw(_scalars)
            continue
        unknown_item_key = _unknown(items)
        item = st.dictionaries(st.sampled_from(sorted(items)) | unknown_item_key, _scalars)
        obj[key] = draw(st.lists(item | _scalars, max_size=3))
    for key in extra:
        obj[key] = draw(_scalars)
    return name, (to_simple(name, obj) if simple else obj)


@given(_objects(simple=False))
def test_to_default_undoes_to_simple(case: tuple[str, dict[str, Any]]) -> None:
    name, obj = case
    assert to_default(name, to_simple(name, obj)) == obj


@given(_objects(simple=True))
def test_to_simple_undoes_to_default(case: tuple[str, dict[str, Any]]) -> None:
    name, obj = case
    assert to_simple(name, to_default(name, obj)) == obj


@pytest.mark.parametrize("name", NAMES)
def test_every_default_name_becomes_its_simple_name(name: str) -> None:
    table, nested = _tables(name)
    obj: dict[str, Any] = dict.fromkeys(table, 1)
    for full, items in nested.items():
        obj[full] = [dict.fromkeys(items, 2)]
    simple = to_simple(name, obj)
    assert set(simple) == set(table.values())
    for full, items in nested.items():
        assert simple[table[full]] == [dict.fromkeys(items.values(), 2)]


def test_unknown_fields_and_types_pass_through_unchanged() -> None:
    assert to_simple("ticker", {"brand_new": 1, "trade_price": 2}) == {"brand_new": 1, "tp": 2}
    assert to_default("ticker", {"brand_new": 1, "tp": 2}) == {"brand_new": 1, "trade_price": 2}
    # a list under a key the table does not know keeps its items' keys
    assert to_default("orderbook", {"units": [{"ap": 1}]}) == {"units": [{"ap": 1}]}
    # a type the tables do not know: a copy, not the same dict
    obj = {"ty": "news", "tp": 1}
    assert to_default("news", obj) == obj
    assert to_default("news", obj) is not obj
    # abbreviations are per type: "ap" is ask_price in a book unit, avg_price in myOrder
    assert to_default("myOrder", {"ap": 1}) == {"avg_price": 1}
    assert to_default("orderbook", {"obu": [{"ap": 1}]}) == {"orderbook_units": [{"ask_price": 1}]}


@pytest.mark.parametrize("type_", ["orderbook", "myAsset", "trade"])
def test_the_decoder_reads_what_the_emulator_writes_in_simple(type_: str) -> None:
    # Both sides use the one table: a SIMPLE frame the emulator renders decodes to the same
    # object as its DEFAULT frame.
    payloads: dict[str, dict[str, Any]] = {
        "orderbook": {
            "type": "orderbook",
            "code": "KRW-BTC",
            "total_ask_size": loads_exact("1.50"),
            "total_bid_size": loads_exact("2.5E-3"),
            "orderbook_units": [
                {"ask_price": 101, "bid_price": 100, "ask_size": 1, "bid_size": 2},
            ],
            "level": 0,
        },
        "myAsset": {
            "type": "myAsset",
            "asset_uuid": "e635f223-1609-4969-8fb6-4376937baad6",
            "assets": [{"currency": "KRW", "balance": loads_exact("1386929.37231066771348207123")}],
            "asset_timestamp": 1710146517259,
        },
        "trade": {
            "type": "trade",
            "code": "KRW-BTC",
            "trade_price": loads_exact("1.16539E8"),
            "sequential_id": 17303368620470000,
        },
    }
    default = decode_frame(render_event(type_, payloads[type_], "REALTIME", simple=False))
    simple = decode_frame(render_event(type_, payloads[type_], "REALTIME", simple=True))
    assert simple[0].exact() == default[0].exact()
    assert simple[0].raw is None  # renamed, so re-encoded from the exact object
