"""A consumer that stops reading: memory stays bounded, the lease stays alive, others go on.

The collector's side is played by the test (it publishes payloads on the topic's channel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from tests.client.support import client, sample_line, wait_subscribed, with_fields
from tests.conftest import RedisServer
from tests.helpers import until
from upbit_fanout.client import Event, FanoutClient, Gap
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

TICKER = sample_line("ticker")
TOPIC = "ticker:KRW-BTC"


async def publish_numbered(redis: aioredis.Redis, channel: str, count: int) -> None:
    """``count`` ticker events whose ``timestamp`` is their sequence number 0..count-1."""
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.publish(channel, with_fields(TICKER, timestamp=n))
        await pipe.execute()


async def test_drop_oldest_bounds_memory_counts_drops_and_keeps_the_lease(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    total = 3000
    async with (
        client(
            real_redis_url, keys, overflow="drop_oldest", queue_size=50, lease_seconds=1.2
        ) as slow,
        client(real_redis_url, keys) as healthy,
    ):
        await slow.subscribe(TOPIC)
        await healthy.subscribe(TOPIC)
        await wait_subscribed(r, keys.channel(TOPIC), 2)
        slow_events = slow.events()  # iterating has started, but nobody reads for a while
        await publish_numbered(r, keys.channel(TOPIC), total)

        got: list[int] = []
        async with asyncio.timeout(10):
            async for item in healthy:
                assert isinstance(item, Event)
                got.append(item.data["timestamp"])
                if len(got) == total:
                    break
        assert got == list(range(total))  # the other client lost nothing

        await until(lambda: _dropped_at_least(slow, total - 50), what="drops counted")
        assert len(slow._stream) == 50  # bounded
        key = keys.intents(slow.client_id)
        for _ in range(3):  # 1.8 s without reading: more than the 1.2 s lease
            await asyncio.sleep(0.6)
            assert 0 < await r.pttl(key) <= 1200
        kept = [(await anext(slow_events)) for _ in range(50)]
        assert [e.data["timestamp"] for e in kept if isinstance(e, Event)] == list(
            range(total - 50, total)
        )  # the newest survive
        assert slow.dropped == total - 50
        assert healthy.dropped == 0


async def _dropped_at_least(c: object, count: int) -> bool:
    return bool(getattr(c, "dropped") >= count)  # noqa: B009 - the public counter under test


async def test_block_keeps_everything_and_the_lease_while_the_consumer_pauses(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with client(real_redis_url, keys, queue_size=10, lease_seconds=1.2) as c:
        await c.subscribe(TOPIC)
        await wait_subscribed(r, keys.channel(TOPIC))
        events = c.events()
        await publish_numbered(r, keys.channel(TOPIC), 300)
        await until(lambda: _blocked(c), what="the reader waiting for room")
        for _ in range(3):  # paused 1.8 s, with health checks every 0.5 s: no false alarm
            await asyncio.sleep(0.6)
            assert 0 < await r.pttl(keys.intents(c.client_id)) <= 1200
        got = [await anext(events) for _ in range(300)]
        assert [e.data["timestamp"] for e in got if isinstance(e, Event)] == list(range(300))
        assert c.dropped == 0
        assert c.reconnects == 0


async def _blocked(c: FanoutClient) -> bool:
    return c._reader.blocked  # the link paused, its last read held back in order


async def test_block_policy_reports_a_gap_when_redis_drops_the_slow_subscriber(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
        async with client(server.url, keys, queue_size=10) as c:
            await c.subscribe(TOPIC)
            await wait_subscribed(admin, keys.channel(TOPIC))
            events = c.events()
            for _ in range(20):  # far more than the socket buffers and Redis's 64 kB limit
                await publish_numbered(admin, keys.channel(TOPIC), 1000)
            # Redis closes the subscriber once its output buffer passes the hard limit; the
            # client notices when it reads again, reconnects, and says so in the stream.
            async with asyncio.timeout(15):
                async for item in events:
                    if isinstance(item, Gap):
                        break
            assert isinstance(item, Gap), "the stream ended without announcing the hole"
            assert "connection lost" in item.reason.lower()
            assert item.topics == (TOPIC,)
            assert c.reconnects == 1
            await wait_subscribed(admin, keys.channel(TOPIC))
            await admin.publish(keys.channel(TOPIC), with_fields(TICKER, timestamp=-1))
            async with asyncio.timeout(10):
                async for item in events:
                    if isinstance(item, Event) and item.data["timestamp"] == -1:
                        break
    finally:
        await admin.aclose()
