"""The Redis publisher against a real Redis: channels, last values, streams, one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from tests.conftest import RedisServer
from tests.helpers import stream_entries
from upbit_fanout.collector.publisher import Publisher, PublishMode
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import LeaseLost

MODES: list[PublishMode] = ["lua", "pipeline"]


class CountingConnection(Connection):
    """A real connection that counts its writes: one write per round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def client(real_redis_url: str, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    pool = aioredis.ConnectionPool.from_url(real_redis_url, connection_class=CountingConnection)
    redis = aioredis.Redis(connection_pool=pool)
    try:
        yield redis
    finally:
        try:
            async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
                await redis.delete(key)
        finally:
            await redis.aclose()
            await pool.aclose()


async def _listen(
    redis: aioredis.Redis, channels: list[str], count: int
) -> tuple[aioredis.client.PubSub, asyncio.Task[list[tuple[str, bytes]]]]:
    pubsub = redis.pubsub()
    await pubsub.subscribe(*channels)
    for _ in channels:  # the subscribe confirmations: from here on nothing is missed
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        assert message["type"] == "subscribe"

    async def collect() -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        while len(got) < count:
            message = await pubsub.get_message(timeout=5)
            if message is None:
                continue
            got.append((message["channel"].decode(), message["data"]))
        return got

    return pubsub, asyncio.create_task(collect())


def _batch(n: int) -> list[Outgoing]:
    topics = ["ticker:KRW-BTC", "trade:KRW-ETH", "orderbook:KRW-BTC.5"]
    return [Outgoing(topics[i % 3], b'{"n":%d}' % i, topics[i % 3].split(":")[0]) for i in range(n)]


@pytest.mark.parametrize("mode", MODES)
async def test_subscribers_get_every_payload_in_order(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    batch = _batch(60)
    channels = sorted({keys.channel(item.topic) for item in batch})
    pubsub, received = await _listen(client, channels, len(batch))
    try:
        publisher = Publisher(client, keys, mode=mode)
        await publisher.publish(batch[:30])
        await publisher.publish(batch[30:])
        got = await asyncio.wait_for(received, 10)
    finally:
        await pubsub.aclose()
    assert got == [(keys.channel(item.topic), item.payload) for item in batch]
    assert publisher.events_published == 60
    assert publisher.batches == 2
    assert publisher.last_batch_size == 30


@pytest.mark.parametrize("mode", MODES)
async def test_last_value_keys_hold_the_last_payload_per_topic(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    publisher = Publisher(client, keys, mode=mode)
    await publisher.publish(_batch(10))  # payloads 0..9 over three topics
    assert await client.get(keys.last("ticker:KRW-BTC")) == b'{"n":9}'
    assert await client.get(keys.last("trade:KRW-ETH")) == b'{"n":7}'
    assert await client.get(keys.last("orderbook:KRW-BTC.5")) == b'{"n":8}'
    assert publisher.last_values == 3  # one SET per topic, not per event


@pytest.mark.parametrize("mode", MODES)
async def test_private_events_land_in_the_capped_stream_once(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    publisher = Publisher(client, keys, mode=mode, stream_maxlen=10)
    payload = bytes(range(256))  # any bytes survive (msgpack payloads are binary)
    await publisher.publish(
        [
            Outgoing("myOrder:KRW-BTC", payload, "myOrder", private=True),
            Outgoing("myOrder:*", payload, "myOrder", private=True, stream=False),
            Outgoing("myAsset", b'{"type":"myAsset"}', "myAsset", private=True),
            Outgoing("ticker:KRW-BTC", b"{}", "ticker"),
        ]
    )
    entries = stream_entries(await client.xrange(keys.stream("myOrder")))
    assert [fields for _, fields in entries] == [
        {b"payload": payload, b"topic": b"myOrder:KRW-BTC", b"source": b"ws"}
    ]
    assert await client.get(keys.last("myOrder:*")) == payload
    assert await client.xlen(keys.stream("myAsset")) == 1
    assert not await client.exists(keys.stream("ticker"))

    private = [Outgoing("myAsset", b'{"n":%d}' % i, "myAsset", private=True) for i in range(600)]
    await publisher.publish(private[:300])
    await publisher.publish(private[300:])
    # MAXLEN ~ trims whole stream nodes (100 entries by default): capped, not exact.
    assert await client.xlen(keys.stream("myAsset")) < 300
    last = stream_entries(await client.xrevrange(keys.stream("myAsset"), count=1))
    assert last[0][1][b"payload"] == b'{"n":599}'


@pytest.mark.parametrize("mode", MODES)
async def test_a_batch_is_one_round_trip(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    publisher = Publisher(client, keys, mode=mode)
    await publisher.publish(_batch(3))  # first use may load the Lua script
    private = [Outgoing("myAsset", b"{}", "myAsset", private=True) for _ in range(50)]
    before = CountingConnection.writes
    link = publisher._link  # lua: the lean link (collector/publink.py), which redis-py never sees
    calls = link.calls if link is not None else 0
    await publisher.publish(_batch(500) + private)
    if mode == "lua":
        assert link is not None
        assert publisher._link is link
        assert (link.calls - calls, CountingConnection.writes - before) == (1, 0)
    else:
        assert link is None
        assert CountingConnection.writes - before == 1
    assert await client.get(keys.last("myAsset")) == b"{}"


async def test_script_is_reloaded_after_redis_restarts(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()  # our own server: restarting it disturbs nobody
    redis = aioredis.Redis.from_url(server.url)
    try:
        publisher = Publisher(redis, keys)
        await publisher.publish(_batch(1))
        server.stop()
        server.start()  # a new server knows no scripts
        try:  # the pooled connection died with the server: this may fail, and says so
            await publisher.publish(_batch(1))
        except RedisError:
            assert publisher.failed_batches == 1
        await publisher.publish(_batch(2))
        assert await redis.get(keys.last("trade:KRW-ETH")) == b'{"n":1}'
    finally:
        await redis.aclose()


async def test_an_empty_batch_costs_nothing(client: aioredis.Redis, keys: Keys) -> None:
    publisher = Publisher(client, keys)
    before = CountingConnection.writes
    await publisher.publish([])
    assert CountingConnection.writes == before
    assert publisher.batches == 0


async def test_without_scripting_it_falls_back_to_pipelines(keys: Keys) -> None:
    redis = fakeredis.FakeAsyncRedis()  # no Lua here: EVALSHA is an unknown command
    try:
        publisher = Publisher(redis, keys)
        await publisher.publish(_batch(4))
        assert publisher.mode == "pipeline"
        assert await redis.get(keys.last("ticker:KRW-BTC")) == b'{"n":3}'
        await publisher.publish(_batch(1))
        assert publisher.batches == 2
        assert publisher.failed_batches == 0
    finally:
        await redis.aclose()


# -- fencing -------------------------------------------------------------------------------------
def _private_batch() -> list[Outgoing]:
    return [Outgoing("myAsset", b'{"type":"myAsset"}', "myAsset", private=True), *_batch(2)]


@pytest.mark.parametrize("mode", MODES)
async def test_a_fenced_batch_is_written_only_while_the_lease_holds_the_value(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    await client.set(keys.leader, "7 me", px=10_000)
    publisher = Publisher(client, keys, mode=mode)
    publisher.fence = (keys.leader.encode(), b"7 me")
    pubsub, received = await _listen(client, [keys.channel("myAsset")], 1)
    try:
        await publisher.publish(_private_batch())
        assert await received == [(keys.channel("myAsset"), b'{"type":"myAsset"}')]
        assert await client.xlen(keys.stream("myAsset")) == 1

        # Another collector took over (token 8): nothing of the next batch is written.
        await client.set(keys.leader, "8 other", px=10_000)
        await client.delete(keys.last("ticker:KRW-BTC"))
        await pubsub.subscribe(keys.channel("ticker:KRW-BTC"))
        await pubsub.get_message(timeout=5)  # the confirmation
        with pytest.raises(LeaseLost) as lost:
            await publisher.publish(_private_batch())
        assert lost.value.holder == b"8 other"
        assert await client.get(keys.last("ticker:KRW-BTC")) is None  # no SET
        assert await client.xlen(keys.stream("myAsset")) == 1  # no XADD
        assert await pubsub.get_message(timeout=0.3) is None  # no PUBLISH
        assert publisher.fenced_batches == 1

        # Same id, older token (a paused twin of the same name): refused too; nobody: refused.
        await client.set(keys.leader, "6 me", px=10_000)
        with pytest.raises(LeaseLost):
            await publisher.publish(_batch(1))
        await client.delete(keys.leader)
        with pytest.raises(LeaseLost) as lost:
            await publisher.publish(_batch(1))
        assert lost.value.holder is None
        assert await client.get(keys.last("ticker:KRW-BTC")) is None
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_a_stream_entry_with_a_known_identity_is_refused(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    publisher = Publisher(client, keys, mode=mode, seen_cap=3)

    def order(n: int, ident: str | None, source: str = "ws") -> Outgoing:
        return Outgoing(
            "myOrder:KRW-BTC",
            b'{"n":%d}' % n,
            "myOrder",
            private=True,
            identity=ident,
            source=source,
        )

    await publisher.publish([order(1, "a"), order(2, "b"), order(3, "a"), order(4, None)])
    await publisher.publish([order(5, "b", "rest"), order(6, "c", "rest"), order(7, None)])
    entries = stream_entries(await client.xrange(keys.stream("myOrder")))
    assert [(f[b"payload"], f[b"source"]) for _, f in entries] == [
        (b'{"n":1}', b"ws"),
        (b'{"n":2}', b"ws"),
        (b'{"n":4}', b"ws"),
        (b'{"n":6}', b"rest"),
        (b'{"n":7}', b"ws"),
    ]
    assert publisher.stream_entries == 5
    assert publisher.stream_duplicates == 2
    seen = keys.stream_seen("myOrder")
    assert set(await client.zrange(seen, 0, -1)) == {b"a", b"b", b"c"}
    assert 0 < await client.pttl(seen) <= 7 * 24 * 3600 * 1000
    await publisher.publish([order(8, "d")])  # over the cap: the oldest identity goes
    assert await client.zcard(seen) == 3
    assert await client.zscore(seen, "a") is None


@pytest.mark.parametrize("mode", MODES)
async def test_a_quiet_item_goes_to_the_stream_only(
    client: aioredis.Redis, keys: Keys, mode: PublishMode
) -> None:
    publisher = Publisher(client, keys, mode=mode)
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.channel("myOrder:KRW-BTC"))
    await pubsub.get_message(timeout=1)
    item = Outgoing("myOrder:KRW-BTC", b'{"q":1}', "myOrder", private=True, publish=False)
    await publisher.publish([item])
    assert await client.xlen(keys.stream("myOrder")) == 1
    assert not await client.exists(keys.last("myOrder:KRW-BTC"))
    assert await pubsub.get_message(timeout=0.3) is None
    await pubsub.aclose()
