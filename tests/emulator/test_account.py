"""The simulated account: Upbit order lifecycles, exact funds, myOrder/myAsset payload shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import SAMPLES
from upbit_fanout.emulator.account import Account, OrderRejected, PrivateEvent
from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.jsontext import dumps_exact

NOW = 1_790_000_000_000
FEE = Decimal("0.0005")
BTC_PRICE = Decimal("142009000")


def _sample(name: str) -> dict[str, Any]:
    first = json.loads((SAMPLES / name).read_text().splitlines()[0])
    assert isinstance(first, dict)
    return {k: v for k, v in first.items() if k != "stream_type"}


MY_ORDER_KEYS = set(_sample("myOrder.jsonl"))  # line 1 is the full current shape
MY_ASSET_KEYS = set(_sample("myAsset.jsonl"))
ASSET_ITEM_KEYS = set(_sample("myAsset.jsonl")["assets"][0])

# JSON types per docs/upbit-protocol.md §4.5 ("number or null" etc.)
ORDER_TYPES: dict[str, set[str]] = {
    "type": {"string"},
    "code": {"string"},
    "uuid": {"string"},
    "ask_bid": {"string"},
    "order_type": {"string"},
    "state": {"string"},
    "trade_uuid": {"string", "null"},
    "price": {"number", "null"},
    "avg_price": {"number"},
    "volume": {"number", "null"},
    "remaining_volume": {"number", "null"},
    "executed_volume": {"number", "null"},
    "trades_count": {"integer"},
    "reserved_fee": {"number"},
    "remaining_fee": {"number"},
    "paid_fee": {"number"},
    "locked": {"number"},
    "executed_funds": {"number"},
    "time_in_force": {"string", "null"},
    "trade_fee": {"number", "null"},
    "is_maker": {"boolean", "null"},
    "identifier": {"string", "null"},
    "smp_type": {"string", "null"},
    "prevented_volume": {"number", "null"},
    "prevented_locked": {"number"},
    "trade_timestamp": {"integer", "null"},
    "order_timestamp": {"integer"},
    "timestamp": {"integer"},
}


def kind(value: Any, *, integer: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) and integer:
        return "integer"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def check_events(events: list[PrivateEvent]) -> None:
    """Every event has the sample's keys and the documented JSON types, as a client parses it."""
    for type_, code, payload in events:
        parsed = json.loads(dumps_exact(payload))
        assert parsed["type"] == type_
        if type_ == "myOrder":
            assert code == payload["code"]
            assert set(parsed) == MY_ORDER_KEYS
            assert set(ORDER_TYPES) == MY_ORDER_KEYS
            for key, value in parsed.items():
                integer = key in ("trades_count", "trade_timestamp", "order_timestamp", "timestamp")
                assert kind(value, integer=integer) in ORDER_TYPES[key], (key, value)
                if integer and value is not None:
                    assert type(payload[key]) is int
            trade = payload["state"] == "trade"
            assert (payload["trade_uuid"] is not None) == trade
            assert (payload["trade_fee"] is not None) == trade
            assert (payload["is_maker"] is not None) == trade
            assert (payload["trade_timestamp"] is not None) == trade
        else:
            assert type_ == "myAsset"
            assert code is None
            assert set(parsed) == MY_ASSET_KEYS
            assert parsed["assets"]
            for item in payload["assets"]:
                assert set(item) == ASSET_ITEM_KEYS
                assert isinstance(item["balance"], Decimal)
                assert isinstance(item["locked"], Decimal)
                assert item["balance"] >= 0
                assert item["locked"] >= 0
            assert type(payload["asset_timestamp"]) is int
            assert type(payload["timestamp"]) is int


def orders(events: list[PrivateEvent]) -> list[dict[str, Any]]:
    return [p for t, _, p in events if t == "myOrder"]


def assets(events: list[PrivateEvent]) -> list[dict[str, Any]]:
    return [p for t, _, p in events if t == "myAsset"]


