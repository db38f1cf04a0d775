"""P:status proves the collector alive even when nothing changes (a quiet, idle collector)."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from upbit_fanout.collector.status import Status
from upbit_fanout.subscriptions import Keys


async def _updated_at(redis: aioredis.Redis, keys: Keys) -> int:
    value = await redis.hget(keys.status, "updated_at")
    return int(value) if value is not None else 0


async def test_an_unchanged_status_is_rewritten_every_heartbeat(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    status = Status(redis_client, keys, collector_id="c1", version="t", heartbeat_interval=0.3)
    writer = asyncio.create_task(status.run())
    try:
        stamps: list[int] = []
        async with asyncio.timeout(5):
            while len(stamps) < 3:  # the first write, then two heartbeats with nothing changed
                stamp = await _updated_at(redis_client, keys)
                if stamp and (not stamps or stamp > stamps[-1]):
                    stamps.append(stamp)
                await asyncio.sleep(0.05)
        assert stamps[2] - stamps[1] >= 250  # about one heartbeat apart, not one a loop turn
        assert await redis_client.hget(keys.status, "state") == b"starting"
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
