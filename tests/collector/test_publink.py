"""collector.publink: the publisher's lean link, against real redis-servers of the tests' own.

What a user would notice if it broke: a reply handed to the wrong call, an error reply that
passes for a result, a dead or frozen Redis that hangs the publisher or is not reported as the
Redis failure the collector retries, a demoted primary that keeps taking (and losing) writes,
connections that pile up on the server with every failure, or a collector that stops publishing
after Redis came back.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.client.test_fast_link import tls_redis, unix_redis  # noqa: F401 - fixtures
from tests.conftest import RedisServer
from tests.helpers import until
from upbit_fanout.collector.publink import PublishLink, open_link
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.subscriptions.keys import Keys


@pytest.fixture
async def server(redis_server_factory: Callable[[], RedisServer]) -> AsyncIterator[RedisServer]:
    server = redis_server_factory()
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)  # a test that froze it must not hang the stop


def _client(server: RedisServer, **options: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(server.url, **options)


async def _clients_connected(server: RedisServer) -> int:
    probe = _client(server)
    try:
        return len(await probe.client_list()) - 1  # not counting the probe itself
    finally:
        await probe.aclose()


def _is_closed(link: PublishLink) -> bool:
    return link.closed


def _batch(count: int, topic: str = "trade:KRW-BTC") -> list[Outgoing]:
    return [Outgoing(topic, b'{"n":%d}' % number, "trade") for number in range(count)]


async def test_concurrent_calls_get_their_own_replies_in_order(server: RedisServer) -> None:
    redis = _client(server)
    link = await open_link(redis)
    try:
        replies = await asyncio.gather(*(link.execute("ECHO", f"m{n}") for n in range(200)))
        assert replies == [f"m{n}".encode() for n in range(200)]
        assert await link.execute("SET", "k", "v") == b"OK"
        assert await link.execute("GET", "k") == b"v"
    finally:
        await link.aclose()
        await redis.aclose()


async def test_error_replies_are_raised_as_redis_py_raises_them(server: RedisServer) -> None:
    redis = _client(server)
    link = await open_link(redis)
    try:
        with pytest.raises(NoScriptError):
            await link.execute("EVALSHA", "0" * 40, 0)
        await link.execute("RPUSH", "a-list", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await link.execute("GET", "a-list")
        assert not link.closed  # an error reply is a reply: the link goes on
        assert await link.execute("ECHO", "after") == b"after"
    finally:
        await link.aclose()
        await redis.aclose()


async def test_a_killed_redis_fails_the_call_and_the_publisher_recovers_after_restart(
    server: RedisServer, keys: Keys
) -> None:
    redis = _client(server, socket_timeout=5, socket_connect_timeout=2)
    publisher = Publisher(redis, keys)
    try:
        await publisher.publish(_batch(3))
        assert publisher.lean
        link = publisher._link
        assert link is not None
        server.kill()
        with pytest.raises(RedisConnectionError):
            await publisher.publish(_batch(1))
        assert link.closed
        server.start()  # an empty Redis: the script must be loaded again (NOSCRIPT)
        await publisher.publish(_batch(2))
        assert publisher._link is not link
        assert await redis.get(keys.last("trade:KRW-BTC")) == b'{"n":1}'
    finally:
        await publisher.aclose()
        await redis.aclose()


async def test_a_frozen_redis_is_a_timeout_and_the_link_is_replaced(
    server: RedisServer, keys: Keys
) -> None:
    redis = _client(server, socket_timeout=0.5, socket_connect_timeout=2)
    publisher = Publisher(redis, keys)
    assert server.process is not None
    try:
        await publisher.publish(_batch(1))
        link = publisher._link
        assert link is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(5):  # never hangs: socket_timeout bounds the wait
                with pytest.raises(RedisTimeoutError):
                    await publisher.publish(_batch(1))
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert link.closed
        await publisher.publish(_batch(4))
        assert publisher._link is not link
        assert await redis.get(keys.last("trade:KRW-BTC")) == b'{"n":3}'
    finally:
        await publisher.aclose()
        await redis.aclose()


async def test_the_pools_disconnect_closes_the_link_and_nothing_piles_up(
    server: RedisServer, keys: Keys
) -> None:
    """``follow_primary`` drops every connection of the pool after a failover; each time the
    publisher opens one new connection and gives the old one back (a pool of three would run
    out otherwise), and the old ones are gone from the server."""
    redis = _client(server, max_connections=3)
    publisher = Publisher(redis, keys)
    try:
        await publisher.publish(_batch(1))
        for _ in range(5):
            link = publisher._link
            assert link is not None
            await redis.connection_pool.disconnect(inuse_connections=True)
            await until(partial(_is_closed, link), within=5, what="the link saw its socket go")
            with pytest.raises(RedisConnectionError):
                await link.execute("PING")
            await publisher.publish(_batch(2))
        assert await _clients_connected(server) <= 2  # the link and redis-py's own connection
    finally:
        await publisher.aclose()
        await redis.aclose()


async def test_a_demoted_primary_closes_the_link_as_a_lost_connection(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    primary, replica = redis_server_factory(), redis_server_factory()
    redis = _client(replica)
    await redis.replicaof("127.0.0.1", primary.port)
    link = await open_link(redis)
    try:
        with pytest.raises(RedisConnectionError, match="replica"):
            await link.execute("SET", "k", "v")
        assert link.closed
    finally:
        await link.aclose()
        await redis.replicaof("NO", "ONE")
        await redis.aclose()


async def test_a_connection_that_cannot_be_taken_over_publishes_through_redis_py(
    keys: Keys,
) -> None:
    redis = fakeredis.FakeAsyncRedis()
    publisher = Publisher(redis, keys)
    try:
        async with redis.pubsub() as pubsub:
            await pubsub.subscribe(keys.channel("trade:KRW-BTC"))
            await publisher.publish(_batch(2))
            assert not publisher.lean
            await publisher.publish(_batch(1))
            got: list[bytes] = []
            while len(got) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    got.append(message["data"])
            assert got == [b'{"n":0}', b'{"n":1}', b'{"n":0}']
    finally:
        await publisher.aclose()
        await redis.aclose()


async def _publishes_over_the_link(url: str, keys: Keys) -> None:
    """A batch with a payload larger than any socket read goes over the link, whole and in order,
    and a subscriber of the same Redis receives it."""
    redis = aioredis.Redis.from_url(url)
    publisher = Publisher(redis, keys)
    big = b'{"blob":"' + b"z" * 300_000 + b'"}'
    try:
        async with redis.pubsub() as pubsub:
            await pubsub.subscribe(keys.channel("trade:KRW-BTC"))
            await pubsub.get_message(timeout=1)  # the subscribe confirmation
            batch = [*_batch(2), Outgoing("trade:KRW-BTC", big, "trade"), *_batch(1)]
            await publisher.publish(batch)
            assert publisher.lean
            assert publisher._link is not None
            got: list[bytes] = []
            async with asyncio.timeout(10):
                while len(got) < 4:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        got.append(message["data"])
            assert got == [item.payload for item in batch]
            assert await redis.get(keys.last("trade:KRW-BTC")) == b'{"n":0}'
    finally:
        await publisher.aclose()
        await redis.aclose()


async def test_the_link_over_tls(tls_redis: tuple[str, str], keys: Keys) -> None:  # noqa: F811
    await _publishes_over_the_link(tls_redis[0], keys)


async def test_the_link_over_a_unix_socket(unix_redis: str, keys: Keys) -> None:  # noqa: F811
    await _publishes_over_the_link(unix_redis, keys)


def test_the_link_on_uvloop(server: RedisServer, keys: Keys) -> None:
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_publishes_over_the_link(server.url, keys))
