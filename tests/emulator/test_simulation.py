"""The market simulation: Upbit-shaped payloads, consistent state, candles, determinism."""

from __future__ import annotations

import calendar
import json
import re
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.emulator.shapes import json_type
from tests.helpers import SAMPLES
from upbit_fanout.emulator import fixedpoint
from upbit_fanout.emulator.markets import KNOWN_BASES, default_markets
from upbit_fanout.emulator.simulation import (
    CANDLE_UNIT_MS,
    ROW_SPECS,
    MarketSimulator,
    SimEvent,
    is_valid_price,
    orderbook_at_depth,
    tick_size,
)
from upbit_fanout.subscriptions.jsontext import dumps_exact
from upbit_fanout.subscriptions.upbit_fields import CANDLE_TYPES

NOW = 1_790_000_000_000  # 2026-09-21T14:13:20Z
DAY = 86_400_000
BUSY = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "USDT-BTC", "BTC-ETH")
LEGACY_KEYS = {"market", "trade_status", "market_state_for_ios"}


# --- reference shapes from the captured frames ---------------------------------------------


def _lines(name: str) -> list[dict[str, Any]]:
    out = []
    for line in (SAMPLES / name).read_text().splitlines():
        obj = json.loads(line)
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _current(name: str) -> list[dict[str, Any]]:
    """The current-shape DEFAULT lines: ``type``/``code``/``stream_type``, no legacy keys."""
    found = [
        o
        for o in _lines(name)
        if {"type", "code", "stream_type"} <= set(o) and not LEGACY_KEYS & set(o)
    ]
    assert found, f"no current-shape line in {name}"
    return found


def wire(payload: dict[str, Any]) -> dict[str, Any]:
    """What a client parses: the payload written with dumps_exact and read back by json."""
    parsed: dict[str, Any] = json.loads(dumps_exact(payload))
    return parsed


def assert_shape(payload: dict[str, Any], reference: dict[str, Any]) -> None:
    assert "stream_type" not in payload  # the server adds it
    ref = {k: v for k, v in reference.items() if k != "stream_type"}
    got = wire(payload)
    assert set(got) == set(ref), set(got) ^ set(ref)
    for key, value in ref.items():
        want = json_type(key, value)
        kind = json_type(key, got[key])
        if want == "null":  # delisting_date: "string or null"
            assert kind in ("null", "string"), key
        else:
            assert kind == want, (key, kind, want)


TICKER_REF = next(o for o in _current("ticker.jsonl") if o["code"] == "KRW-BTC")
TRADE_REFS = [o for o in _current("trade.jsonl") if "best_ask_price" in o]
ORDERBOOK_REF = next(o for o in _current("orderbook.jsonl") if "level" in o)
CANDLE_REFS = _current("candle.jsonl")


@pytest.fixture(scope="module")
def universe() -> MarketSimulator:
    """The full 855-market universe at NOW, for tests that only look (0.5 s to build)."""
    return MarketSimulator(default_markets(), seed=3, now_ms=NOW)


def sim_for(codes: Any = BUSY, *, seed: int = 0, now: int = NOW) -> MarketSimulator:
    return MarketSimulator(list(codes), seed=seed, now_ms=now)


def run(
    sim: MarketSimulator,
    codes: Any,
    *,
    start: int = NOW,
    calls: int = 50,
    step: int = 20,
    batch: int = 40,
) -> list[tuple[int, SimEvent]]:
    """Drive ``next_events`` like the server does; returns (call time, event) pairs."""
    out: list[tuple[int, SimEvent]] = []
    watched = frozenset(codes)
    for i in range(calls):
        now = start + i * step
        out.extend((now, e) for e in sim.next_events(watched, now_ms=now, max_events=batch))
    return out


def epoch_ms(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) * 1000


# --- shapes ---------------------------------------------------------------------------------


