"""The pure decisions behind the private streams: identities, queries, REST -> event, the diff."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.helpers import SAMPLES
from upbit_fanout.collector.intents import RECORDED_TOPICS, plan
from upbit_fanout.collector.private_sync import (
    asset_event,
    asset_identity,
    changed_currencies,
    closed_windows,
    gap_event,
    identity,
    missing_order_events,
    order_event,
    order_identity,
    parse_remaining_req,
    rest_base_url,
    rest_query,
    unfinished_orders,
)
from upbit_fanout.emulator.auth import query_hash
from upbit_fanout.subscriptions.topics import parse_topic

REST_ORDER: dict[str, Any] = {
    "uuid": "9ca023a5-851b-4fec-9f0a-48cd83c2eaae",
    "side": "ask",
    "ord_type": "limit",
    "price": "153559000.0",
    "state": "done",
    "market": "KRW-BTC",
    "created_at": "2026-12-01T21:00:00+09:00",
    "volume": "0.00200000",
    "remaining_volume": "0",
    "reserved_fee": "0",
    "remaining_fee": "0",
    "paid_fee": "153.559",
    "locked": "0",
    "executed_volume": "0.002",
    "executed_funds": "307118.0",
    "trades_count": 2,
    "time_in_force": None,
    "identifier": "bot-1",
}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"uuid": "u", "state": "wait", "executed_volume": 0}, "myOrder|u|wait|0"),
        ({"uuid": "u", "state": "trade", "trade_uuid": "t1"}, "myOrder|u|trade|t1"),
        # the same state with the same amount written two ways is one state
        ({"uuid": "u", "state": "done", "executed_volume": "0.00200000"}, "myOrder|u|done|0.002"),
        (
            {"uuid": "u", "state": "done", "executed_volume": Decimal("2E-3")},
            "myOrder|u|done|0.002",
        ),
        ({"uuid": "u", "state": "cancel", "executed_volume": "0.0"}, "myOrder|u|cancel|0"),
        ({"state": "wait"}, None),
        ({"uuid": "u"}, None),
    ],
)
def test_order_identity(event: dict[str, Any], expected: str | None) -> None:
    assert order_identity(event) == expected


def test_a_rest_order_has_the_identity_of_the_websocket_event_of_the_same_state() -> None:
    ws_done = {"uuid": REST_ORDER["uuid"], "state": "done", "executed_volume": Decimal("0.002")}
    assert order_identity(order_event(REST_ORDER, now_ms=1)) == order_identity(ws_done)


def test_every_sample_private_event_has_an_identity() -> None:
    for type_name in ("myOrder", "myAsset"):
        lines = (SAMPLES / f"{type_name}.jsonl").read_text().splitlines()
        for line in lines:
            record = json.loads(line)
            frame = record.get("frame", record) if isinstance(record, dict) else record
            if isinstance(frame, str):
                frame = json.loads(frame)
            if isinstance(frame, dict) and frame.get("type", frame.get("ty")) == type_name:
                assert identity(type_name, frame) is not None, line


def test_asset_identity_is_its_uuid_or_its_content() -> None:
    assert asset_identity({"asset_uuid": "a-1", "assets": []}) == "myAsset|a-1"
    one = asset_event(
        [
            {"currency": "KRW", "balance": "1.50", "locked": "0"},
            {"currency": "BTC", "balance": "2"},
        ],
        now_ms=5,
    )
    two = asset_event(
        [
            {"currency": "BTC", "balance": "2.0"},
            {"currency": "KRW", "balance": "1.5", "locked": "0"},
        ],
        now_ms=9,
    )
    assert asset_identity(one) == asset_identity(two)  # same balances, other times and order
    assert identity("ticker", {}) is None


def test_order_event_keeps_exact_numbers_in_the_myorder_shape() -> None:
    event = order_event(REST_ORDER, now_ms=1_796_126_400_500)
    assert event["type"] == "myOrder"
    assert event["code"] == "KRW-BTC"
    assert event["ask_bid"] == "ASK"
    assert event["order_type"] == "limit"
    assert event["price"] == Decimal("153559000.0")
    assert str(event["volume"]) == "0.00200000"  # the digits REST wrote
    assert event["avg_price"] == Decimal("153559000")
    assert event["order_timestamp"] == 1_796_126_400_000
    assert event["timestamp"] == 1_796_126_400_500
    assert event["trade_uuid"] is None


def test_missing_order_events_skips_what_the_stream_holds_and_sorts_by_creation() -> None:
    older = {**REST_ORDER, "uuid": "b", "created_at": "2026-12-01T20:00:00+09:00"}
    newer = {**REST_ORDER, "uuid": "a"}
    waiting = {**REST_ORDER, "uuid": "c", "state": "wait", "executed_volume": "0.001"}
    seen = {"myOrder|a|done|0.002"}
    got = missing_order_events([newer, waiting, older, older], seen, now_ms=1)
    assert [ident for ident, _ in got] == [
        "myOrder|b|done|0.002",
        "myOrder|c|wait|0.001",  # a partly filled resting order: a new state
    ]


def test_changed_currencies() -> None:
    known = {"KRW": (Decimal("100"), Decimal("0")), "BTC": (Decimal("1"), Decimal("0"))}
    rows = [
        {"currency": "KRW", "balance": "100.0", "locked": "0"},
        {"currency": "BTC", "balance": "0.9", "locked": "0.1"},
        {"currency": "ETH", "balance": "3", "locked": "0"},
    ]
    assert changed_currencies(rows, known) == ["BTC", "ETH"]


def test_queries_are_hashed_as_sent() -> None:
    query = rest_query([("states[]", "done"), ("states[]", "cancel"), ("market", "KRW-BTC")])
    assert query == "states[]=done&states[]=cancel&market=KRW-BTC"
    assert rest_query([("start_time", "2026-12-01T21:00:00+09:00")]) == (
        "start_time=2026-12-01T21%3A00%3A00%2B09%3A00"
    )
    assert len(query_hash(query)) == 128


def test_closed_windows_reach_back_and_split_by_week() -> None:
    week = 7 * 24 * 3600 * 1000
    assert closed_windows(10_000, 20_000, lookback_ms=5_000) == [(5_000, 20_000)]
    assert closed_windows(week, 2 * week + 5, lookback_ms=0) == [
        (week, 2 * week),
        (2 * week, 2 * week + 5),
    ]


def test_remaining_req_and_rest_url() -> None:
    assert parse_remaining_req("group=default; min=1800; sec=29") == ("default", 29)
    assert parse_remaining_req("group=order; sec=0") == ("order", 0)
    assert parse_remaining_req(None) == (None, None)
    assert rest_base_url("wss://api.upbit.com/websocket/v1/private") == "https://api.upbit.com"
    assert rest_base_url("ws://127.0.0.1:8765/websocket/v1/private") == "http://127.0.0.1:8765"


def test_gap_event_shape() -> None:
    assert gap_event(1, 2, "why") == {"type": "gap", "from": 1, "to": 2, "reason": "why"}


def test_recording_adds_every_market_and_myasset_to_the_private_subscription_only() -> None:
    intents = {"bot": ["myOrder:KRW-BTC", "ticker:KRW-BTC"]}
    recorded = plan(intents, private_allowed=True, record_private=True)
    following = plan(intents, private_allowed=True)
    assert recorded.private_topics == following.private_topics == {parse_topic("myOrder:KRW-BTC")}
    assert [e.as_json() for e in recorded.private.entries] == [
        {"type": "myOrder"},
        {"type": "myAsset"},
    ]
    assert [e.as_json() for e in following.private.entries] == [
        {"type": "myOrder", "codes": ["KRW-BTC"]}
    ]
    nothing = plan({}, private_allowed=True, record_private=True)
    assert not nothing.private.is_empty
    assert nothing.private_topics == frozenset()
    assert plan({}, private_allowed=False, record_private=True).private.is_empty
    assert {str(t) for t in RECORDED_TOPICS} == {"myOrder:*", "myAsset"}


def test_unfinished_orders_are_those_whose_newest_state_is_not_final() -> None:
    events = [
        {"uuid": "a", "state": "wait"},
        {"uuid": "b", "state": "wait"},
        {"uuid": "a", "state": "trade"},
        {"uuid": "c", "state": "wait"},
        {"uuid": "b", "state": "cancel"},
        {"uuid": "c", "state": "done"},
        {"type": "gap"},
    ]
    assert unfinished_orders(events) == ["a"]