def total(account: Account, currency: str) -> Decimal:
    balance, locked = account.balances().get(currency, (Decimal(0), Decimal(0)))
    return balance + locked


def account(**kw: Any) -> Account:
    balances = {"KRW": Decimal("10000000.38271506438112906"), "BTC": Decimal("0.5")}
    return Account(balances=kw.pop("balances", balances), fee_rate=FEE, **kw)


# --- limit orders ---------------------------------------------------------------------------


def test_limit_bid_rests_then_fills_partly_then_fully() -> None:
    acc = account()
    krw0 = total(acc, "KRW")
    price, volume = Decimal("141000000"), Decimal("0.01")
    uid, events = acc.place_order(
        code="KRW-BTC",
        side="bid",
        ord_type="limit",
        price=price,
        volume=volume,
        now_ms=NOW,
        market_price=BTC_PRICE,
        identifier="test-1",
    )
    check_events(events)
    assert [t for t, _, _ in events] == ["myOrder", "myAsset"]
    wait = orders(events)[0]
    cost = price * volume
    assert wait["state"] == "wait"
    assert wait["uuid"] == uid
    assert wait["ask_bid"] == "BID"
    assert wait["order_type"] == "limit"
    assert wait["price"] == price
    assert wait["volume"] == volume
    assert wait["remaining_volume"] == volume
    assert wait["executed_volume"] == 0
    assert wait["reserved_fee"] == cost * FEE == Decimal("705.0000")
    assert wait["locked"] == cost + cost * FEE
    assert wait["identifier"] == "test-1"
    assert wait["order_timestamp"] == NOW
    assert acc.balances()["KRW"][1] == cost * (1 + FEE)
    assert assets(events)[0]["assets"] == [
        {"currency": "KRW", "balance": krw0 - cost * (1 + FEE), "locked": cost * (1 + FEE)}
    ]
    assert acc.open_orders() == [uid]

    # the market trades above the bid: nothing happens
    assert acc.on_trade("KRW-BTC", Decimal("141001000"), Decimal(1), now_ms=NOW + 1) == []
    # a trade at the bid fills part of it, as maker, at the order's price
    part = acc.on_trade("KRW-BTC", price, Decimal("0.004"), now_ms=NOW + 2)
    check_events(part)
    fill = orders(part)[0]
    assert fill["state"] == "trade"
    assert fill["is_maker"] is True
    assert fill["price"] == price
    assert fill["volume"] == Decimal("0.004")
    assert fill["executed_volume"] == Decimal("0.004")
    assert fill["remaining_volume"] == Decimal("0.006")
    assert fill["executed_funds"] == price * Decimal("0.004")
    assert fill["trade_fee"] == price * Decimal("0.004") * FEE
    assert fill["paid_fee"] == fill["trade_fee"]
    assert fill["remaining_fee"] == fill["reserved_fee"] - fill["paid_fee"]
    assert fill["locked"] == price * Decimal("0.006") + fill["remaining_fee"]
    assert fill["avg_price"] == price
    assert fill["trades_count"] == 1
    assert fill["trade_timestamp"] == NOW + 2
    assert {a["currency"] for a in assets(part)[0]["assets"]} == {"KRW", "BTC"}

    # a lower trade fills the rest: trade, then done
    rest = acc.on_trade("KRW-BTC", Decimal("140000000"), Decimal(5), now_ms=NOW + 3)
    check_events(rest)
    second, done = orders(rest)
    assert second["price"] == price  # the maker's price, not the trade's
    assert second["trade_uuid"] != fill["trade_uuid"]
    assert second["trades_count"] == 2
    assert done["state"] == "done"
    assert done["remaining_volume"] == 0
    assert done["executed_volume"] == volume
    assert done["locked"] == 0
    assert done["paid_fee"] == done["reserved_fee"]
    assert acc.open_orders() == []
    assert acc.balances()["KRW"][1] == 0
    assert total(acc, "KRW") == krw0 - cost * (1 + FEE)
    assert total(acc, "BTC") == Decimal("0.5") + volume
    assert acc.order(uid) == done