def test_every_event_has_the_current_default_keys_and_json_types() -> None:
    sim = sim_for()
    seen: Counter[str] = Counter()
    for _, (type_, code, payload) in run(sim, BUSY, calls=120, step=25):
        seen[type_] += 1
        assert payload["type"] == type_
        assert payload["code"] == code
        if type_ == "ticker":
            assert_shape(payload, TICKER_REF)
        elif type_ == "trade":
            for ref in TRADE_REFS:
                assert_shape(payload, ref)
        elif type_ == "orderbook":
            assert_shape(payload, ORDERBOOK_REF)
            ref_unit = ORDERBOOK_REF["orderbook_units"][0]
            for unit in wire(payload)["orderbook_units"]:
                assert set(unit) == set(ref_unit)
                assert all(isinstance(v, (int, float)) for v in unit.values())
        else:
            assert type_ in CANDLE_TYPES
            for ref in CANDLE_REFS:
                assert_shape(payload, ref)
    assert {"trade", "ticker", "orderbook", *CANDLE_TYPES} <= set(seen)


@pytest.mark.parametrize("type_", ["ticker", "trade", "orderbook", *CANDLE_TYPES])
def test_snapshots_have_the_same_shapes(type_: str, universe: MarketSimulator) -> None:
    sim = universe
    refs = {
        "ticker": [TICKER_REF],
        "trade": TRADE_REFS,
        "orderbook": [ORDERBOOK_REF],
    }.get(type_, CANDLE_REFS)
    for code in ("KRW-BTC", "BTC-ETH", "USDT-BTC", "KRW-SHIB"):
        payload = sim.snapshot(type_, code, now_ms=NOW)
        assert payload is not None
        for ref in refs:
            assert_shape(payload, ref)


def test_values_are_decimals_ints_and_strings_in_upbit_formats() -> None:
    sim = sim_for()
    events = run(sim, BUSY, calls=30)
    for _, (type_, _, p) in events:
        if type_ == "trade":
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", p["trade_date"])
            assert re.fullmatch(r"\d\d:\d\d:\d\d", p["trade_time"])
            for key in ("trade_price", "trade_volume", "prev_closing_price", "change_price"):
                assert isinstance(p[key], Decimal)
            assert type(p["sequential_id"]) is int
        if type_ == "ticker":
            assert re.fullmatch(r"\d{8}", p["trade_date"])
            assert re.fullmatch(r"\d{6}", p["trade_time"])
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", p["highest_52_week_date"])
            assert p["delisting_date"] is None
            assert p["market_state"] == "ACTIVE"
            assert p["is_trading_suspended"] is False
            assert isinstance(p["signed_change_rate"], Decimal)
            assert type(p["timestamp"]) is int
        if type_ == "trade" and p["code"].startswith("BTC-"):
            assert p["trade_price"].as_tuple().exponent == -8  # BTC prices show 8 decimals
        if type_ == "trade" and p["code"] == "KRW-BTC":
            assert p["trade_price"] % 1000 == 0  # 1,000 KRW steps above 1,000,000 KRW


def test_starting_prices_are_realistic_and_cross_rates_agree(universe: MarketSimulator) -> None:
    sim = universe
    expected: dict[str, int | Decimal] = {
        "KRW-BTC": 140_000_000,
        "KRW-ETH": 5_000_000,
        "USDT-BTC": 96_000,
        "BTC-ETH": Decimal("0.0357"),
        "KRW-XRP": 3_300,
    }
    for code, price in expected.items():
        ratio = sim.last_price(code) / Decimal(price)
        assert Decimal("0.8") < ratio < Decimal("1.25"), (code, sim.last_price(code))
    for code in sim.codes:
        price = sim.last_price(code)
        assert price > 0
        assert is_valid_price(code, price), (code, price)


def test_unknown_codes_raise_key_error() -> None:
    sim = sim_for(["KRW-BTC"])
    with pytest.raises(KeyError):
        sim.snapshot("ticker", "KRW-NOPE", now_ms=NOW)
    with pytest.raises(KeyError):
        sim.next_events(frozenset({"KRW-BTC", "KRW-NOPE"}), now_ms=NOW, max_events=5)
    with pytest.raises(KeyError):
        sim.last_price("BTC-NOPE")
    with pytest.raises(ValueError, match="QUOTE-BASE"):
        MarketSimulator(["krw-btc"], now_ms=NOW)


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_and_calls_give_the_same_events() -> None:
    a = [dumps_exact(e[2]) for _, e in run(sim_for(seed=7), BUSY, calls=40)]
    b = [dumps_exact(e[2]) for _, e in run(sim_for(seed=7), BUSY, calls=40)]
    c = [dumps_exact(e[2]) for _, e in run(sim_for(seed=8), BUSY, calls=40)]
    assert a == b
    assert a != c


