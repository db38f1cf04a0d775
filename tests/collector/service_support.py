"""Helpers for the collector service tests: a running collector, subprocess clients, listeners.

Everything real: the Redis of the ``real_redis_url`` fixture, the emulator over loopback, client
processes that write their intents with plain Redis commands (SADD + EXPIRE, as redis-cli would).
Timings are short (sweep 0.3 s, backoff <= 0.3 s) so every test takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from tests.helpers import ClientProcess, scaled, text_map, texts, until
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.keys import Keys

FAST: dict[str, Any] = {
    "sweep_interval": 0.3,
    "ping_interval": 1.0,
    "ping_timeout": 1.0,
    "backoff_initial": 0.05,
    "backoff_max": 0.3,
    "coalesce": 0.02,
}

# A client process: writes its intent as redis-cli would (SADD + EXPIRE, whole seconds), says
# "beat" after each heartbeat, and heartbeats every third of its lease until killed.
CLIENT_SCRIPT = """
import sys, time, redis
url, key, lease, *topics = sys.argv[1:]
r = redis.Redis.from_url(url)
while True:
    r.execute_command("SADD", key, *topics)
    r.execute_command("EXPIRE", key, lease)
    print("beat", flush=True)
    time.sleep(int(lease) / 3)
"""


@contextlib.asynccontextmanager
async def running_collector(
    redis_url: str, keys: Keys, upstream_url: str, **options: Any
) -> AsyncIterator[Collector]:
    """A started collector with fast test timings (``options`` override them)."""
    redis = aioredis.Redis.from_url(redis_url)
    settings = {**FAST, **options}
    try:
        async with Collector(
            redis=redis, key_prefix=keys.prefix, upstream_url=upstream_url, **settings
        ) as c:
            yield c
    finally:
        await redis.aclose()


async def start_client(
    redis_url: str, keys: Keys, client_id: str, topics: Iterable[str], lease: int = 2
) -> ClientProcess:
    """A heartbeating intent writer (CLIENT_SCRIPT) in its own process, after its first beat."""
    return await ClientProcess.start(
        CLIENT_SCRIPT,
        redis_url,
        keys.intents(client_id),
        str(lease),
        *topics,
        ready="beat",
        within=10,
    )


@contextlib.asynccontextmanager
async def client_processes(
    redis_url: str, keys: Keys, intents: dict[str, list[str]], lease: int = 2
) -> AsyncIterator[dict[str, ClientProcess]]:
    procs: dict[str, ClientProcess] = {}
    try:
        started = await asyncio.gather(
            *(start_client(redis_url, keys, cid, topics, lease) for cid, topics in intents.items())
        )
        procs = dict(zip(intents, started, strict=True))
        yield procs
    finally:
        for proc in procs.values():
            await proc.stop(kill=True)


class Listener:
    """Subscribes to some Redis channels and keeps every message (decoded) per channel."""

    def __init__(self, redis_url: str, channels: Iterable[str]) -> None:
        self._redis = aioredis.Redis.from_url(redis_url)
        self._pubsub = self._redis.pubsub()
        self._channels = list(channels)
        self.messages: dict[str, list[bytes]] = {ch: [] for ch in self._channels}
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self.reconnects = 0

    async def __aenter__(self) -> Listener:
        await self._pubsub.subscribe(*self._channels)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            # Cancel until it stops: redis-py may swallow one cancellation on Python 3.11.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task], timeout=0.1)
        await self._pubsub.aclose()
        await self._redis.aclose()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
                except redis.ConnectionError:
                    # Another test process sharing this Redis ran CLIENT KILL TYPE pubsub: the
                    # next read reconnects and subscribes again.
                    self.reconnects += 1
                    await asyncio.sleep(0.01)
                    continue
                if message is not None:
                    channel = message["channel"].decode()
                    self.messages.setdefault(channel, []).append(message["data"])
                    self._arrived.set()
        finally:
            self._arrived.set()  # wake wait(), which then reports how the listener died

    def events(self, channel: str) -> list[Any]:
        return [decode_event(payload) for payload in self.messages.get(channel, [])]

    def notices(self, channel: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.messages.get(channel, [])]

    async def wait(self, predicate: Callable[[], object], within: float = 5.0) -> None:
        async with asyncio.timeout(scaled(within)):
            while not predicate():
                if self._task is not None and self._task.done():
                    self._task.result()  # raises what killed the listener
                    raise AssertionError("the listener stopped")
                self._arrived.clear()
                await self._arrived.wait()


def sent_messages(emu: Emulator) -> list[list[dict[str, Any]]]:
    """Every subscribe message the emulator received (parsed JSON), oldest first (no PING, no
    LIST_SUBSCRIPTIONS request: see :func:`list_requests`)."""
    out = []
    for record in emu.received:
        raw = record.raw.decode() if isinstance(record.raw, bytes) else record.raw
        if raw.strip() == "PING":
            continue
        message = json.loads(raw)
        if not any("method" in item for item in message):
            out.append(message)
    return out


def list_requests(emu: Emulator) -> list[list[dict[str, Any]]]:
    """Every LIST_SUBSCRIPTIONS request the emulator received (parsed JSON), oldest first."""
    out = []
    for record in emu.received:
        raw = record.raw.decode() if isinstance(record.raw, bytes) else record.raw
        if '"LIST_SUBSCRIPTIONS"' in raw:
            out.append(json.loads(raw))
    return out


def topics_of(message: list[dict[str, Any]]) -> set[str]:
    """The type:code pairs a subscribe message asks for (orderbook codes as sent)."""
    found: set[str] = set()
    for item in message:
        if "type" in item:
            codes = item.get("codes")
            if codes is None:
                found.add(item["type"])
            for code in codes or ():
                found.add(f"{item['type']}:{code}")
    return found


async def union_of(redis: aioredis.Redis, keys: Keys) -> set[str]:
    return texts(await redis.smembers(keys.union))


async def status_of(redis: aioredis.Redis, keys: Keys) -> dict[str, str]:
    return text_map(await redis.hgetall(keys.status))


async def union_becomes(
    r: aioredis.Redis, keys: Keys, expected: set[str], within: float = 5.0
) -> None:
    """Wait until ``P:union`` holds ``expected`` (it is written just after each send)."""

    async def check() -> bool:
        return await union_of(r, keys) == expected

    try:
        await until(check, within)
    except AssertionError:
        assert await union_of(r, keys) == expected  # fail with the difference shown
        raise
