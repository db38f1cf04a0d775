"""The lease contract against a real Redis (fakeredis only where none is reachable)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from upbit_fanout.subscriptions import Keys, heartbeat_commands, lease_ms, release_commands


async def _run(client: aioredis.Redis, commands: list[tuple[str | int, ...]]) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        await pipe.execute()


async def test_heartbeat_sets_members_and_ttl(redis_client: aioredis.Redis, keys: Keys) -> None:
    await _run(redis_client, heartbeat_commands(keys, "bot", ["ticker:KRW-BTC", "myAsset"], 5))
    key = keys.intents("bot")
    assert await redis_client.smembers(key) == {b"ticker:KRW-BTC", b"myAsset"}
    assert 4000 < await redis_client.pttl(key) <= 5000


async def test_heartbeat_repairs_a_lost_key(redis_client: aioredis.Redis, keys: Keys) -> None:
    commands = heartbeat_commands(keys, "bot", ["trade:KRW-ETH"], 5)
    await _run(redis_client, commands)
    await redis_client.delete(keys.intents("bot"))  # as if Redis restarted empty
    await _run(redis_client, commands)
    assert await redis_client.smembers(keys.intents("bot")) == {b"trade:KRW-ETH"}


async def test_replace_drops_topics_the_client_no_longer_holds(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    await _run(redis_client, heartbeat_commands(keys, "bot", ["a:X-Y", "ticker:KRW-BTC"], 5))
    await _run(redis_client, heartbeat_commands(keys, "bot", ["ticker:KRW-BTC"], 5, replace=True))
    assert await redis_client.smembers(keys.intents("bot")) == {b"ticker:KRW-BTC"}


async def test_no_topics_means_no_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    await _run(redis_client, heartbeat_commands(keys, "bot", ["ticker:KRW-BTC"], 5))
    await _run(redis_client, heartbeat_commands(keys, "bot", [], 5))
    assert not await redis_client.exists(keys.intents("bot"))


async def test_release_deletes_and_notifies(redis_client: aioredis.Redis, keys: Keys) -> None:
    await _run(redis_client, heartbeat_commands(keys, "bot", ["ticker:KRW-BTC"], 5))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.control)
    try:
        await pubsub.get_message(timeout=1)  # subscribe confirmation
        await _run(redis_client, release_commands(keys, "bot"))
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None
        assert message["data"] == b"bot"
    finally:
        await pubsub.aclose()
    assert not await redis_client.exists(keys.intents("bot"))


@pytest.mark.parametrize("seconds", [0, 0.5, float("nan"), -3])
def test_leases_under_a_second_are_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="lease"):
        lease_ms(seconds)
