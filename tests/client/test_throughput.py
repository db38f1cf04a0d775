"""A burst published as fast as Redis takes it reaches one consumer complete, in order.

A subprocess publishes ticker payloads as fast as it can; the test iterates ``async for`` and
counts: every event arrives, none is dropped, no gap is reported. How fast the client is gets
measured by bench/latency_fanout.py, not asserted here (speed belongs in benchmarks).
"""

from __future__ import annotations

import asyncio
import sys

import pytest
import redis.asyncio as aioredis

from tests.client.support import client, sample_line, wait_subscribed
from upbit_fanout.client import Event
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.slow]

COUNT = 30_000
PUBLISHER = """
import sys, redis
url, channel, count, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
r = redis.Redis.from_url(url)
pipe = r.pipeline(transaction=False)
for n in range(count):
    pipe.publish(channel, payload)
    if n % 1000 == 999:
        pipe.execute()
pipe.execute()
r.close()
"""


async def test_a_fast_burst_reaches_one_consumer_complete(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    topic = "ticker:KRW-BTC"
    async with client(real_redis_url, keys) as c:
        await c.subscribe(topic)
        await wait_subscribed(r, keys.channel(topic))
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PUBLISHER,
            real_redis_url,
            keys.channel(topic),
            str(COUNT),
            sample_line("ticker").decode(),
        )
        received = 0
        try:
            async with asyncio.timeout(30):
                async for item in c:
                    assert isinstance(item, Event)  # no Gap: nothing was lost
                    assert item.topic == topic
                    received += 1
                    if received == COUNT:
                        break
        finally:
            await publisher.wait()
    assert c.dropped == 0
    assert c.reconnects == 0
