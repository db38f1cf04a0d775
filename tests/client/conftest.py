"""Fixtures of the client tests (real Redis only: the client drives pub/sub connections by hand)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from subscriptions.keys import Keys


@pytest.fixture
async def r(real_redis_url: str, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    """A plain asyncio Redis for the test's own reads and writes; the prefix is wiped after."""
    redis = aioredis.Redis.from_url(real_redis_url)
    try:
        yield redis
    finally:
        async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
