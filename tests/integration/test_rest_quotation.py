"""Upbit's REST side, end to end: cold snapshots cost no WebSocket message, and a consumer's trade
tape has no hole across an upstream drop.

Real parts: Redis, the Collector, the emulator over loopback (its WebSocket and its REST
quotation API, both from one simulation), the client library.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from tests.client.support import client, wait_subscribed
from tests.collector.service_support import running_collector
from upbit_fanout.client import Event, Gap, Notice, Orderbook, Ticker, Trade
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [
    pytest.mark.usefixtures("real_redis_url"),
    pytest.mark.emulator(seed=5, rate=400, trading=["KRW-BTC"]),
]


async def test_cold_snapshots_come_from_rest_without_a_websocket_message(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    topics = [
        "ticker:KRW-ETH",
        "orderbook:KRW-ETH.5",
        "orderbook:KRW-ETH.5@10000",
        "trade:KRW-XRP",
        "candle.1m:KRW-ETH",
    ]
    async with running_collector(real_redis_url, keys, emu.public_url) as collector:
        await _listener_subscribed(real_redis_url, keys)
        async with client(real_redis_url, keys) as c:
            events = await c.snapshots(topics, timeout=10)
        assert collector.snapshots is not None
        assert collector.snapshots.answered == len(topics)
        r = aioredis.Redis.from_url(real_redis_url)
        try:  # published, never stored: a request creates no key
            assert await r.exists(*(keys.last(name) for name in topics)) == 0
        finally:
            await r.aclose()
    # not one WebSocket message: the collector never even opened a socket
    assert emu.received_total == 0
    assert emu.counters["quotation_requests"] >= 3
    for name in topics:
        assert events[name].stream_type == "REST", name

    ticker = events["ticker:KRW-ETH"].typed
    assert isinstance(ticker, Ticker)
    # KRW-ETH does not trade while nobody watches it: REST shows the simulation's own state
    assert ticker.trade_price == emu.simulator.last_price("KRW-ETH")
    assert ticker.ask_bid is None  # REST has no ask_bid; never invented

    book = events["orderbook:KRW-ETH.5"].typed
    assert isinstance(book, Orderbook)
    assert len(book.orderbook_units) == 5
    assert book.total_ask_size == sum((u.ask_size for u in book.orderbook_units), Decimal(0))
    expected = emu.simulator.orderbook("KRW-ETH", now_ms=0, depth=5)
    assert [u.ask_price for u in book.orderbook_units] == [
        u["ask_price"] for u in expected["orderbook_units"]
    ]

    grouped = events["orderbook:KRW-ETH.5@10000"].typed
    assert isinstance(grouped, Orderbook)
    expected = emu.simulator.orderbook("KRW-ETH", now_ms=0, depth=5, level=Decimal(10000))
    assert [u.bid_price for u in grouped.orderbook_units] == [
        u["bid_price"] for u in expected["orderbook_units"]
    ]
    assert grouped.level == Decimal(10000)

    trade = events["trade:KRW-XRP"].typed
    assert isinstance(trade, Trade)
    last = emu.trade_record("KRW-XRP")[-1]
    assert trade.sequential_id == last["sequential_id"]
    assert events["candle.1m:KRW-ETH"].data["type"] == "candle.1m"


async def test_rest_snapshot_has_the_streams_shape(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    """Same DEFAULT field names, in the same order, as the stream's events of that type."""
    async with running_collector(real_redis_url, keys, emu.public_url):
        await _listener_subscribed(real_redis_url, keys)
        async with client(real_redis_url, keys) as c:
            cold = await c.snapshots(["trade:KRW-ETH", "orderbook:KRW-ETH"], timeout=10)
            await c.subscribe("trade:KRW-BTC", "orderbook:KRW-BTC")
            live: dict[str, Event] = {}
            async with asyncio.timeout(15):
                async for item in c.events():
                    if isinstance(item, Event) and item.stream_type == "REALTIME":
                        live.setdefault(item.type, item)
                        if len(live) == 2:
                            break
    for type_name in ("trade", "orderbook"):
        assert list(cold[f"{type_name}:KRW-ETH"].data) == list(live[type_name].data), type_name


