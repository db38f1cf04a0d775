"""FanoutClient against a real Redis, with the collector's side played by the test: it publishes
payloads exactly as the collector would (``subscriptions.codec``), on the contract's channels.

What a user would notice: the intent key and its lease, events with exact numbers, callbacks,
unsubscribe, notices, and that a bad topic never reaches Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from tests.client.support import Collected, client, notice, payload, sample_line, wait_subscribed
from tests.helpers import until
from upbit_fanout.client import (
    ClientError,
    Event,
    FanoutClient,
    Gap,
    InvalidTopicError,
    Item,
    MyAsset,
    Notice,
    Orderbook,
    RedisUnavailableError,
    Ticker,
    Topic,
)
from upbit_fanout.subscriptions.codec import CodecName
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

TICKER = sample_line("ticker")
ORDERBOOK_EXP = sample_line("orderbook", lambda line: b"1.16539E8" in line)
MY_ASSET = sample_line("myAsset")


async def next_item(iterator: AsyncIterator[Item], within: float = 5.0) -> Item:
    return await asyncio.wait_for(anext(iterator), within)


async def test_lease_is_written_refreshed_and_released(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    control = r.pubsub()
    await control.subscribe(keys.control)
    async with client(real_redis_url, keys, lease_seconds=1.2) as c:
        key = keys.intents(c.client_id)
        await c.subscribe("ticker:KRW-BTC")
        await c.subscribe("trade", codes=["KRW-BTC", "KRW-ETH"])
        assert await r.smembers(key) == {b"ticker:KRW-BTC", b"trade:KRW-BTC", b"trade:KRW-ETH"}
        assert 0 < await r.pttl(key) <= 1200
        # the generated id is visible as the key's name, the way redis-cli users see it
        found = [k async for k in r.scan_iter(match=keys.intents_pattern)]
        assert [keys.client_id_of(k.decode()) for k in found] == [c.client_id]
        # twice the lease later, the heartbeat has kept it alive
        await asyncio.sleep(2.4)
        assert 0 < await r.pttl(key) <= 1200
        assert c.topics == {"ticker:KRW-BTC", "trade:KRW-BTC", "trade:KRW-ETH"}
    assert not await r.exists(key)
    said: list[bytes] = []
    async with asyncio.timeout(5):
        while len(said) < 3:  # one control message per subscribe, one for close
            message = await control.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                said.append(message["data"])
    assert said == [c.client_id.encode()] * 3
    await control.aclose()


async def test_invalid_topic_raises_before_anything_is_written(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys) as c:
        with pytest.raises(InvalidTopicError, match="market codes are upper case: KRW-BTC"):
            await c.subscribe("ticker:KRW-ETH", "ticker:krw-btc")
        with pytest.raises(InvalidTopicError, match="depth must be 1, 5, 15 or 30"):
            await c.subscribe("orderbook:KRW-BTC.7")
        with pytest.raises(InvalidTopicError):
            await c.snapshot("tickers:KRW-BTC")
        # a Topic built by hand is no way around the check
        with pytest.raises(InvalidTopicError, match="market codes are upper case: KRW-BTC"):
            await c.subscribe(Topic("ticker", "krw-btc"))
        with pytest.raises(InvalidTopicError, match="depth must be 1, 5, 15 or 30"):
            await c.subscribe(Topic("orderbook", "KRW-BTC", 7))
        assert not [k async for k in r.scan_iter(match=f"{keys.prefix}:*")]
        assert c.topics == frozenset()


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_events_arrive_typed_with_exact_numbers(
    codec: CodecName, real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys) as c:
        await c.subscribe("ticker:KRW-BTC", "orderbook:KRW-BTC.5", "myAsset")
        await wait_subscribed(r, keys.channel("myAsset"))
        await r.publish(keys.channel("ticker:KRW-BTC"), payload(TICKER, codec))
        await r.publish(keys.channel("orderbook:KRW-BTC.5"), payload(ORDERBOOK_EXP, codec))
        await r.publish(keys.channel("myAsset"), payload(MY_ASSET, codec))
        events = c.events()
        ticker, book, asset = [await next_item(events) for _ in range(3)]

    assert isinstance(ticker, Event)
    assert isinstance(book, Event)
    assert isinstance(asset, Event)
    assert (ticker.topic, ticker.type, ticker.code) == ("ticker:KRW-BTC", "ticker", "KRW-BTC")
    assert ticker.stream_type == "REALTIME"
    assert not ticker.cached
    assert isinstance(ticker.data["acc_trade_price"], Decimal)
    assert str(ticker.data["acc_trade_price"]) == "78039261076.51241000"
    assert isinstance(ticker.typed, Ticker)
    assert ticker.typed.trade_price == 32287000

    assert (book.topic, book.type, book.code) == ("orderbook:KRW-BTC.5", "orderbook", "KRW-BTC")
    typed_book = book.typed
    assert isinstance(typed_book, Orderbook)
    assert typed_book.orderbook_units[0].ask_price == Decimal("1.16539E8")
    assert str(book.data["orderbook_units"][1]["ask_size"]) == "0.00077720"

    assert (asset.topic, asset.type, asset.code) == ("myAsset", "myAsset", None)
    typed_asset = asset.typed
    assert isinstance(typed_asset, MyAsset)
    assert str(typed_asset.assets[0].balance) == "1386929.37231066771348207123"


async def test_callbacks_by_topic_and_glob_sync_async_and_failing(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    exact, glob, every, slow = Collected(), Collected(), Collected(), Collected()

    async def slow_one(event: Event) -> None:
        await asyncio.sleep(0.01)
        slow(event)

    def broken(event: Event) -> None:
        raise RuntimeError("a bug in user code")

    async with client(real_redis_url, keys) as c:
        c.on("ticker:KRW-BTC", exact)
        c.on("ticker:*", glob)
        c.on("*", every)
        c.on("trade:*", slow_one)
        c.on("*", broken)
        remove = c.on("trade:KRW-BTC", exact)
        remove()
        with pytest.raises(InvalidTopicError):
            c.on("ticker:krw-btc", exact)
        await c.subscribe("ticker", "trade", codes=["KRW-BTC", "KRW-ETH"])
        await wait_subscribed(r, keys.channel("trade:KRW-ETH"))
        for topic in sorted(c.topics):
            await r.publish(keys.channel(topic), TICKER)
        await every.wait_count(4)
        await slow.wait_count(2)
        await glob.wait_count(2)
        assert [e.topic for e in exact.items] == ["ticker:KRW-BTC"]
        assert sorted(e.topic for e in glob.items) == ["ticker:KRW-BTC", "ticker:KRW-ETH"]
        assert sorted(e.topic for e in slow.items) == ["trade:KRW-BTC", "trade:KRW-ETH"]
        assert c.callback_errors == 4  # the broken one, once per event; the client lives on
        assert c.connected


async def test_iterator_and_callbacks_together_see_every_event(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    seen = Collected()
    async with client(real_redis_url, keys) as c:
        c.on("ticker:*", seen)
        await c.subscribe("ticker:KRW-BTC")
        await wait_subscribed(r, keys.channel("ticker:KRW-BTC"))
        for _ in range(3):
            await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        await seen.wait_count(3)
        events = c.events()  # started late: the items received meanwhile are kept
        got = [await next_item(events) for _ in range(3)]
        assert [getattr(e, "topic", None) for e in got] == ["ticker:KRW-BTC"] * 3


async def test_unsubscribe_rewrites_the_set_and_stops_delivery(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys) as c:
        key = keys.intents(c.client_id)
        await c.subscribe("ticker:KRW-BTC", "trade:KRW-BTC")
        await wait_subscribed(r, keys.channel("trade:KRW-BTC"))
        await r.publish(keys.channel("trade:KRW-BTC"), TICKER)  # buffered, never read
        await until(lambda: _buffered(c, 1), what="the trade event buffered")
        await c.unsubscribe("trade:KRW-BTC", "ticker:KRW-XRP")  # unknown ones are ignored
        assert await r.smembers(key) == {b"ticker:KRW-BTC"}
        assert await r.pttl(key) > 0
        await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        first = await next_item(c.events())
        assert isinstance(first, Event)
        assert first.topic == "ticker:KRW-BTC"
        await c.unsubscribe("ticker:KRW-BTC")
        assert not await r.exists(key)
        assert c.topics == frozenset()


async def _buffered(c: FanoutClient, count: int) -> bool:
    return len(c._stream) >= count


async def test_notices_reach_iterator_and_callbacks_when_asked(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    heard = Collected()
    async with client(real_redis_url, keys, notices=True) as c:
        c.on_notice(heard)
        await wait_subscribed(r, keys.notices)
        await r.publish(keys.notices, notice("gap", reason="upstream reconnected"))
        await r.publish(keys.notices, b"not json")  # ignored, never fatal
        await r.publish(keys.notices, notice("connected", connection="public"))
        item = await next_item(c.events())
        await heard.wait_count(2)
    assert isinstance(item, Notice)
    assert item.kind == "notice"
    assert (item.event, item.at, item.data["reason"]) == (
        "gap",
        1_700_000_000_000,
        "upstream reconnected",
    )
    assert [n.event for n in heard.items] == ["gap", "connected"]


async def test_notices_stay_out_of_the_iterator_by_default(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys) as c:
        await c.subscribe("ticker:KRW-BTC")
        await wait_subscribed(r, keys.channel("ticker:KRW-BTC"))
        await r.publish(keys.notices, notice("connected"))
        await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        item = await next_item(c.events())
        assert isinstance(item, Event)


async def test_a_collector_gap_notice_is_a_gap_by_default(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys) as c:
        await c.subscribe("ticker:KRW-BTC", "myAsset")
        await wait_subscribed(r, keys.channel("ticker:KRW-BTC"))
        await r.set(keys.last("ticker:KRW-BTC"), TICKER)
        body = {"event": "gap", "at": 1_700_000_005_000, "since": 1_700_000_001_000}
        await r.publish(keys.notices, json.dumps({**body, "connection": "public", "reason": "x"}))
        gap = await next_item(c.events())
        assert isinstance(gap, Gap)
        assert (gap.started_at, gap.ended_at, gap.duration) == (1_700_000_001, 1_700_000_005, 4)
        assert gap.topics == ("ticker:KRW-BTC",)  # the public connection's: not myAsset
        assert (gap.source, gap.connection, gap.reason) == ("collector", "public", "collector: x")
        refreshed = await next_item(c.events())
        assert isinstance(refreshed, Event)
        assert refreshed.cached
        assert refreshed.payload == TICKER
        # A notice without a window or connection concerns every topic, from its own time.
        await r.publish(keys.notices, json.dumps({"event": "gap", "at": 1_700_000_009_000}))
        gap = await next_item(c.events())
        assert isinstance(gap, Gap)
        assert gap.started_at == gap.ended_at == 1_700_000_009
        assert gap.topics == ("myAsset", "ticker:KRW-BTC")
        await next_item(c.events())  # the refreshed last value of ticker:KRW-BTC
        # A failover (or a lapsed lease) concerns every connection: "all" covers every topic.
        failover = {"event": "gap", "at": 1_700_000_012_000, "connection": "all"}
        await r.publish(keys.notices, json.dumps({**failover, "reason": "failover: a took over"}))
        gap = await next_item(c.events())
        assert isinstance(gap, Gap)
        assert gap.topics == ("myAsset", "ticker:KRW-BTC")
        assert (gap.connection, gap.reason) == ("all", "collector: failover: a took over")


async def test_works_with_a_given_decode_responses_client(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    given = aioredis.Redis.from_url(real_redis_url, decode_responses=True)
    try:
        async with FanoutClient(given, key_prefix=keys.prefix, client_id="bot@desk-1") as c:
            await c.subscribe("myAsset")
            await wait_subscribed(r, keys.channel("myAsset"))
            await r.publish(keys.channel("myAsset"), payload(MY_ASSET, "msgpack"))
            event = await next_item(c.events())
            assert isinstance(event, Event)
            assert isinstance(event.typed, MyAsset)
            await r.set(keys.last("myAsset"), payload(MY_ASSET, "msgpack"))
            await r.sadd(keys.union, "myAsset")
            cached = await c.snapshot("myAsset")
            assert cached.cached
            assert isinstance(cached.typed, MyAsset)
        assert await given.ping()  # the client did not close what it did not create
    finally:
        await given.aclose()
    assert not await r.exists(keys.intents("bot@desk-1"))


async def test_unreachable_redis_fails_at_open_with_a_clear_error(keys: Keys) -> None:
    c = FanoutClient("redis://:secret@127.0.0.1:1/0", key_prefix=keys.prefix)
    with pytest.raises(RedisUnavailableError, match=r"127\.0\.0\.1:1") as info:
        async with c:
            pass
    assert "secret" not in str(info.value)
    with pytest.raises(ClientError, match="closed"):
        await c.subscribe("ticker:KRW-BTC")


async def test_using_a_client_outside_async_with_is_refused(keys: Keys) -> None:
    c = FanoutClient("redis://127.0.0.1:1/0", key_prefix=keys.prefix)
    with pytest.raises(ClientError, match="async with"):
        await c.subscribe("ticker:KRW-BTC")
    await c.aclose()


async def test_a_callback_may_close_the_client(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    closed = asyncio.Event()
    async with client(real_redis_url, keys) as c:

        async def stop(event: Event) -> None:
            await c.aclose()
            closed.set()

        c.on("*", stop)
        await c.subscribe("ticker:KRW-BTC")
        await wait_subscribed(r, keys.channel("ticker:KRW-BTC"))
        await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        await asyncio.wait_for(closed.wait(), 5)
        assert not await r.exists(keys.intents(c.client_id))
        assert [item async for item in c] == []  # the stream of a closed client ends
