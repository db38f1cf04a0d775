"""collector/quotation.py: REST objects in the stream's shape, the calls planned, and the
client's pacing per rate-limit group (Remaining-Req, 429, 418), against httpx's mock transport."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from upbit_fanout.collector.exchange import ExchangeError
from upbit_fanout.collector.quotation import (
    BACKFILL,
    REST,
    QuotationClient,
    RestCall,
    answers,
    plan_calls,
    stream_payload,
    stream_trade,
)
from upbit_fanout.subscriptions.codec import decode_event, encode_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.topics import parse_topic

REST_TRADE = loads_exact(
    b'{"market":"KRW-BTC","trade_date_utc":"2026-12-01","trade_time_utc":"10:19:58",'
    b'"timestamp":1796000000123,"trade_price":1.16539E8,"trade_volume":0.00077720,'
    b'"prev_closing_price":117000000.0,"change_price":-461000.0,"ask_bid":"ASK",'
    b'"sequential_id":17960000001230001}'
)


def test_a_rest_trade_becomes_a_stream_trade_with_exact_numbers() -> None:
    event = stream_trade(REST_TRADE, stream_type=BACKFILL)
    assert event["type"] == "trade"
    assert event["code"] == "KRW-BTC"
    assert event["change"] == "FALL"
    assert event["best_ask_price"] is None
    payload = encode_event(event, "json")
    assert b'"trade_price":1.16539E8' in payload  # the digits as Upbit wrote them
    assert b'"trade_volume":0.00077720' in payload
    assert b'"change_price":461000.0' in payload  # the stream's magnitude
    assert decode_event(encode_event(event, "msgpack"))["sequential_id"] == 17960000001230001
    assert list(event)[-1] == "stream_type"


def test_an_orderbook_cut_to_its_depth_has_exact_totals() -> None:
    units = ",".join(
        f'{{"ask_price":{100 + i},"bid_price":{99 - i},"ask_size":0.1{i},"bid_size":0.2{i}}}'
        for i in range(30)
    )
    rest = loads_exact(
        f'{{"market":"KRW-BTC","timestamp":1,"total_ask_size":9.99,"total_bid_size":8.88,'
        f'"orderbook_units":[{units}],"level":0}}'.encode()
    )
    book = stream_payload(parse_topic("orderbook:KRW-BTC.5"), rest, stream_type=REST)
    assert len(book["orderbook_units"]) == 5
    assert book["total_ask_size"] == Decimal("0.10") + Decimal("0.11") + Decimal("0.12") + Decimal(
        "0.13"
    ) + Decimal("0.14")
    whole = stream_payload(parse_topic("orderbook:KRW-BTC"), rest, stream_type=REST)
    assert whole["total_ask_size"] == rest["total_ask_size"]  # 30 units: REST's own total
    assert list(whole)[-2:] == ["stream_type", "level"]


def test_plan_calls_groups_markets_and_ignores_private_topics() -> None:
    topics = [
        parse_topic(t)
        for t in (
            "ticker:KRW-BTC",
            "ticker:KRW-ETH",
            "orderbook:KRW-BTC.5",
            "orderbook:KRW-BTC",
            "trade:KRW-XRP",
            "candle.1s:KRW-BTC",
            "candle.240m:KRW-BTC",
            "myAsset",
        )
    ]
    calls = plan_calls(topics)
    assert [(c.path, c.params, c.group) for c in calls] == [
        ("/v1/ticker", (("markets", "KRW-BTC,KRW-ETH"),), "ticker"),
        ("/v1/orderbook", (("markets", "KRW-BTC"),), "orderbook"),
        ("/v1/candles/seconds", (("market", "KRW-BTC"), ("count", "1")), "candle"),
        ("/v1/candles/minutes/240", (("market", "KRW-BTC"), ("count", "1")), "candle"),
        ("/v1/trades/ticks", (("market", "KRW-XRP"), ("count", "1")), "trade"),
    ]
    assert len(calls[1].topics) == 2  # both depths from one answer
    grouped = plan_calls(
        [parse_topic("orderbook:KRW-BTC.5@10000"), parse_topic("orderbook:KRW-BTC")]
    )
    assert [(c.params, [str(t) for t in c.topics]) for c in grouped] == [
        ((("markets", "KRW-BTC"),), ["orderbook:KRW-BTC"]),
        ((("markets", "KRW-BTC"), ("level", "10000")), ["orderbook:KRW-BTC.5@10000"]),
    ]
    many = plan_calls(parse_topic(f"ticker:KRW-C{i:03d}") for i in range(250))
    assert [len(c.topics) for c in many] == [100, 100, 50]


def test_answers_leave_out_what_rest_did_not_answer() -> None:
    call = plan_calls([parse_topic("trade:KRW-BTC")])[0]
    assert set(answers(call, [REST_TRADE])) == {parse_topic("trade:KRW-BTC")}
    assert answers(call, []) == {}
    assert answers(call, {"error": {"name": 404}}) == {}
    assert answers(call, [{"market": "KRW-BTC", "trade_price": "x"}]) == {}


class Script:
    """A mock Upbit: answers from a list of (status, Remaining-Req sec) and records the calls."""

    def __init__(self, answers_: list[tuple[int, int | None]]) -> None:
        self.answers = answers_
        self.urls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        status, left = self.answers.pop(0)
        headers = {} if left is None else {"Remaining-Req": f"group=trade; min=600; sec={left}"}
        body = b"[]" if status == 200 else b'{"error":{"name":"too_many_requests","message":"x"}}'
        return httpx.Response(status, headers=headers, content=body)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


CALL = RestCall("/v1/trades/ticks", (("market", "KRW-BTC"), ("count", "1")), "trade")


async def test_the_client_waits_when_remaining_req_says_zero_and_retries_a_429() -> None:
    script = Script([(200, 0), (429, 0), (200, 5)])
    clock = Clock()
    client = QuotationClient(
        "http://127.0.0.1:1",
        clock=clock,
        sleep=clock.sleep,
        transport=httpx.MockTransport(script),
    )
    try:
        assert await client.get(CALL) == []
        assert clock.slept == []
        assert await client.get(CALL) == []  # sec=0: waits for the next second; 429: retried
        assert len(clock.slept) >= 2
        assert sum(clock.slept) >= 2.0
        assert script.urls[0] == "http://127.0.0.1:1/v1/trades/ticks?market=KRW-BTC&count=1"
    finally:
        await client.aclose()


async def test_a_418_pauses_the_group() -> None:
    script = Script([(418, None)])
    clock = Clock()
    client = QuotationClient(
        "http://127.0.0.1:1", clock=clock, sleep=clock.sleep, transport=httpx.MockTransport(script)
    )
    try:
        with pytest.raises(ExchangeError) as first:
            await client.get(CALL)
        assert first.value.status == 418
        with pytest.raises(ExchangeError, match="paused"):
            await client.get(CALL)  # no request reaches Upbit while blocked
        assert len(script.urls) == 1
        assert client.failures == 2
    finally:
        await client.aclose()


async def test_the_pace_is_ten_per_second_per_group() -> None:
    script = Script([(200, None)] * 12)
    clock = Clock()
    client = QuotationClient(
        "http://127.0.0.1:1", clock=clock, sleep=clock.sleep, transport=httpx.MockTransport(script)
    )
    try:
        for _ in range(12):
            await client.get(CALL)
        assert clock.now - 100.0 >= 1.0  # the 11th waited for the window
    finally:
        await client.aclose()
