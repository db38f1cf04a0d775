"""The emulator's plain-HTTP routes (emulator.routes): which path gets which answer. No sockets.

The same answers over a real HTTP connection are pinned by test_server_public.py
(``test_market_all``), test_rest.py and test_quotation.py.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from upbit_fanout.emulator.account import Account
from upbit_fanout.emulator.auth import NonceMemory
from upbit_fanout.emulator.markets import Market
from upbit_fanout.emulator.quotation import QuotationApi
from upbit_fanout.emulator.rest import RestApi
from upbit_fanout.emulator.routes import HttpRoutes
from upbit_fanout.emulator.simulation import MarketSimulator

T0 = 1_700_000_000_000
MARKETS = (
    Market("KRW-BTC", "비트코인", "Bitcoin", False),
    Market("KRW-ETH", "이더리움", "Ethereum", True),
)


def routes(counters: Counter[str], *, known: frozenset[str] | None = None) -> HttpRoutes:
    sim = MarketSimulator(MARKETS, seed=1, now_ms=T0)
    rest = RestApi(
        Account(seed=1), access_key="ak", secret_key="sk", nonces=NonceMemory(10), per_second=30
    )
    return HttpRoutes(
        markets=MARKETS,
        known=known if known is not None else frozenset(m.code for m in MARKETS),
        rest=rest,
        quotation=QuotationApi(lambda: sim),
        counters=counters,
    )


def get(table: HttpRoutes, path: str, query: str = "") -> tuple[int, object, dict[str, str]]:
    response = table.answer(
        path, query, authorization=None, address="127.0.0.1", now=100.0, now_ms=T0
    )
    assert response is not None
    return response.status_code, json.loads(response.body), dict(response.headers.raw_items())


def test_market_all_lists_the_markets_and_the_replay_files_codes() -> None:
    counters: Counter[str] = Counter()
    table = routes(counters, known=frozenset({"KRW-BTC", "KRW-ETH", "BTC-XRP"}))
    status, body, headers = get(table, "/v1/market/all")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body == [
        {"market": "KRW-BTC", "korean_name": "비트코인", "english_name": "Bitcoin"},
        {"market": "KRW-ETH", "korean_name": "이더리움", "english_name": "Ethereum"},
        {"market": "BTC-XRP", "korean_name": "BTC-XRP", "english_name": "BTC-XRP"},
    ]
    _, detailed, _ = get(table, "/v1/market/all", "is_details=TRUE")
    assert isinstance(detailed, list)
    assert [m["market_event"]["warning"] for m in detailed] == [False, True, False]
    assert table.market_all(details=False) is table.market_all(details=False)  # built once
    assert counters == Counter()  # market/all is not a rate-limited API here


def test_rest_and_quotation_answers_are_counted_with_remaining_req() -> None:
    counters: Counter[str] = Counter()
    table = routes(counters)
    status, body, headers = get(table, "/v1/ticker", "markets=KRW-BTC")
    assert status == 200
    assert isinstance(body, list)
    assert body[0]["market"] == "KRW-BTC"
    assert headers["Remaining-Req"].startswith("group=ticker;")
    status, body, _ = get(table, "/v1/accounts")  # no token
    assert status == 401
    assert isinstance(body, dict)
    assert body["error"]["name"] == "jwt_verification"
    assert counters == Counter({"quotation_requests": 1, "rest_requests": 1, "rest_refused:401": 1})


@pytest.mark.parametrize("path", ["/websocket/v1", "/websocket/v1/private", "/v1/nothing", "/"])
def test_other_paths_are_left_to_the_server(path: str) -> None:
    counters: Counter[str] = Counter()
    response = routes(counters).answer(
        path, "", authorization=None, address="127.0.0.1", now=0.0, now_ms=T0
    )
    assert response is None
    assert counters == Counter()
