"""Redis goes away under a running client: restart, a killed connection, a silent network cut,
a refused login, a Redis that never comes back. The client must say so (a Gap, or an error),
repair its intents and subscriptions, and never hang silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from tests.client.support import (
    Collected,
    client,
    restart_same_port,
    sample_line,
    wait_subscribed,
    with_fields,
)
from tests.conftest import RedisServer
from tests.helpers import scaled, until
from upbit_fanout.client import Event, FanoutClient, Gap, RedisUnavailableError
from upbit_fanout.subscriptions.keys import Keys

TICKER = sample_line("ticker")
TOPIC = "ticker:KRW-BTC"


async def next_of(events: AsyncIterator[object], kind: type, within: float = 10.0) -> object:
    async with asyncio.timeout(within):
        async for item in events:
            if isinstance(item, kind):
                return item
    raise AssertionError("the event stream ended")


async def test_redis_restart_gap_intents_repaired_events_flow_again(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    gaps = Collected()
    async with client(server.url, keys, lease_seconds=3.0) as c:
        c.on_gap(gaps)
        await c.subscribe(TOPIC, "trade:KRW-BTC")
        events = c.events()
        key = keys.intents(c.client_id)

        await asyncio.to_thread(restart_same_port, server)  # a new, empty Redis on the port

        gap = await next_of(events, Gap)
        assert isinstance(gap, Gap)
        assert gap.kind == "gap"
        assert gap.topics == (TOPIC, "trade:KRW-BTC")
        assert 0 <= gap.duration < scaled(10)
        await gaps.wait_count(1)
        assert c.reconnects == 1
        admin = aioredis.Redis.from_url(server.url)
        try:
            # intents re-asserted on the new server (replace=True), with the lease as TTL
            assert await admin.smembers(key) == {TOPIC.encode(), b"trade:KRW-BTC"}
            assert 0 < await admin.pttl(key) <= 3000
            await wait_subscribed(admin, keys.channel(TOPIC))
            await admin.publish(keys.channel(TOPIC), with_fields(TICKER, timestamp=7))
            event = await next_of(events, Event)
            assert isinstance(event, Event)
            assert event.data["timestamp"] == 7
        finally:
            await admin.aclose()


async def test_killed_connection_refreshes_from_the_last_values(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    # A server of the test's own: CLIENT KILL TYPE pubsub must not hit anybody else's subscribers.
    server = redis_server_factory()
    r = aioredis.Redis.from_url(server.url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(r.aclose)
        c = await stack.enter_async_context(client(server.url, keys))
        await c.subscribe(TOPIC, "trade:KRW-ETH")
        await wait_subscribed(r, keys.channel(TOPIC))
        events = c.events()
        await r.set(keys.last(TOPIC), with_fields(TICKER, timestamp=42))
        # Redis drops the subscriber (as it does for a slow one, or on CLIENT KILL)
        killed = await r.client_kill_filter(_type="pubsub", skipme=True)
        assert killed >= 1
        gap = await next_of(events, Gap)
        refreshed = await next_of(events, Event)
        assert isinstance(gap, Gap)
        assert isinstance(refreshed, Event)
        assert refreshed.cached
        assert refreshed.topic == TOPIC
        assert refreshed.data["timestamp"] == 42
        await wait_subscribed(r, keys.channel(TOPIC))
        await r.publish(keys.channel(TOPIC), with_fields(TICKER, timestamp=43))
        live = await next_of(events, Event)
        assert isinstance(live, Event)
        assert not live.cached
        assert live.data["timestamp"] == 43


async def test_subscribing_while_the_client_reconnects_loses_nothing(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    r = aioredis.Redis.from_url(server.url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(r.aclose)
        c = await stack.enter_async_context(client(server.url, keys))
        await c.subscribe(TOPIC)
        await wait_subscribed(r, keys.channel(TOPIC))
        events = c.events()
        await r.client_kill_filter(_type="pubsub", skipme=True)
        await c.subscribe("trade:KRW-ETH")  # while the pub/sub link is down or reopening
        await next_of(events, Gap)
        await wait_subscribed(r, keys.channel("trade:KRW-ETH"))
        await r.publish(keys.channel("trade:KRW-ETH"), with_fields(TICKER, timestamp=9))
        event = await next_of(events, Event)
        assert isinstance(event, Event)
        assert (event.topic, event.data["timestamp"]) == ("trade:KRW-ETH", 9)


class FreezableProxy:
    """A TCP proxy to Redis that can stop forwarding without closing anything: a silent cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._generation = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    def freeze_existing(self) -> None:
        """Connections made so far stop forwarding, silently (no FIN, no RST); new ones work."""
        self._generation += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, self._generation))
            self._tasks.add(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gen: int) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if self._generation == gen:  # else frozen: swallow the bytes, never close
                    dst.write(data)
                    await dst.drain()


async def test_silent_network_cut_is_noticed_by_health_pings(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    port = int(real_redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    async with FreezableProxy(port) as proxy:
        # commands through the frozen proxy fail after socket_timeout (redis-py's default: 5 s)
        given = aioredis.Redis.from_url(proxy.url, socket_timeout=1.0)
        async with FanoutClient(given, key_prefix=keys.prefix, health_check_interval=0.3) as c:
            await c.subscribe(TOPIC)
            await wait_subscribed(r, keys.channel(TOPIC))
            events = c.events()
            proxy.freeze_existing()  # no FIN, no RST: only the pings can tell
            gap = await next_of(events, Gap, within=10)
            assert isinstance(gap, Gap)
            assert "PING" in gap.reason
            await until(lambda: _subscribed_twice(r, keys), what="resubscribed via a new link")
            await r.publish(keys.channel(TOPIC), with_fields(TICKER, timestamp=5))
            event = await next_of(events, Event)
            assert isinstance(event, Event)
            assert event.data["timestamp"] == 5
        await given.aclose()


async def _subscribed_twice(r: aioredis.Redis, keys: Keys) -> bool:
    # the frozen connection is still open on the Redis side, the new one subscribed too
    reply = await r.pubsub_numsub(keys.channel(TOPIC))
    return int(reply[0][1]) >= 2


async def test_refused_login_after_a_reconnect_raises_instead_of_hanging(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    try:
        async with client(server.url, keys) as c:
            await c.subscribe(TOPIC)
            events = c.events()
            await admin.config_set("requirepass", "changed-by-the-operator")
            await admin.client_kill_filter(_type="pubsub")
            with pytest.raises(RedisUnavailableError, match="refused") as info:
                await asyncio.wait_for(anext(events), 10)
            assert info.value.__cause__ is not None  # redis-py's error is kept as the cause
    finally:
        await admin.execute_command("AUTH", "changed-by-the-operator")
        await admin.config_set("requirepass", "")
        await admin.aclose()


async def test_gives_up_after_max_outage_and_says_so(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    async with client(server.url, keys, max_outage=1.0) as c:
        await c.subscribe(TOPIC)
        events = c.events()
        await asyncio.to_thread(server.stop)
        with pytest.raises(RedisUnavailableError, match="giving up"):
            await asyncio.wait_for(anext(events), 10)
        with pytest.raises(RedisUnavailableError):
            await c.subscribe("trade:KRW-BTC")