def test_limit_ask_pays_its_fee_from_the_proceeds() -> None:
    acc = account()
    price, volume = Decimal("143000000"), Decimal("0.2")
    uid, events = acc.place_order(
        code="KRW-BTC",
        side="ask",
        ord_type="limit",
        price=price,
        volume=volume,
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    check_events(events)
    wait = orders(events)[0]
    assert wait["reserved_fee"] == 0
    assert wait["locked"] == volume
    assert acc.balances()["BTC"] == (Decimal("0.3"), volume)
    filled = acc.on_trade("KRW-BTC", Decimal("143001000"), Decimal(1), now_ms=NOW + 5)
    check_events(filled)
    trade, done = orders(filled)
    assert trade["ask_bid"] == "ASK"
    assert trade["trade_fee"] == price * volume * FEE
    assert done["state"] == "done"
    assert acc.balances()["BTC"] == (Decimal("0.3"), Decimal(0))
    assert total(acc, "KRW") == Decimal("10000000.38271506438112906") + price * volume * (1 - FEE)
    assert acc.order(uid)["state"] == "done"


def test_marketable_limit_takes_at_the_market_price_and_returns_the_change() -> None:
    acc = account()
    krw0 = total(acc, "KRW")
    limit, volume = Decimal("150000000"), Decimal("0.01")
    _, events = acc.place_order(
        code="KRW-BTC",
        side="bid",
        ord_type="limit",
        price=limit,
        volume=volume,
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    check_events(events)
    wait, trade, done = orders(events)
    assert (wait["state"], trade["state"], done["state"]) == ("wait", "trade", "done")
    assert trade["is_maker"] is False
    assert trade["price"] == BTC_PRICE
    assert trade["trade_fee"] == BTC_PRICE * volume * FEE
    assert total(acc, "KRW") == krw0 - BTC_PRICE * volume * (1 + FEE)
    assert acc.balances()["KRW"][1] == 0


def test_cancel_releases_the_locked_funds_exactly() -> None:
    acc = account()
    before = acc.balances()
    uid, _ = acc.place_order(
        code="KRW-BTC",
        side="bid",
        ord_type="limit",
        price=Decimal("100000000"),
        volume=Decimal("0.0123"),
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    events = acc.cancel_order(uid, now_ms=NOW + 9)
    check_events(events)
    cancel = orders(events)[0]
    assert cancel["state"] == "cancel"
    assert cancel["remaining_volume"] == Decimal("0.0123")
    assert cancel["locked"] > 0  # as Upbit's cancel frame: what was locked
    assert cancel["remaining_fee"] == 0
    assert cancel["timestamp"] == NOW + 9
    assert assets(events)[0]["assets"][0]["locked"] == 0
    assert acc.balances() == before
    with pytest.raises(OrderRejected) as excinfo:
        acc.cancel_order(uid, now_ms=NOW + 10)
    assert excinfo.value.name == "order_not_found"
    with pytest.raises(OrderRejected, match="no order"):
        acc.cancel_order("00000000-0000-4000-8000-000000000000", now_ms=NOW)


# --- market and best orders -----------------------------------------------------------------


def test_price_order_is_a_market_buy_for_an_amount() -> None:
    acc = account()
    krw0 = total(acc, "KRW")
    amount = Decimal("100000")
    uid, events = acc.place_order(
        code="KRW-BTC",
        side="bid",
        ord_type="price",
        price=amount,
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    check_events(events)
    trade, done = orders(events)
    bought = (amount / BTC_PRICE).quantize(Decimal("1E-8"), rounding="ROUND_DOWN")
    assert trade["state"] == "trade"
    assert trade["order_type"] == "price"
    assert trade["is_maker"] is False
    assert trade["volume"] == bought
    assert trade["price"] == BTC_PRICE
    assert trade["remaining_volume"] is None
    assert done["state"] == "done"
    assert done["price"] == amount
    assert done["volume"] is None
    assert done["executed_volume"] == bought
    assert done["executed_funds"] == bought * BTC_PRICE
    assert done["paid_fee"] == bought * BTC_PRICE * FEE
    assert done["locked"] == 0
    assert total(acc, "KRW") == krw0 - bought * BTC_PRICE * (1 + FEE)
    assert total(acc, "BTC") == Decimal("0.5") + bought
    assert acc.balances()["KRW"][1] == 0
    assert acc.order(uid)["state"] == "done"


def test_market_order_sells_a_volume() -> None:
    acc = account()
    _, events = acc.place_order(
        code="KRW-BTC",
        side="ask",
        ord_type="market",
        volume=Decimal("0.1"),
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    check_events(events)
    trade, done = orders(events)
    assert trade["price"] == BTC_PRICE
    assert trade["volume"] == Decimal("0.1")
    assert done["state"] == "done"
    assert done["price"] is None  # a market sell has no price
    assert acc.balances()["BTC"] == (Decimal("0.4"), Decimal(0))
    expected = Decimal("10000000.38271506438112906") + BTC_PRICE / 10 * (1 - FEE)
    assert total(acc, "KRW") == expected


def test_ioc_fills_what_it_can_and_cancels_the_rest() -> None:
    acc = account()
    _, events = acc.place_order(
        code="KRW-BTC",
        side="ask",
        ord_type="limit",
        price=Decimal("140000000"),
        volume=Decimal("0.3"),
        time_in_force="ioc",
        now_ms=NOW,
        market_price=BTC_PRICE,
        available_volume=Decimal("0.1"),
    )
    check_events(events)
    trade, cancel = orders(events)
    assert trade["volume"] == Decimal("0.1")
    assert trade["time_in_force"] == "ioc"
    assert cancel["state"] == "cancel"
    assert cancel["executed_volume"] == Decimal("0.1")
    assert cancel["remaining_volume"] == Decimal("0.2")
    assert acc.balances()["BTC"] == (Decimal("0.4"), Decimal(0))
    assert acc.open_orders() == []


def test_fok_is_all_or_nothing() -> None:
    acc = account()
    before = acc.balances()
    _, events = acc.place_order(
        code="KRW-BTC",
        side="ask",
        ord_type="best",
        volume=Decimal("0.3"),
        time_in_force="fok",
        now_ms=NOW,
        market_price=BTC_PRICE,
        available_volume=Decimal("0.1"),
    )
    check_events(events)
    (cancel,) = orders(events)
    assert len(events) == 1
    assert cancel["state"] == "cancel"
    assert cancel["executed_volume"] == 0
    assert cancel["trades_count"] == 0
    assert acc.balances() == before
    _, events = acc.place_order(
        code="KRW-BTC",
        side="bid",
        ord_type="best",
        price=Decimal("50000"),
        time_in_force="fok",
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    check_events(events)
    assert [o["state"] for o in orders(events)] == ["trade", "done"]


def test_a_limit_ioc_that_cannot_take_is_cancelled_at_once() -> None:
    acc = account()
    before = acc.balances()
    _, events = acc.place_order(
        code="KRW-BTC",
        side="bid",
        ord_type="limit",
        price=Decimal("100000000"),
        volume=Decimal("0.01"),
        time_in_force="ioc",
        now_ms=NOW,
        market_price=BTC_PRICE,
    )
    check_events(events)
    assert [o["state"] for o in orders(events)] == ["cancel"]
    assert [t for t, _, _ in events] == ["myOrder"]  # nothing moved: no myAsset
    assert acc.balances() == before


# --- refusals -------------------------------------------------------------------------------


BID = {"side": "bid", "ord_type": "limit"}
P = Decimal("142000000")
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({**BID, "price": P, "volume": Decimal(1)}, "insufficient_funds_bid"),
    ({"side": "ask", "ord_type": "market", "volume": Decimal(2)}, "insufficient_funds_ask"),
    ({**BID, "price": P, "volume": Decimal("0.00001")}, "under_min_total_bid"),
    ({**BID, "price": P + 500, "volume": Decimal("0.01")}, "invalid_price_bid"),
    ({**BID, "price": P}, "validation_error"),  # no volume
    ({"side": "bid", "ord_type": "price", "price": P, "volume": Decimal(1)}, "validation_error"),
    ({"side": "bid", "ord_type": "market", "volume": Decimal("0.1")}, "validation_error"),
    ({"side": "ask", "ord_type": "best", "volume": Decimal("0.1")}, "validation_error"),  # no tif
    ({**BID, "side": "buy", "price": P, "volume": Decimal("0.01")}, "validation_error"),
    ({**BID, "ord_type": "stop", "price": P, "volume": Decimal("0.01")}, "validation_error"),
    ({**BID, "price": P, "volume": Decimal("0.000000001")}, "invalid_volume"),
    (
        {**BID, "price": P + 1_000_000, "volume": Decimal("0.01"), "time_in_force": "post_only"},
        "validation_error",
    ),
]


@pytest.mark.parametrize(("kwargs", "name"), REFUSED)
def test_bad_orders_are_refused_and_change_nothing(kwargs: dict[str, Any], name: str) -> None:
    acc = account()
    before = acc.balances()
    with pytest.raises(OrderRejected) as excinfo:
        acc.place_order(code="KRW-BTC", now_ms=NOW, market_price=BTC_PRICE, **kwargs)
    assert excinfo.value.name == name
    assert isinstance(excinfo.value, UpbitFanoutError)
    assert str(excinfo.value).startswith(name)
    assert acc.balances() == before
    assert acc.open_orders() == []


def test_identifiers_are_single_use() -> None:
    acc = account()
    common: dict[str, Any] = {"code": "KRW-BTC", "side": "bid", "ord_type": "limit", "now_ms": NOW}
    acc.place_order(
        **common,
        market_price=BTC_PRICE,
        price=Decimal("100000000"),
        volume=Decimal("0.001"),
        identifier="x",
    )
    with pytest.raises(OrderRejected, match="identifier"):
        acc.place_order(
            **common,
            market_price=BTC_PRICE,
            price=Decimal("100000000"),
            volume=Decimal("0.001"),
            identifier="x",
        )


# --- invariants -----------------------------------------------------------------------------


def expected_totals(start: dict[str, Decimal], events: list[PrivateEvent]) -> dict[str, Decimal]:
    """Balances implied by the fills alone: a fill moves volume and funds, and pays a fee."""
    totals = dict(start)
    for type_, _, p in events:
        if type_ != "myOrder" or p["state"] != "trade":
            continue
        quote, _, base = p["code"].partition("-")
        funds = p["price"] * p["volume"]
        sign = 1 if p["ask_bid"] == "BID" else -1
        totals[base] = totals.get(base, Decimal(0)) + sign * p["volume"]
        totals[quote] = totals.get(quote, Decimal(0)) - sign * funds - p["trade_fee"]
    return totals


sides = st.sampled_from(["bid", "ask"])
offsets = st.integers(-40, 40)
sizes = st.integers(1, 400)
nothing = st.just(0)
action = st.one_of(
    st.tuples(st.just("limit"), sides, offsets, sizes),
    st.tuples(st.just("market"), sides, nothing, sizes),
    st.tuples(st.just("trade"), sides, offsets, sizes),
    st.tuples(st.just("cancel"), sides, st.integers(0, 5), nothing),
    st.tuples(st.just("random"), sides, nothing, nothing),
)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), actions=st.lists(action, max_size=30))
def test_funds_are_conserved_and_never_negative(seed: int, actions: list[Any]) -> None:
    acc = Account(seed=seed)
    start = {c: b + lk for c, (b, lk) in acc.balances().items()}
    events: list[PrivateEvent] = []
    market = BTC_PRICE
    for i, (kind_, side, offset, size) in enumerate(actions):
        now = NOW + i
        try:
            if kind_ == "limit":
                price = market + offset * 100_000
                events += acc.place_order(
                    code="KRW-BTC",
                    side=side,
                    ord_type="limit",
                    price=price,
                    volume=Decimal(size) / 10_000,
                    now_ms=now,
                    market_price=market,
                )[1]
            elif kind_ == "market":
                events += acc.place_order(
                    code="KRW-BTC",
                    side=side,
                    ord_type="price" if side == "bid" else "market",
                    price=Decimal(size) * 10_000 if side == "bid" else None,
                    volume=None if side == "bid" else Decimal(size) / 10_000,
                    now_ms=now,
                    market_price=market,
                )[1]
            elif kind_ == "trade":
                market = BTC_PRICE + offset * 100_000
                events += acc.on_trade("KRW-BTC", market, Decimal(size) / 10_000, now_ms=now)
            elif kind_ == "cancel" and acc.open_orders():
                uid = acc.open_orders()[offset % len(acc.open_orders())]
                events += acc.cancel_order(uid, now_ms=now)
            elif kind_ == "random":
                events += acc.random_activity(
                    ["KRW-BTC", "BTC-ETH"],
                    {"KRW-BTC": market, "BTC-ETH": Decimal("0.035")},
                    now_ms=now,
                )
        except OrderRejected:
            pass
    check_events(events)
    want = expected_totals(start, events)
    balances = acc.balances()
    for currency in set(want) | set(balances):
        assert total(acc, currency) == want.get(currency, Decimal(0)), currency
    for balance, locked in balances.values():
        assert balance >= 0
        assert locked >= 0
    # what is locked is exactly what the resting orders hold
    held: dict[str, Decimal] = {}
    for uid in acc.open_orders():
        order = acc.order(uid)
        quote, _, base = order["code"].partition("-")
        currency = base if order["ask_bid"] == "ASK" else quote
        held[currency] = held.get(currency, Decimal(0)) + order["locked"]
    for currency, (_, locked) in balances.items():
        assert locked == held.get(currency, Decimal(0)), currency


def test_same_seed_and_calls_give_the_same_events() -> None:
    def script(seed: int) -> list[bytes]:
        acc = Account(seed=seed)
        out: list[PrivateEvent] = []
        prices = {"KRW-BTC": BTC_PRICE, "KRW-ETH": Decimal("5000000")}
        for i in range(40):
            out += acc.random_activity(["KRW-BTC", "KRW-ETH"], prices, now_ms=NOW + i)
            out += acc.on_trade(
                "KRW-BTC", BTC_PRICE - 2_000_000 + i * 100_000, Decimal(1), now_ms=NOW + i
            )
        return [dumps_exact(p) for _, _, p in out]

    assert script(4) == script(4)
    assert script(4) != script(5)


def test_random_activity_keeps_a_private_stream_busy() -> None:
    acc = Account(seed=1)
    prices = {"KRW-BTC": BTC_PRICE, "BTC-ETH": Decimal("0.035"), "USDT-BTC": Decimal("96000.12")}
    events: list[PrivateEvent] = []
    for i in range(60):
        events += acc.random_activity(sorted(prices), prices, now_ms=NOW + i * 1000)
    check_events(events)
    states = {p["state"] for p in orders(events)}
    assert {"wait", "cancel"} <= states
    assert len(assets(events)) >= 20
    assert len(acc.open_orders()) <= 6
    assert acc.random_activity([], {}, now_ms=NOW) == []


def test_default_balances_have_long_decimals() -> None:
    balances = Account().balances()
    assert {"KRW", "BTC", "USDT"} <= set(balances)
    krw, locked = balances["KRW"]
    assert locked == 0
    assert len(krw.as_tuple().digits) > 17