@pytest.mark.slow
async def test_a_consumers_trade_tape_has_no_hole_across_an_upstream_drop(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    code = "KRW-BTC"
    topic = f"trade:{code}"
    seen: list[int] = []
    backfilled: list[int] = []
    notices: list[Notice] = []
    gaps: list[Gap] = []
    async with (
        running_collector(real_redis_url, keys, emu.public_url) as collector,
        client(real_redis_url, keys, notices=True, lease_seconds=30) as c,
    ):
        await c.subscribe(topic)
        await collector.wait_subscribed(lambda union: topic in union, timeout=15)
        loop = asyncio.get_running_loop()
        dropped = False
        done_at: float | None = None
        async with asyncio.timeout(30):
            async for item in c.events():
                if isinstance(item, Event) and item.topic == topic and not item.cached:
                    sid = item.data["sequential_id"]
                    seen.append(sid)
                    if item.backfilled:
                        backfilled.append(sid)
                    if len(seen) == 200 and not dropped:
                        dropped = True
                        emu.refuse_connections(1.0)  # a longer hole: ~400 trades
                        assert await emu.drop_all() >= 1
                elif isinstance(item, Gap):
                    gaps.append(item)
                elif isinstance(item, Notice) and item.event == "backfill":
                    notices.append(item)
                    done_at = loop.time()
                if done_at is not None and loop.time() - done_at > 1.0 and len(seen) > 400:
                    break
    assert gaps, "the drop was announced"
    assert len(notices) == 1
    body = notices[0].data
    assert body["topic"] == topic
    assert body["complete"] is True
    assert body["count"] == len(backfilled) > 0
    assert len(seen) == len(set(seen)), "no trade twice"
    record = [t["sequential_id"] for t in emu.trade_record(code)]
    first, last = seen[0], max(seen)
    window = [sid for sid in record if first <= sid <= last]
    missing = sorted(set(window) - set(seen))
    assert missing == [], f"{len(missing)} of {len(window)} trades missing"
    # back-filled trades come in order among themselves
    assert backfilled == sorted(backfilled)


async def test_twelve_cold_snapshots_spend_nothing_of_the_live_connections_budget(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    """A live subscription, then 12 sequential cold snapshots. Through transient intents each
    cost a subscribe and a resubscribe out of the 100-per-minute budget; now none does."""
    codes = ["KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-USDT"]
    async with running_collector(real_redis_url, keys, emu.public_url) as collector:
        async with client(real_redis_url, keys) as c:
            await c.subscribe("trade:KRW-BTC")
            await collector.wait_subscribed(lambda union: "trade:KRW-BTC" in union, timeout=15)
            await emu.wait_received(1, within=15)  # the live subscription reached the emulator
            before = emu.received_total
            for name in [f"ticker:{code}" for code in codes] + [
                f"orderbook:{code}.5" for code in codes
            ]:
                event = await c.snapshot(name, timeout=10)
                assert event.stream_type == "REST", name
            assert emu.received_total == before  # not one WebSocket message
            await c.subscribe("ticker:KRW-BTC")  # the next live change is sent at once
            await collector.wait_subscribed(lambda union: "ticker:KRW-BTC" in union, timeout=15)
        assert collector.union >= {"trade:KRW-BTC", "ticker:KRW-BTC"}


async def test_without_rest_snapshots_the_intent_way_still_answers(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    async with (
        running_collector(real_redis_url, keys, emu.public_url, rest_snapshots=False),
        client(real_redis_url, keys) as c,
    ):
        event = await c.snapshot("ticker:KRW-ETH", timeout=10)
    assert event.stream_type == "SNAPSHOT"  # from the WebSocket, through a transient intent
    assert emu.received_total >= 1


@pytest.mark.slow
async def test_a_trade_tape_has_no_hole_across_a_failover(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    """The new leader fills the hole from the previous leader's last trade (``P:last``)."""
    code = "KRW-BTC"
    topic = f"trade:{code}"
    seen: list[int] = []
    notices: list[Notice] = []
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_collector(
                real_redis_url, keys, emu.public_url, leader_lease=1.0, collector_id="one"
            )
        )
        c = await stack.enter_async_context(
            client(real_redis_url, keys, notices=True, lease_seconds=30)
        )
        await c.subscribe(topic)
        await first.wait_subscribed(lambda union: topic in union, timeout=15)
        second = await stack.enter_async_context(
            running_collector(
                real_redis_url, keys, emu.public_url, leader_lease=1.0, collector_id="two"
            )
        )
        loop = asyncio.get_running_loop()
        done_at: float | None = None
        async with asyncio.timeout(30):
            async for item in c.events():
                if isinstance(item, Event) and item.topic == topic and not item.cached:
                    seen.append(item.data["sequential_id"])
                    if len(seen) == 200:
                        emu.refuse_connections(0.5)  # the new leader's socket comes late
                        await first.aclose()  # the standby takes over
                elif isinstance(item, Notice) and item.event == "backfill":
                    notices.append(item)
                    done_at = loop.time()
                if done_at is not None and loop.time() - done_at > 1.0:
                    break
        assert second.is_leader
    assert len(notices) == 1
    assert notices[0].data["complete"] is True
    assert notices[0].data["count"] > 0
    assert len(seen) == len(set(seen)), "no trade twice"
    record = [t["sequential_id"] for t in emu.trade_record(code)]
    window = [sid for sid in record if seen[0] <= sid <= max(seen)]
    missing = sorted(set(window) - set(seen))
    assert missing == [], f"{len(missing)} of {len(window)} trades missing"


async def _listener_subscribed(url: str, keys: Keys) -> None:
    """The leader listens on P:snapshot: a request published now is heard (pub/sub keeps none)."""
    r = aioredis.Redis.from_url(url)
    try:
        await wait_subscribed(r, keys.snapshot_requests)
    finally:
        await r.aclose()
