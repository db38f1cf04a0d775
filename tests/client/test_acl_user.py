"""A client built on a Redis connection the user made, logged in as an ACL user who may touch
nothing but the contract's keys and channels (any ``redis.asyncio.Redis`` works)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from tests.client.support import sample_line, wait_subscribed
from tests.conftest import RedisServer
from upbit_fanout.client import Event, FanoutClient
from upbit_fanout.subscriptions import Keys

TICKER_LINE = sample_line("ticker")


async def test_a_restricted_acl_user_can_do_everything_a_client_needs(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    p = keys.prefix
    await admin.execute_command(
        "ACL", "SETUSER", "bot", "on", ">bot-password", "resetkeys", f"~{p}:*",
        "resetchannels", f"&{p}:*", "+@all", "-@dangerous",
    )  # fmt: skip
    user_redis = aioredis.Redis(port=server.port, username="bot", password="bot-password")
    topic = "ticker:KRW-BTC"
    try:
        async with FanoutClient(user_redis, client_id="acl-bot", key_prefix=p) as client:
            await client.subscribe(topic)
            assert await admin.smembers(keys.intents("acl-bot")) == {topic.encode()}
            assert await admin.pttl(keys.intents("acl-bot")) > 0
            await wait_subscribed(admin, keys.channel(topic))
            await admin.publish(keys.channel(topic), TICKER_LINE)
            item = await asyncio.wait_for(anext(client.events()), 5)
            assert isinstance(item, Event)
            assert item.topic == topic
            assert item.payload == TICKER_LINE
        assert not await admin.exists(keys.intents("acl-bot"))  # released on close
    finally:
        await user_redis.aclose()
        await admin.aclose()
