"""snapshot(): from the last-value cache when the topic is live, else through a short-lived intent.

The collector is SIMULATED here (contract level): :class:`tests.client.fakes.FakeCollector` listens
on ``P:control`` as the real one does, reads the intent key named there and publishes one event per
topic on the topic's channel. tests/client/test_end_to_end.py does the same with the real
collector.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.client.fakes import FakeCollector
from tests.client.support import client, sample_line, with_fields
from tests.helpers import scaled
from upbit_fanout.client import Event, SnapshotTimeoutError, Ticker
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

TICKER = sample_line("ticker")


@pytest.fixture
async def fake(r: aioredis.Redis, keys: Keys) -> AsyncIterator[FakeCollector]:
    async with FakeCollector(r, keys) as collector:
        yield collector


async def intent_keys(r: aioredis.Redis, keys: Keys) -> list[bytes]:
    return [key async for key in r.scan_iter(match=keys.intents_pattern)]


async def test_live_topic_is_answered_from_the_cache_without_an_intent(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, fake: FakeCollector
) -> None:
    await r.sadd(keys.union, "ticker:KRW-BTC")
    await r.set(keys.last("ticker:KRW-BTC"), with_fields(TICKER, timestamp=11))
    async with client(real_redis_url, keys) as c:
        event = await c.snapshot("ticker:KRW-BTC", timeout=2)
        assert event.cached
        assert event.topic == "ticker:KRW-BTC"
        assert event.data["timestamp"] == 11
        assert isinstance(event.typed, Ticker)
        assert fake.intents == {}  # no intent was written, so the collector heard nothing
        assert await intent_keys(r, keys) == []
        assert c.topics == frozenset()  # a snapshot is not a subscription


async def test_cold_topic_goes_through_a_transient_intent_that_is_released(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, fake: FakeCollector
) -> None:
    async with client(real_redis_url, keys) as c:
        await c.subscribe("trade:KRW-BTC")
        event = await c.snapshot("ticker:KRW-ETH", timeout=3)
        assert not event.cached
        assert event.code == "KRW-ETH"
        transient = [cid for cid in fake.intents if cid != c.client_id]
        assert len(transient) == 1
        assert transient[0].startswith(c.client_id + ".snap")
        topics, pttl = fake.intents[transient[0]]
        assert topics == {"ticker:KRW-ETH"}
        assert 0 < pttl <= 5000  # the lease covers the wait: timeout + 2 s
        # the transient intent is gone; the client's own intent is untouched
        assert await intent_keys(r, keys) == [keys.intents(c.client_id).encode()]
        assert await r.smembers(keys.intents(c.client_id)) == {b"trade:KRW-BTC"}


async def test_stale_cache_is_refreshed_when_max_age_is_given(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, fake: FakeCollector
) -> None:
    await r.sadd(keys.union, "ticker:KRW-BTC")
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    await r.set(keys.last("ticker:KRW-BTC"), with_fields(TICKER, timestamp=an_hour_ago))
    async with client(real_redis_url, keys) as c:
        cached = await c.snapshot("ticker:KRW-BTC", max_age=7200)
        assert cached.cached
        fresh = await c.snapshot("ticker:KRW-BTC", max_age=60, timeout=3)
        assert not fresh.cached
        assert fresh.data["timestamp"] != an_hour_ago


async def test_batch_writes_one_intent_for_every_cold_topic(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, fake: FakeCollector
) -> None:
    await r.sadd(keys.union, "ticker:KRW-BTC")
    await r.set(keys.last("ticker:KRW-BTC"), TICKER)
    wanted = ["ticker:KRW-BTC", "ticker:KRW-ETH", "ticker:KRW-XRP", "orderbook:KRW-ETH.5"]
    async with client(real_redis_url, keys) as c:
        events = await c.snapshots(wanted, timeout=3)
        assert set(events) == set(wanted)
        assert events["ticker:KRW-BTC"].cached
        assert all(not events[t].cached for t in wanted[1:])
        assert [topics for topics, _ in fake.intents.values()] == [set(wanted[1:])]
        assert await intent_keys(r, keys) == []


async def test_timeout_names_the_topic_and_the_likely_cause(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys) as c:
        started = time.monotonic()
        with pytest.raises(SnapshotTimeoutError) as info:
            await c.snapshot("ticker:KRW-DOGE", timeout=0.5)
        assert time.monotonic() - started < scaled(2.5)
        message = str(info.value)
        assert "ticker:KRW-DOGE" in message
        assert "0.5 s" in message
        assert "no collector status" in message
        assert repr(keys.prefix) in message
        assert info.value.topics == ("ticker:KRW-DOGE",)
        assert await intent_keys(r, keys) == []  # the transient intent did not stay behind


async def test_timeout_reports_a_refusal_and_keeps_partial_results(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with FakeCollector(r, keys, refuse="myAsset"), client(real_redis_url, keys) as c:
        await r.hset(keys.status, mapping={"state": "subscribed", "last_error": ""})
        with pytest.raises(SnapshotTimeoutError) as info:
            await c.snapshots(["ticker:KRW-BTC", "myAsset"], timeout=1)
    assert info.value.topics == ("myAsset",)
    assert set(info.value.received) == {"ticker:KRW-BTC"}
    assert isinstance(info.value.received["ticker:KRW-BTC"], Event)
    assert "refused myAsset: no API keys configured" in str(info.value)
