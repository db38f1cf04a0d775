"""Which backoff a failed handshake gets, against a real local HTTP server that refuses every
WebSocket upgrade with one status: ordinary failures (503) stay under ``backoff_fast_max``; rate
limiting (429) keeps backing off towards ``backoff_max``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import running_collector
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")


@contextlib.asynccontextmanager
async def refusing_server(status: str) -> AsyncIterator[tuple[str, list[float]]]:
    """A loopback server answering every request with ``status``; yields (ws URL, attempt times)."""
    attempts: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        with contextlib.suppress(OSError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/websocket/v1", attempts
    finally:
        server.close()
        await server.wait_closed()


async def _gaps(real_redis_url: str, keys: Keys, r: aioredis.Redis, status: str) -> list[float]:
    await r.sadd(keys.intents("bot"), "ticker:KRW-BTC")
    await r.expire(keys.intents("bot"), 60)
    async with (
        refusing_server(status) as (url, attempts),
        running_collector(
            real_redis_url,
            keys,
            url,
            backoff_initial=0.1,
            backoff_max=30.0,
            backoff_fast_max=0.5,
            rng=lambda: 0.999,  # the top of every jitter range: the cap shows
            validate_markets=False,  # the refusing server counts handshakes only
        ),  # fmt: skip
    ):
        async with asyncio.timeout(20):
            while len(attempts) < 7:  # noqa: ASYNC110 - the server's own record
                await asyncio.sleep(0.05)
    return [later - earlier for earlier, later in itertools.pairwise(attempts)]


async def test_503_retries_stay_under_the_fast_cap(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    gaps = await _gaps(real_redis_url, keys, r, "503 Service Unavailable")
    assert max(gaps) < 0.5 + 0.4, gaps  # 0.1, 0.2, 0.4, then 0.5 each (+ scheduling slack)


async def test_429_retries_back_off_beyond_the_fast_cap(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    gaps = await _gaps(real_redis_url, keys, r, "429 Too Many Requests")
    assert gaps[-1] > 2.0, gaps  # 0.1, 0.2, 0.4, 0.8, 1.6, 3.2: doubling, never capped at 0.5
