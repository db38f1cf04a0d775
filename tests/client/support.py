"""Helpers for the client tests: sample payloads, a fast client, waiting on Redis state.

Everything runs against a real Redis (the ``real_redis_url`` fixture) over loopback; the
collector side is either simulated (the test publishes payloads itself, as the collector would,
through ``subscriptions.codec``) or the real :class:`collector.Collector` with the emulator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import RedisServer
from tests.helpers import SAMPLES, scaled, until
from upbit_fanout.client import FanoutClient
from upbit_fanout.subscriptions.codec import CodecName, encode_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.keys import Keys

FAST: dict[str, Any] = {
    "lease_seconds": 1.5,
    "health_check_interval": 0.5,
    "max_reconnect_delay": 0.3,
    "close_timeout": 3.0,
}


def sample_line(type_name: str, predicate: Callable[[bytes], bool] | None = None) -> bytes:
    """The first DEFAULT-format sample of a type (a JSON object with ``"type"``), as bytes."""
    path = SAMPLES / f"{'candle' if type_name.startswith('candle') else type_name}.jsonl"
    for raw in path.read_bytes().splitlines():
        line = raw.strip()
        if not line.startswith(b"{") or b'"type"' not in line:
            continue
        if predicate is None or predicate(line):
            return line
    raise LookupError(f"no DEFAULT {type_name} sample matching the predicate in {path}")


def payload(line: bytes, codec: CodecName) -> bytes:
    """The payload the collector would publish for ``line`` with ``codec``."""
    if codec == "json":
        return line
    return encode_event(loads_exact(line), codec)


def with_fields(line: bytes, **fields: Any) -> bytes:
    """``line`` with some top-level fields replaced (numbers keep their text)."""
    obj = loads_exact(line)
    obj.update(fields)
    return encode_event(obj, "json")


def client(url: str, keys: Keys, **options: Any) -> FanoutClient:
    """A FanoutClient on the test's prefix with fast timings (``options`` override them)."""
    return FanoutClient(url, key_prefix=keys.prefix, **{**FAST, **options})


async def subscribers(redis: aioredis.Redis, channel: str) -> int:
    reply = await redis.pubsub_numsub(channel)
    return int(reply[0][1])


async def wait_subscribed(redis: aioredis.Redis, channel: str, count: int = 1) -> None:
    """Wait until ``channel`` has at least ``count`` subscribers (SUBSCRIBE is asynchronous)."""

    async def ready() -> bool:
        return await subscribers(redis, channel) >= count

    await until(ready, what=f"{count} subscriber(s) on {channel}")


def restart_same_port(server: RedisServer) -> None:
    """Stop ``server`` and start a NEW, empty redis-server on the same port (a Redis restart
    that lost every key and every connection)."""
    server.stop()
    server.start()


class Collected:
    """Items appended by callbacks, with an event to wait on the next one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_count(self, count: int, within: float = 5.0) -> None:
        async with asyncio.timeout(scaled(within)):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()


def notice(event: str, **fields: Any) -> bytes:
    return json.dumps({"event": event, "at": 1_700_000_000_000, **fields}).encode()
