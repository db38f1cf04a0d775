"""The emulator's REST quotation API (emulator/quotation.py), pure: shapes, paging, limits, errors.

The answers come from the same simulator as the streams: the tests compare them with the
simulator's own state (its trade tape, its book, its ticker).
"""

from __future__ import annotations

import http
from decimal import Decimal

import orjson
import pytest

from upbit_fanout.emulator.quotation import QuotationApi, quotation_group
from upbit_fanout.emulator.simulation import MarketSimulator
from upbit_fanout.subscriptions.jsontext import loads_exact

NOW = 1_780_000_000_000


@pytest.fixture
def sim() -> MarketSimulator:
    simulator = MarketSimulator(["KRW-BTC", "KRW-ETH"], seed=3, now_ms=NOW)
    simulator.keep_trades("KRW-BTC", 1000)
    for step in range(20):
        simulator.next_events(["KRW-BTC"], now_ms=NOW + step * 10, max_events=60)
    return simulator


def get(api: QuotationApi, path: str, query: str = "", now: float = 0.0) -> tuple[int, object]:
    answer = api.handle(path, query, address="127.0.0.1", now=now, now_ms=NOW + 1000)
    return answer.status, loads_exact(answer.body)


def test_groups() -> None:
    assert quotation_group("/v1/ticker") == "ticker"
    assert quotation_group("/v1/orderbook") == "orderbook"
    assert quotation_group("/v1/trades/ticks") == "trade"
    assert quotation_group("/v1/candles/minutes/5") == "candle"
    assert quotation_group("/v1/candles/seconds") == "candle"
    assert quotation_group("/v1/accounts") is None


def test_trades_page_backwards_by_cursor_over_the_simulators_tape(sim: MarketSimulator) -> None:
    api = QuotationApi(lambda: sim)
    tape = [row[11] for row in sim.trades("KRW-BTC")]
    assert len(tape) > 100
    status, first = get(api, "/v1/trades/ticks", "market=KRW-BTC&count=50")
    assert status == 200
    assert isinstance(first, list)
    assert [t["sequential_id"] for t in first] == tape[::-1][:50]  # newest first
    cursor = first[-1]["sequential_id"]
    _, second = get(api, "/v1/trades/ticks", f"market=KRW-BTC&count=50&cursor={cursor}")
    assert isinstance(second, list)
    assert [t["sequential_id"] for t in second] == tape[::-1][50:100]
    trade = first[0]
    assert set(trade) == {
        "market", "trade_date_utc", "trade_time_utc", "timestamp", "trade_price",
        "trade_volume", "prev_closing_price", "change_price", "ask_bid", "sequential_id",
    }  # fmt: skip
    row = sim.trades("KRW-BTC")[-1]
    assert str(trade["trade_price"]) == row[5]  # the stream's number text
    _, older = get(api, "/v1/trades/ticks", "market=KRW-BTC&count=5&days_ago=2")
    assert older == []


def test_ticker_and_orderbook_are_the_streams_state(sim: MarketSimulator) -> None:
    api = QuotationApi(lambda: sim)
    status, tickers = get(api, "/v1/ticker", "markets=KRW-BTC,KRW-ETH")
    assert status == 200
    assert isinstance(tickers, list)
    assert [t["market"] for t in tickers] == ["KRW-BTC", "KRW-ETH"]
    assert Decimal(tickers[0]["trade_price"]) == sim.last_price("KRW-BTC")
    assert "code" not in tickers[0]
    assert "trade_date_kst" in tickers[0]
    _, books = get(api, "/v1/orderbook", "markets=KRW-BTC")
    assert isinstance(books, list)
    book = sim.orderbook("KRW-BTC", now_ms=NOW, depth=30)
    assert [Decimal(u["bid_price"]) for u in books[0]["orderbook_units"]] == [
        u["bid_price"] for u in book["orderbook_units"]
    ]


def test_errors_and_the_rate_limit_per_group(sim: MarketSimulator) -> None:
    api = QuotationApi(lambda: sim, per_second=3)
    status, body = get(api, "/v1/ticker", "markets=KRW-NOPE")
    assert status == http.HTTPStatus.NOT_FOUND
    assert body == {"error": {"name": 404, "message": "Code not found"}}
    status, body = get(api, "/v1/trades/ticks", "market=KRW-BTC&count=501")
    assert status == 400
    assert isinstance(body, dict), body
    assert body["error"]["name"] == "validation_error"
    answers = [
        api.handle("/v1/trades/ticks", "market=KRW-BTC", address="a", now=10.0, now_ms=NOW)
        for _ in range(4)
    ]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert [a.remaining_req for a in answers][:3] == [
        "group=trade; min=180; sec=2",
        "group=trade; min=180; sec=1",
        "group=trade; min=180; sec=0",
    ]
    assert orjson.loads(answers[3].body)["error"]["name"] == "too_many_requests"
    # another group, another client address: their own budgets
    ok = api.handle("/v1/ticker", "markets=KRW-BTC", address="a", now=10.0, now_ms=NOW)
    assert ok.status == 200
    ok = api.handle("/v1/trades/ticks", "market=KRW-BTC", address="b", now=10.0, now_ms=NOW)
    assert ok.status == 200
    later = api.handle("/v1/trades/ticks", "market=KRW-BTC", address="a", now=11.1, now_ms=NOW)
    assert later.status == 200


def test_a_market_without_a_memory_answers_its_last_trade(sim: MarketSimulator) -> None:
    api = QuotationApi(lambda: sim)
    _, trades = get(api, "/v1/trades/ticks", "market=KRW-ETH&count=10")
    assert isinstance(trades, list)
    assert [t["sequential_id"] for t in trades] == [sim.trades("KRW-ETH")[-1][11]]


def test_candles_answer_the_open_candle(sim: MarketSimulator) -> None:
    api = QuotationApi(lambda: sim)
    status, candles = get(api, "/v1/candles/minutes/1", "market=KRW-BTC&count=5")
    assert status == 200
    assert isinstance(candles, list)
    assert len(candles) == 1
    stream = sim.snapshot("candle.1m", "KRW-BTC", now_ms=NOW)
    assert stream is not None
    assert candles[0]["candle_date_time_utc"] == stream["candle_date_time_utc"]
    assert candles[0]["unit"] == 1
    status, _ = get(api, "/v1/candles/minutes/7", "market=KRW-BTC")
    assert status == 404


def test_going_on_after_429_earns_a_growing_418_block(sim: MarketSimulator) -> None:
    api = QuotationApi(lambda: sim, per_second=2, block_after=3, block_seconds=5.0)

    def status(now: float) -> int:
        answer = api.handle("/v1/ticker", "markets=KRW-BTC", address="a", now=now, now_ms=NOW)
        return int(answer.status)

    assert [status(1.0) for _ in range(5)] == [200, 200, 429, 429, 429]
    assert status(2.5) == 418  # blocked for 5 s, whatever the window says
    assert status(6.1) == 200
    assert [status(6.2), status(6.3), status(6.4)] == [200, 429, 429]
    assert status(6.5) == 429  # the third in a row: blocked again, now for 10 s
    assert status(15.0) == 418
    assert status(16.6) == 200
