"""A client built on a Redis connection the user made, logged in as an ACL user who may touch
nothing but the contract's keys and channels (any ``redis.asyncio.Redis`` works)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

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


def market_data_acl(p: str) -> list[str]:
    """The market-data user of docs/contract.md ("Keeping private data apart"), as ACL rules."""
    public = ("ticker", "trade", "orderbook", "candle.")
    return [
        "on", ">md-password", "resetkeys", "resetchannels", "+@all", "-@dangerous",
        f"~{p}:intents:*", f"%R~{p}:union", f"%R~{p}:status",
        *(f"%R~{p}:last:{t}{'' if t.endswith('.') else ':'}*" for t in public),
        f"&{p}:control", f"&{p}:notices", f"&{p}:snapshot",
        *(f"&{p}:{t}{'' if t.endswith('.') else ':'}*" for t in public),
    ]  # fmt: skip


async def test_the_market_data_user_reads_market_data_but_no_private_stream(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    p = keys.prefix
    await admin.execute_command("ACL", "SETUSER", "md", *market_data_acl(p))
    stream = keys.stream("myOrder")
    await admin.xadd(stream, {"payload": b"{}", "topic": "myOrder:KRW-BTC", "source": "ws"})
    await admin.set(keys.last("myOrder:KRW-BTC"), b"{}")
    user = aioredis.Redis(port=server.port, username="md", password="md-password")
    topic = "ticker:KRW-BTC"
    try:
        async with FanoutClient(user, client_id="md-bot", key_prefix=p) as client:
            await client.subscribe(topic)
            await wait_subscribed(admin, keys.channel(topic))
            await admin.publish(keys.channel(topic), TICKER_LINE)
            item = await asyncio.wait_for(anext(client.events()), 5)
            assert isinstance(item, Event)
            assert item.payload == TICKER_LINE

            group = client.stream_group("myOrder", group="spy", block=0.1)
            with pytest.raises(NoPermissionError):
                await group.read()  # XGROUP CREATE
            await admin.xgroup_create(stream, "spy", id="0")
            for attempt in (
                user.xreadgroup("spy", "md-bot", {stream: ">"}, count=1),
                user.xautoclaim(stream, "spy", "md-bot", min_idle_time=0),
                user.xack(stream, "spy", "0-1"),
                user.xread({stream: "0"}, count=1),
                user.xrange(stream),
                user.get(keys.last("myOrder:KRW-BTC")),
                user.zrange(keys.stream_seen("myOrder"), 0, -1),
            ):
                with pytest.raises(NoPermissionError):
                    await attempt
            private_channel = user.pubsub()
            await private_channel.subscribe(keys.channel("myOrder:*"))
            with pytest.raises(NoPermissionError):  # the refusal is the subscribe's reply
                await private_channel.get_message(timeout=2)
            await private_channel.aclose()
        (info,) = await admin.xinfo_groups(stream)
        assert (info["consumers"], info["pending"]) == (0, 0)  # nothing was read as md
    finally:
        await user.aclose()
        await admin.aclose()
