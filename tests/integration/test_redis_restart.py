"""Redis restarted under running clients and a running collector: every client
recovers, reports a gap, re-asserts its intents, and events flow again within seconds; nobody is
restarted. Everything is real: a redis-server this test owns, the emulator over loopback, the
collector and two library clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from tests.client.support import restart_same_port
from tests.conftest import RedisServer
from upbit_fanout.client import Event, FanoutClient, Gap
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions import Keys

TOPICS = {"a": "ticker:KRW-BTC", "b": "trade:KRW-BTC"}


async def _next_live_event(client: FanoutClient, topic: str, within: float = 15.0) -> Event:
    async with asyncio.timeout(within):
        async for item in client:
            if isinstance(item, Event) and item.topic == topic and not item.cached:
                return item
    raise AssertionError("the event stream ended")


async def _next_gap(client: FanoutClient, within: float = 15.0) -> Gap:
    async with asyncio.timeout(within):
        async for item in client:
            if isinstance(item, Gap):
                return item
    raise AssertionError("the event stream ended")


async def test_clients_and_collector_recover_from_a_redis_restart(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    collector_redis = aioredis.Redis.from_url(server.url)
    admin = aioredis.Redis.from_url(server.url)
    options: dict[str, Any] = {
        "key_prefix": keys.prefix,
        "lease_seconds": 3.0,
        "health_check_interval": 0.5,
    }
    try:
        async with (
            Emulator(rate=400, seed=7) as emu,
            Collector(
                redis=collector_redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                sweep_interval=0.3,
                backoff_initial=0.05,
                backoff_max=0.5,
            ) as collector,
            FanoutClient(server.url, client_id="a", **options) as a,
            FanoutClient(server.url, client_id="b", **options) as b,
        ):
            clients = {"a": a, "b": b}
            for name, client in clients.items():
                await client.subscribe(TOPICS[name])
            await collector.wait_subscribed(lambda union: set(TOPICS.values()) <= union)
            for name, client in clients.items():
                await _next_live_event(client, TOPICS[name])

            await asyncio.to_thread(restart_same_port, server)  # empty Redis, every link cut

            for name, client in clients.items():
                await _next_gap(client)
                await _next_live_event(client, TOPICS[name])
                # the intent is back on the new server, with a lease
                key = keys.intents(name)
                assert await admin.smembers(key) == {TOPICS[name].encode()}
                assert 0 < await admin.pttl(key) <= 3000
            # the collector writes its view again within seconds: the union it serves, its status
            union = {t.encode() for t in TOPICS.values()}
            async with asyncio.timeout(5):
                while await admin.smembers(keys.union) != union:  # noqa: ASYNC110 - state in Redis
                    await asyncio.sleep(0.05)
                while await admin.hget(keys.status, "state") != b"subscribed":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
    finally:
        await admin.aclose()
        await collector_redis.aclose()
