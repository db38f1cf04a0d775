"""Requests that ask for snapshots only for what is new, levels, and LIST_SUBSCRIPTIONS checks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.subscriptions.reconcile import (
    Entry,
    RequestSize,
    Subscription,
    compare_listing,
    desired_state,
    list_message,
    listed_streams,
    next_message,
    parking_message,
    request_entries,
    streams_serving,
    subscription_for,
)
from upbit_fanout.subscriptions.topics import parse_topic


def _sub(*topics: str) -> Subscription:
    return subscription_for(parse_topic(text) for text in topics)


def test_codes_already_streaming_are_asked_realtime_only_and_new_ones_with_a_snapshot() -> None:
    before = _sub("ticker:KRW-BTC", "ticker:KRW-ETH", "trade:KRW-BTC")
    after = _sub("ticker:KRW-BTC", "ticker:KRW-ETH", "ticker:KRW-XRP", "trade:KRW-BTC")
    assert next_message(after, before, "T") == [
        {"ticket": "T"},
        {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"], "is_only_realtime": True},
        {"type": "ticker", "codes": ["KRW-XRP"]},
        {"type": "trade", "codes": ["KRW-BTC"], "is_only_realtime": True},
        {"format": "DEFAULT"},
    ]


def test_a_fresh_connection_asks_every_snapshot() -> None:
    wanted = _sub("ticker:KRW-BTC", "orderbook:KRW-BTC.15")
    assert next_message(wanted, None, "T", "SIMPLE") == [
        {"ticket": "T"},
        {"type": "ticker", "codes": ["KRW-BTC"]},
        {"type": "orderbook", "codes": ["KRW-BTC.15"]},
        {"format": "SIMPLE"},
    ]


REQUESTS: list[tuple[list[str], list[str], list[dict[str, Any]]]] = [
    # a deeper book is another stream: it gets its snapshot
    (
        ["orderbook:KRW-BTC.5", "orderbook:KRW-ETH"],
        ["orderbook:KRW-BTC.15", "orderbook:KRW-ETH"],
        [
            {"type": "orderbook", "codes": ["KRW-ETH"], "is_only_realtime": True},
            {"type": "orderbook", "codes": ["KRW-BTC.15"]},
        ],
    ),
    # one orderbook object per level, levels after the ungrouped one
    (
        ["orderbook:KRW-BTC"],
        ["orderbook:KRW-BTC", "orderbook:KRW-BTC.15@10000", "orderbook:KRW-ETH@1000"],
        [
            {"type": "orderbook", "codes": ["KRW-BTC"], "is_only_realtime": True},
            {"type": "orderbook", "codes": ["KRW-ETH"], "level": 1000},
            {"type": "orderbook", "codes": ["KRW-BTC.15"], "level": 10000},
        ],
    ),
    # a level stream already applied stays realtime only
    (
        ["orderbook:KRW-BTC@0.1"],
        ["orderbook:KRW-BTC@0.1", "ticker:KRW-BTC"],
        [
            {"type": "ticker", "codes": ["KRW-BTC"]},
            {"type": "orderbook", "codes": ["KRW-BTC"], "level": 0.1, "is_only_realtime": True},
        ],
    ),
    # private types take no flags
    (
        ["myOrder:KRW-BTC", "myAsset"],
        ["myOrder:KRW-BTC", "myOrder:KRW-ETH", "myAsset"],
        [{"type": "myOrder", "codes": ["KRW-BTC", "KRW-ETH"]}, {"type": "myAsset"}],
    ),
]


@pytest.mark.parametrize(("before", "after", "entries"), REQUESTS)
def test_request_entries_from_a_table(
    before: list[str], after: list[str], entries: list[dict[str, Any]]
) -> None:
    applied = _sub(*before).streams()
    assert [e.as_json() for e in request_entries(_sub(*after), applied)] == entries


def test_streams_serving_maps_topics_to_the_streams_that_feed_them() -> None:
    wanted = _sub("orderbook:KRW-BTC.15", "orderbook:KRW-BTC.5@100", "myOrder:*", "ticker:KRW-A")
    topics = [parse_topic("orderbook:KRW-BTC.1"), parse_topic("myOrder:KRW-ETH")]
    assert streams_serving(wanted, topics) == {
        ("orderbook", "KRW-BTC.15", None),
        ("myOrder", None, None),
    }
    assert streams_serving(wanted, [parse_topic("orderbook:KRW-BTC@100")]) == {
        ("orderbook", "KRW-BTC.5", "100")
    }


def test_listing_answers_are_compared_with_what_was_sent() -> None:
    sent = _sub("ticker:KRW-BTC", "ticker:KRW-ETH", "orderbook:KRW-BTC.15", "orderbook:KRW-A@10")
    listing = [
        {"type": "ticker", "codes": ["KRW-BTC"]},
        {"type": "orderbook", "codes": ["KRW-BTC"], "level": 0},  # the suffix not echoed
        {"type": "orderbook", "codes": ["KRW-A"], "level": 10.0},
        {"type": "trade", "codes": ["KRW-XRP"]},
        "junk",
    ]
    check = compare_listing(sent, listed_streams(listing))
    assert not check.ok
    assert check.missing == {("ticker", "KRW-ETH", None)}
    assert check.extra == {("trade", "KRW-XRP", None)}
    assert ("orderbook", "KRW-BTC.15", None) in check.confirmed
    assert ("orderbook", "KRW-A", "10") in check.confirmed
    assert compare_listing(sent, sent.streams()).ok


def test_private_listing_without_codes_means_every_market() -> None:
    sent = _sub("myOrder:*", "myAsset")
    listing = [{"type": "myAsset"}, {"type": "myOrder", "codes": []}]
    assert compare_listing(sent, listed_streams(listing)).ok
    assert listed_streams({"not": "a list"}) == frozenset()


def test_list_and_parking_messages() -> None:
    assert list_message("T", "SIMPLE") == [
        {"ticket": "T"},
        {"method": "LIST_SUBSCRIPTIONS"},
        {"format": "SIMPLE"},
    ]
    last = _sub("trade:KRW-ETH", "orderbook:KRW-BTC.5")
    assert parking_message(last, "T") == [
        {"ticket": "T"},
        {"type": "ticker", "codes": ["KRW-ETH"], "is_only_snapshot": True},
        {"format": "DEFAULT"},
    ]
    assert parking_message(_sub("orderbook:KRW-BTC.5"), "T")[1]["codes"] == ["KRW-BTC"]  # type: ignore[index]
    assert parking_message(_sub("myOrder:*", "myAsset"), "T") is None


codes = st.sampled_from(["KRW-BTC", "KRW-ETH", "KRW-XRP", "BTC-ETH", "USDT-BTC"])
krw = st.sampled_from(["KRW-BTC", "KRW-ETH", "KRW-XRP"])
topic_texts = st.one_of(
    st.builds(lambda t, c: f"{t}:{c}", st.sampled_from(["ticker", "trade", "candle.1m"]), codes),
    st.builds(lambda c: f"orderbook:{c}", codes),
    st.builds(lambda c, d: f"orderbook:{c}.{d}", codes, st.sampled_from([1, 5, 15, 30])),
    st.builds(
        lambda c, d, lv: f"orderbook:{c}{d}@{lv}",
        krw,
        st.sampled_from(["", ".5", ".15"]),
        st.sampled_from(["10", "1000", "0.1"]),
    ),
)
unions = st.lists(topic_texts, max_size=12)


@given(unions, unions)
def test_the_request_always_covers_the_desired_state(before: list[str], after: list[str]) -> None:
    old, new = _sub(*before), _sub(*after)
    entries = request_entries(new, old.streams())
    asked = {key for entry in entries for key in entry.streams()}
    assert asked == new.streams()  # every wanted stream, nothing else
    for entry in entries:
        if not entry.only_realtime:
            # codes already applied never get an object that asks for their snapshot
            assert not set(entry.streams()) & old.streams()
        else:
            assert set(entry.streams()) <= old.streams()
        assert not entry.only_snapshot


@given(unions)
def test_resending_an_applied_subscription_asks_no_snapshot(texts: list[str]) -> None:
    sub = _sub(*texts)
    assert all(entry.only_realtime for entry in request_entries(sub, sub.streams()))
    assert request_entries(sub, ()) == sub.entries


@given(unions, unions)
def test_the_size_bound_holds_for_any_split(before: list[str], after: list[str]) -> None:
    size = RequestSize()
    for text in after:
        size.add(parse_topic(text))
    new = _sub(*after)
    if new.is_empty:
        return
    ticket = "upbit-fanout-00000000-0000-0000-0000-000000000000"
    message = new.request(ticket, "DEFAULT", _sub(*before).streams())
    assert len(orjson.dumps(message)) <= size.bytes


def test_desired_state_keeps_levels_apart() -> None:
    state = desired_state({"a": ["orderbook:KRW-BTC@10000", "orderbook:KRW-BTC.5@10000"]})
    assert state.public.entries == (Entry("orderbook", ("KRW-BTC",), "10000"),)
    assert {str(t) for t in state.topics} == {
        "orderbook:KRW-BTC@10000",
        "orderbook:KRW-BTC.5@10000",
    }


@given(unions)
def test_a_listing_of_what_was_sent_agrees_with_or_without_depth_suffixes(texts: list[str]) -> None:
    sent = _sub(*texts)
    as_sent: list[dict[str, Any]] = [
        {"type": e.type, "codes": list(e.codes or ()), "level": float(e.level or 0)}
        for e in sent.entries
    ]
    assert compare_listing(sent, listed_streams(as_sent)).ok
    bare = [{**item, "codes": [c.partition(".")[0] for c in item["codes"]]} for item in as_sent]
    assert not compare_listing(sent, listed_streams(bare)).missing
    if sent.streams():
        fewer = [{**item, "codes": item["codes"][1:]} for item in as_sent]
        assert compare_listing(sent, listed_streams(fewer)).missing