def test_a_market_starts_the_same_whatever_else_is_simulated() -> None:
    alone = sim_for(["BTC-ETH"], seed=5)
    crowd = MarketSimulator(default_markets(), seed=5, now_ms=NOW)
    for type_ in ("ticker", "orderbook", "candle.1m"):
        assert alone.snapshot(type_, "BTC-ETH", now_ms=NOW) == crowd.snapshot(
            type_, "BTC-ETH", now_ms=NOW
        )


# --- orderbook ------------------------------------------------------------------------------


def assert_book(book: dict[str, Any], depth: int) -> None:
    units = book["orderbook_units"]
    assert len(units) == depth
    asks = [u["ask_price"] for u in units if u["ask_price"] > 0]
    bids = [u["bid_price"] for u in units if u["bid_price"] > 0]
    assert asks == sorted(asks)
    assert len(set(asks)) == len(asks)
    assert bids == sorted(bids, reverse=True)
    assert len(set(bids)) == len(bids)
    if asks and bids:
        assert asks[0] > bids[0]
    for u in units:
        assert (u["ask_price"] > 0) == (u["ask_size"] > 0)
        assert (u["bid_price"] > 0) == (u["bid_size"] > 0)
        assert u["ask_size"] >= 0
        assert u["bid_size"] >= 0
    assert book["total_ask_size"] == sum(u["ask_size"] for u in units)
    assert book["total_bid_size"] == sum(u["bid_size"] for u in units)


@pytest.mark.parametrize("depth", [1, 5, 15, 30])
def test_orderbook_depths(depth: int) -> None:
    sim = sim_for()
    for code in BUSY:
        book = sim.orderbook(code, now_ms=NOW, depth=depth)
        assert_book(book, depth)
        assert book["level"] == 0
        full = sim.orderbook(code, now_ms=NOW, depth=30)
        assert book["orderbook_units"] == full["orderbook_units"][:depth]
        assert orderbook_at_depth(full, depth) == book


def test_orderbook_events_follow_the_book_and_stay_valid() -> None:
    sim = sim_for()
    books = 0
    for _, (type_, _code, payload) in run(sim, BUSY, calls=80):
        if type_ == "orderbook":
            books += 1
            assert_book(payload, 30)
            assert payload["level"] == 0
            assert payload["timestamp"] <= NOW + 80 * 20
    assert books > 10
    # an orderbook event shows the book as the trade before it left it; a busy market sends
    # its book at most every ~100 ms, not after every trade
    checked = 0
    for i in range(20):
        now = NOW + 5000 + i * 150
        events = sim.next_events(
            frozenset({"KRW-BTC"}), now_ms=now, max_events=1, types=("trade", "ticker", "orderbook")
        )
        kinds = [t for t, _, _ in events]
        assert kinds[:2] == ["trade", "ticker"]
        if "orderbook" in kinds:
            trade, book = events[0][2], events[2][2]
            assert kinds == ["trade", "ticker", "orderbook"]
            assert book == sim.orderbook("KRW-BTC", now_ms=now, depth=30)
            assert_book(book, 30)
            fresh = sim.orderbook("KRW-BTC", now_ms=now, depth=15)  # rendered from scratch
            assert book["orderbook_units"][:15] == fresh["orderbook_units"]
            assert book["timestamp"] == now
            top = book["orderbook_units"][0]
            assert (top["ask_price"], top["ask_size"]) == (
                trade["best_ask_price"],
                trade["best_ask_size"],
            )
            assert (top["bid_price"], top["bid_size"]) == (
                trade["best_bid_price"],
                trade["best_bid_size"],
            )
            checked += 1
        more = sim.next_events(frozenset({"KRW-BTC"}), now_ms=now + 1, max_events=30)
        assert "orderbook" not in [t for t, _, _ in more]
    assert checked == 20


def test_trade_reports_the_book_top_at_trade_time() -> None:
    sim = sim_for(["KRW-BTC"])
    events = sim.next_events(frozenset({"KRW-BTC"}), now_ms=NOW, max_events=1)
    trade = next(p for t, _, p in events if t == "trade")
    book = sim.orderbook("KRW-BTC", now_ms=NOW, depth=1)["orderbook_units"][0]
    assert trade["best_ask_price"] == book["ask_price"]
    assert trade["best_bid_price"] == book["bid_price"]
    assert trade["best_ask_size"] == book["ask_size"]
    assert trade["best_bid_size"] == book["bid_size"]
    assert trade["best_ask_price"] > trade["best_bid_price"]


