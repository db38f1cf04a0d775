"""Upbit's market list: the pure part from tables, the fetch against the emulator's real HTTP."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.helpers import free_port, until
from upbit_fanout.collector.markets import (
    MarketList,
    MarketSet,
    market_list_url,
    parse_market_list,
)
from upbit_fanout.emulator import Emulator
from upbit_fanout.emulator.markets import default_markets
from upbit_fanout.subscriptions.topics import parse_topic

UPBIT = MarketSet.of(market.code for market in default_markets())


@pytest.mark.parametrize(
    ("ws_url", "rest_url"),
    [
        ("wss://api.upbit.com/websocket/v1", "https://api.upbit.com/v1/market/all"),
        ("ws://127.0.0.1:8765/websocket/v1", "http://127.0.0.1:8765/v1/market/all"),
        ("ws://localhost:1/websocket/v1/private?x=1", "http://localhost:1/v1/market/all"),
        ("WSS://sg-api.upbit.com/websocket/v1", "https://sg-api.upbit.com/v1/market/all"),
    ],
)
def test_the_market_list_is_on_the_upstreams_host(ws_url: str, rest_url: str) -> None:
    assert market_list_url(ws_url) == rest_url


@pytest.mark.parametrize("bad", ["ftp://host/x", "not a url", "ws:///websocket/v1"])
def test_a_url_without_a_host_or_scheme_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot derive"):
        market_list_url(bad)


def test_the_list_is_the_market_fields() -> None:
    body = orjson.dumps(
        [
            {"market": "KRW-BTC", "korean_name": "비트코인", "english_name": "Bitcoin"},
            {"market": "BTC-ETH", "korean_name": "이더리움", "english_name": "Ethereum"},
        ]
    )
    assert parse_market_list(body) == ("KRW-BTC", "BTC-ETH")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>503</html>",
        b"[]",
        b'{"error": {"name": "too_many_requests"}}',
        b'[{"korean_name": "x"}]',
        b'[{"market": 5}]',
        b'["KRW-BTC"]',
    ],
)
def test_anything_else_is_not_a_market_list(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"market list|market-list entry"):
        parse_market_list(body)


@pytest.mark.parametrize(
    ("code", "closest"),
    [
        ("KRW-BTX", "KRW-BTC"),
        ("KRW-ETG", "KRW-ETH"),
        ("KWR-ETH", "KRW-ETH"),  # the quote mistyped: matched against every market
        ("BTC-XPR", "BTC-XRP"),
        ("KRW-ZZ0000001", None),  # nothing close: no suggestion rather than a wild one
        ("QQQ-QQQQQQQ", None),
    ],
)
def test_the_closest_real_market_is_suggested(code: str, closest: str | None) -> None:
    assert UPBIT.closest(code) == closest


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("ticker:KRW-BTC", None),
        ("orderbook:KRW-ETH.5", None),
        ("myOrder:*", None),
        ("myAsset", None),
        ("ticker:KRW-BTX", "unknown market KRW-BTX; did you mean KRW-BTC?"),
        ("orderbook:KRW-BTX.15", "unknown market KRW-BTX; did you mean KRW-BTC?"),
        ("myOrder:KRW-ETG", "unknown market KRW-ETG; did you mean KRW-ETH?"),
        (
            "trade:KRW-ZZ0000001",
            "unknown market KRW-ZZ0000001 (Upbit lists 855 markets; see /v1/market/all)",
        ),
    ],
)
def test_a_topic_on_an_unknown_market_is_refused_with_a_suggestion(
    topic: str, reason: str | None
) -> None:
    assert UPBIT.refusal(parse_topic(topic)) == reason


def test_the_suggestion_can_be_skipped_for_refusals_nobody_sees() -> None:
    assert UPBIT.refusal(parse_topic("ticker:KRW-BTX"), suggest=False) == (
        "unknown market KRW-BTX (Upbit lists 855 markets; see /v1/market/all)"
    )


async def test_the_list_is_fetched_from_the_emulator_over_http() -> None:
    async with Emulator(port=0, seed=1, rate=10) as emu:
        changes: list[int] = []
        markets = MarketList(market_list_url(emu.public_url), on_change=lambda: changes.append(1))
        loaded = await markets.fetch()
        assert loaded == UPBIT
        assert len(loaded) == 855


async def test_without_rest_it_says_so_retries_and_loads_when_it_comes_back() -> None:
    port = free_port()
    notes: list[str] = []
    markets = MarketList(
        f"http://127.0.0.1:{port}/v1/market/all",
        on_change=lambda: notes.append(markets.note),
        retry_initial=0.05,
        retry_max=0.2,
        timeout=2.0,
    )
    task = asyncio.create_task(markets.run())
    try:
        await until(lambda: markets.failures >= 2, within=10)
        assert not notes or "not loaded" in notes[-1]
        assert _loaded(markets) is None
        assert markets.note.startswith("not loaded (")
        assert "market codes are not checked, retrying" in markets.note
        async with Emulator(port=port, seed=1, rate=10):
            await until(lambda: markets.current is not None, within=10)
        assert _loaded(markets) == UPBIT
        assert markets.note.startswith("855 markets, loaded ")
        assert notes[-1] == markets.note
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _loaded(markets: MarketList) -> MarketSet | None:
    return markets.current