def test_krw_level_groups_prices_and_other_quotes_ignore_it() -> None:
    sim = sim_for()
    book = sim.orderbook("KRW-BTC", now_ms=NOW, depth=30, level=100_000)
    assert book["level"] == 100_000
    assert_book(book, 30)
    for u in book["orderbook_units"]:
        assert u["ask_price"] % 100_000 == 0
        assert u["bid_price"] % 100_000 == 0
    plain = sim.orderbook("KRW-BTC", now_ms=NOW, depth=30)
    assert book["total_ask_size"] > plain["orderbook_units"][0]["ask_size"]
    usdt = sim.orderbook("USDT-BTC", now_ms=NOW, depth=15, level=100_000)
    assert usdt["level"] == 0
    assert usdt == sim.orderbook("USDT-BTC", now_ms=NOW, depth=15)


def test_some_quiet_markets_have_thin_zero_padded_books(universe: MarketSimulator) -> None:
    sim = universe
    thin = []
    for code in sorted(sim.codes):
        book = sim.orderbook(code, now_ms=NOW, depth=30)
        assert_book(book, 30)
        last = book["orderbook_units"][-1]
        if last["ask_price"] == 0 or last["bid_price"] == 0:
            thin.append(code)
            assert last["ask_size"] == 0 or last["bid_size"] == 0
    assert 3 <= len(thin) <= 40, thin


# --- ticker and trades ----------------------------------------------------------------------


def check_ticker_follows_trades(events: list[tuple[int, SimEvent]]) -> None:
    last_ticker: dict[str, dict[str, Any]] = {}
    pending: dict[str, dict[str, Any]] = {}
    for _, (type_, code, p) in events:
        if type_ == "trade":
            pending[code] = p
        elif type_ == "ticker":
            trade = pending.pop(code)
            assert p["trade_price"] == trade["trade_price"]
            assert p["trade_volume"] == trade["trade_volume"]
            assert p["ask_bid"] == trade["ask_bid"]
            assert p["trade_timestamp"] == trade["trade_timestamp"]
            assert p["trade_date"] == trade["trade_date"].replace("-", "")
            assert p["prev_closing_price"] == trade["prev_closing_price"]
            diff = p["trade_price"] - p["prev_closing_price"]
            assert p["signed_change_price"] == diff
            assert p["change_price"] == abs(diff)
            assert p["change"] == ("RISE" if diff > 0 else "FALL" if diff < 0 else "EVEN")
            assert trade["change"] == p["change"]
            assert abs(p["signed_change_rate"] - diff / p["prev_closing_price"]) < Decimal("1e-9")
            assert p["low_price"] <= p["trade_price"] <= p["high_price"]
            assert p["lowest_52_week_price"] <= p["low_price"]
            assert p["highest_52_week_price"] >= p["high_price"]
            assert p["acc_trade_volume_24h"] >= p["acc_trade_volume"]
            assert p["acc_trade_price_24h"] >= p["acc_trade_price"]
            assert p["acc_ask_volume"] + p["acc_bid_volume"] == p["acc_trade_volume"]
            before = last_ticker.get(code)
            if before is not None and before["trade_date"] == p["trade_date"]:
                volume, price = p["trade_volume"], p["trade_price"]
                assert p["acc_trade_volume"] == before["acc_trade_volume"] + volume
                assert p["acc_trade_price"] == before["acc_trade_price"] + price * volume
                assert p["acc_trade_volume_24h"] >= before["acc_trade_volume_24h"]
                side = "acc_bid_volume" if p["ask_bid"] == "BID" else "acc_ask_volume"
                assert p[side] == before[side] + volume
                assert p["high_price"] >= before["high_price"]
                assert p["low_price"] <= before["low_price"]
            last_ticker[code] = p
    assert last_ticker


def test_ticker_is_consistent_with_each_trade() -> None:
    check_ticker_follows_trades(run(sim_for(), BUSY, calls=100))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    picks=st.lists(
        st.sampled_from(sorted(c.code for c in default_markets())), min_size=1, max_size=6
    ),
    batch=st.integers(1, 60),
)
def test_invariants_hold_for_any_seed(seed: int, picks: list[str], batch: int) -> None:
    sim = MarketSimulator(picks, seed=seed, now_ms=NOW)
    events = run(sim, picks, calls=25, step=137, batch=batch)
    check_ticker_follows_trades(events)
    ids = [p["sequential_id"] for _, (t, _, p) in events if t == "trade"]
    assert len(ids) == len(set(ids))
    for _, (type_, code, p) in events:
        if type_ == "trade":
            assert is_valid_price(code, p["trade_price"])
            assert p["trade_volume"] > 0
        if type_ == "orderbook":
            assert_book(p, 30)
    for code in set(picks):
        assert_book(sim.orderbook(code, now_ms=NOW, depth=30), 30)


def test_prices_wander_but_stay_plausible_and_spreads_tight() -> None:
    codes = ["KRW-BTC", "KRW-XRP", "USDT-BTC", "BTC-ETH"]
    sim = sim_for(codes, seed=11)
    start = {c: sim.last_price(c) for c in codes}
    moved: set[str] = set()
    for i in range(300):
        for type_, code, p in sim.next_events(
            frozenset(codes), now_ms=NOW + i * 200, max_events=150
        ):
            if type_ == "trade" and p["trade_price"] != start[code]:
                moved.add(code)
    assert moved == set(codes)
    for code in codes:
        assert Decimal("0.8") < sim.last_price(code) / start[code] < Decimal("1.25"), code
        ask, bid = sim.best_prices(code)
        assert 0 < ask - bid <= 2 * tick_size(code, bid), code  # busy books stay tight


def test_sequential_ids_are_unique_and_upbit_sized() -> None:
    events = run(sim_for(), BUSY, calls=100, step=1, batch=200)
    trades = [p for _, (t, _, p) in events if t == "trade"]
    ids = [p["sequential_id"] for p in trades]
    assert len(ids) == len(set(ids)) > 1000
    for p in trades:
        assert p["sequential_id"] >= p["trade_timestamp"] * 10_000
        assert p["sequential_id"] > 2**53  # as on the wire: exact only as an integer


def test_busy_markets_trade_far_more_than_quiet_ones() -> None:
    sim = MarketSimulator(default_markets(), seed=1, now_ms=NOW)
    quiet = sorted(
        c for c in sim.codes if c.startswith("BTC-") and c.partition("-")[2] not in KNOWN_BASES
    )[:40]
    codes = ["KRW-BTC", "KRW-XRP", *quiet]
    trades = Counter(
        code for _, (t, code, _) in run(sim, codes, calls=100, batch=50) if t == "trade"
    )
    assert trades["KRW-BTC"] > 10 * max(trades[c] for c in quiet)
    assert trades["KRW-BTC"] + trades["KRW-XRP"] > sum(trades[c] for c in quiet)


def test_events_come_in_upbit_order_per_trade() -> None:
    events = [e for _, e in run(sim_for(), BUSY, calls=60, step=300)]
    for i, (type_, code, _) in enumerate(events):
        before = events[i - 1] if i else None
        if type_ == "ticker":  # right after its trade
            assert before is not None
            assert before[:2] == ("trade", code)
        elif type_ == "orderbook":  # right after that trade's ticker
            assert before is not None
            assert before[:2] == ("ticker", code)
        elif type_.startswith("candle.") and before is not None and before[1] == code:
            assert before[0] != "trade"  # candles come after the trade's ticker (and book)


def test_types_filter_builds_only_what_is_wanted() -> None:
    sim = sim_for()
    events = sim.next_events(frozenset(BUSY), now_ms=NOW, max_events=50, types={"trade"})
    assert len(events) == 50
    assert {t for t, _, _ in events} == {"trade"}
    assert sim.next_events(frozenset(BUSY), now_ms=NOW, max_events=20, types=set()) == []
    with pytest.raises(ValueError, match="unknown data types"):
        sim.next_events(frozenset(BUSY), now_ms=NOW, max_events=5, types={"candle.2m"})


def test_unwatched_markets_stay_put_and_snapshot_consistently() -> None:
    sim = sim_for()
    before = sim.snapshot("trade", "BTC-ETH", now_ms=NOW)
    run(sim, ["KRW-BTC"], calls=20)
    assert sim.snapshot("trade", "BTC-ETH", now_ms=NOW + 400) == before


def test_a_new_utc_day_resets_the_daily_fields() -> None:
    midnight = (NOW // DAY + 1) * DAY
    sim = sim_for(["KRW-ETH"], now=midnight - 50)
    watched = frozenset({"KRW-ETH"})
    sim.next_events(watched, now_ms=midnight - 10, max_events=6)
    close = sim.last_price("KRW-ETH")
    late = sim.snapshot("ticker", "KRW-ETH", now_ms=midnight - 5)
    assert late is not None
    assert late["acc_trade_volume"] > 0
    events = sim.next_events(watched, now_ms=midnight + 5, max_events=2, types={"ticker"})
    first = events[0][2]
    assert first["prev_closing_price"] == close
    assert first["opening_price"] == first["trade_price"]
    assert first["acc_trade_volume"] == first["trade_volume"]
    assert first["acc_trade_volume_24h"] >= first["acc_trade_volume"]
    assert first["trade_date"] == time.strftime("%Y%m%d", time.gmtime((midnight + 5) // 1000))


def test_an_unobserved_market_rolls_its_day_when_observed() -> None:
    sim = sim_for(["BTC-ETH"])
    last = sim.last_price("BTC-ETH")
    ticker = sim.snapshot("ticker", "BTC-ETH", now_ms=NOW + 2 * DAY)
    assert ticker is not None
    assert ticker["acc_trade_volume"] == 0
    assert ticker["prev_closing_price"] == last
    assert ticker["change"] == "EVEN"


# --- candles --------------------------------------------------------------------------------


def test_candle_snapshots_exist_for_every_market_and_unit(universe: MarketSimulator) -> None:
    sim = universe
    for code in ("KRW-BTC", "BTC-ETH", sorted(sim.codes)[-1]):
        for type_, ms in CANDLE_UNIT_MS.items():
            candle = sim.snapshot(type_, code, now_ms=NOW)
            assert candle is not None
            start = epoch_ms(candle["candle_date_time_utc"])
            assert start % ms == 0
            assert start <= NOW
            assert epoch_ms(candle["candle_date_time_kst"]) == start + 9 * 3_600_000
            assert candle["low_price"] <= candle["opening_price"] <= candle["high_price"]
            assert candle["candle_acc_trade_volume"] > 0


def test_candles_are_aligned_at_most_once_a_second_and_lose_no_volume() -> None:
    start = (NOW // 14_400_000 + 1) * 14_400_000  # a fresh 240m bucket: no earlier history
    codes = ["KRW-BTC", "KRW-ETH", "BTC-ETH"]
    sim = sim_for(codes, now=start)
    events = run(sim, codes, start=start, calls=400, step=37, batch=12)
    # one more call, later, with nothing to generate: held-back updates go out
    events += [
        (start + 60_000, e)
        for e in sim.next_events(frozenset(codes), now_ms=start + 60_000, max_events=0)
    ]

    trades: dict[str, list[dict[str, Any]]] = defaultdict(list)
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    per_second: Counter[tuple[str, str, int]] = Counter()
    for call_ms, (type_, code, p) in events:
        if type_ == "trade":
            trades[code].append(p)
        elif type_.startswith("candle."):
            unit = CANDLE_UNIT_MS[type_]
            bucket = epoch_ms(p["candle_date_time_utc"])
            assert bucket % unit == 0
            assert epoch_ms(p["candle_date_time_kst"]) - bucket == 9 * 3_600_000
            per_second[code, type_, call_ms // 1000] += 1
            last[code, type_, bucket] = p
    assert per_second
    assert max(per_second.values()) == 1  # never twice in one second for a (code, unit)

    for code, items in trades.items():
        for type_, unit in CANDLE_UNIT_MS.items():
            buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for t in items:
                buckets[t["trade_timestamp"] - t["trade_timestamp"] % unit].append(t)
            for bucket, in_bucket in buckets.items():
                candle = last[code, type_, bucket]
                prices = [t["trade_price"] for t in in_bucket]
                volume = sum(t["trade_volume"] for t in in_bucket)
                assert candle["candle_acc_trade_volume"] == volume, (code, type_, bucket)
                assert candle["candle_acc_trade_price"] == sum(
                    t["trade_price"] * t["trade_volume"] for t in in_bucket
                )
                assert candle["opening_price"] == prices[0]
                assert candle["trade_price"] == prices[-1]
                assert candle["high_price"] == max(prices)
                assert candle["low_price"] == min(prices)


def test_candle_snapshot_is_the_last_traded_bucket() -> None:
    start = (NOW // 60_000 + 1) * 60_000
    sim = sim_for(["KRW-BTC"], now=start)
    events = sim.next_events(frozenset({"KRW-BTC"}), now_ms=start + 1_500, max_events=30)
    traded = [p for t, _, p in events if t == "trade"]
    candle = sim.snapshot("candle.1m", "KRW-BTC", now_ms=start + 2_000)
    assert candle is not None
    assert epoch_ms(candle["candle_date_time_utc"]) == start
    assert candle["candle_acc_trade_volume"] == sum(t["trade_volume"] for t in traded)
    # a minute later nothing traded yet: the snapshot is still that (previous) bucket
    later = sim.snapshot("candle.1m", "KRW-BTC", now_ms=start + 61_000)
    assert later == candle


def test_tick_size_helper_follows_upbit_grids() -> None:
    assert tick_size("KRW-BTC", Decimal("142009000")) == 1000
    assert tick_size("KRW-XRP", Decimal("3300")) == 1
    assert tick_size("KRW-ETH", Decimal("5000000")) == 1000
    assert tick_size("KRW-AAVE", Decimal("400000")) == 100
    assert tick_size("KRW-USDT", Decimal("1450")) == Decimal("0.5")
    assert tick_size("BTC-ETH", Decimal("0.035")) == Decimal("0.00000001")
    assert tick_size("USDT-BTC", Decimal("95000")) == Decimal("0.01")
    assert tick_size("USDT-DOGE", Decimal("0.24")) == Decimal("0.0001")
    assert is_valid_price("KRW-BTC", Decimal("142009000"))
    assert not is_valid_price("KRW-BTC", Decimal("142009500"))
    assert not is_valid_price("BTC-ETH", Decimal("0.000000001"))
    assert not is_valid_price("KRW-BTC", Decimal(0))


# --- rows: the renderers' view of the same events ------------------------------------------


def test_next_rows_are_the_same_market_as_next_events() -> None:
    # Two simulators with one seed, driven by the same calls, one through each method: the same
    # events, payload for payload (rows turned into dicts), with the same number text.
    a = sim_for(seed=4)
    b = sim_for(seed=4)
    watched = frozenset(BUSY)
    rows_seen: Counter[str] = Counter()
    for i in range(60):
        now = NOW + i * 45
        events = a.next_events(watched, now_ms=now, max_events=50)
        rows = b.next_rows(watched, now_ms=now, max_events=50)
        assert [(t, c) for t, c, _ in events] == [(t, c) for t, c, _ in rows]
        for (type_, _, payload), (_, _, row) in zip(events, rows, strict=True):
            if isinstance(row, tuple):
                rows_seen[type_] += 1
            got = ROW_SPECS[type_].payload(row) if isinstance(row, tuple) else row
            assert got == payload
            assert list(got) == list(payload)  # key order is part of the frame
            assert dumps_exact(got) == dumps_exact(payload)
    assert set(rows_seen) == {"trade", "ticker", "orderbook"}
    for code in BUSY:
        for type_ in ("ticker", "trade", "orderbook", "candle.1s"):
            assert dumps_exact(a.snapshot(type_, code, now_ms=NOW + 3000)) == dumps_exact(
                b.snapshot(type_, code, now_ms=NOW + 3000)
            )


@given(st.integers(min_value=0, max_value=10**90))
def test_number_text_is_the_decimals_own(units: int) -> None:
    assert fixedpoint.size_text(units) == str(fixedpoint.size_decimal(units))
    assert fixedpoint.amount_text(units) == str(fixedpoint.amount_decimal(units))


@pytest.mark.parametrize("units", [0, 1, 99, 100, 10**8 - 1, 10**8, 10**10, 10**16, 10**28, 10**80])
def test_number_text_at_the_notation_boundaries(units: int) -> None:
    for u in (units, units + 1, max(0, units - 1)):
        assert fixedpoint.size_text(u) == str(fixedpoint.size_decimal(u))
        assert fixedpoint.amount_text(u) == str(fixedpoint.amount_decimal(u))
