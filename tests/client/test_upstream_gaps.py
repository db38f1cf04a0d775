"""Gaps are visible by default: when the collector's upstream connection drops (the emulator's
``drop`` fault), a client made with default settings yields a :class:`Gap` with the collector's
reason and the time window, followed by the last values; ``upstream_gaps=False`` turns it off.

Real parts: Redis, the Collector, the emulator over loopback.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis.asyncio as aioredis

from tests.client.support import client
from tests.collector.service_support import running_collector
from upbit_fanout.client import BlockingClient, Event, FanoutClient, Gap, Item
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

TOPIC = "ticker:KRW-BTC"


pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=11, rate=300)]


async def first_event(c: FanoutClient, collector: Collector) -> None:
    await collector.wait_subscribed(lambda union: TOPIC in union, timeout=15)
    async with asyncio.timeout(15):
        async for item in c.events():
            if isinstance(item, Event):
                return


async def items_until_gap(c: FanoutClient, within: float = 15) -> tuple[Gap, list[Item]]:
    after: list[Item] = []
    gap: Gap | None = None
    async with asyncio.timeout(within):
        async for item in c.events():
            if gap is None:
                if isinstance(item, Gap):
                    gap = item
                continue
            after.append(item)
            if isinstance(item, Event) and not item.cached:
                return gap, after
    raise AssertionError("unreachable")  # pragma: no cover


async def test_an_upstream_drop_reaches_a_default_client_as_a_gap(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    async with (
        running_collector(real_redis_url, keys, emu.public_url) as collector,
        client(real_redis_url, keys) as c,
    ):
        await c.subscribe(TOPIC)
        await first_event(c, collector)
        dropped_at = time.time()
        assert await emu.drop_all() >= 1
        gap, after = await items_until_gap(c)
        assert gap.source == "collector"
        assert gap.connection == "public"
        assert "reconnected to Upbit" in gap.reason
        assert gap.topics == (TOPIC,)
        # The window: from the disconnect the collector saw to its resubscription.
        assert dropped_at - 1 <= gap.started_at <= gap.ended_at <= time.time()
        assert gap.ended_at > gap.started_at
        # Then the last value of the topic, as after a Redis outage, then live events.
        assert isinstance(after[0], Event)
        assert after[0].cached
        assert after[0].topic == TOPIC
        assert c.upstream_gaps == 1


async def test_upstream_gaps_can_be_turned_off(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    async with (
        running_collector(real_redis_url, keys, emu.public_url) as collector,
        client(real_redis_url, keys, upstream_gaps=False, notices=True) as c,
    ):
        await c.subscribe(TOPIC)
        await first_event(c, collector)
        await emu.drop_all()
        # The gap notice still arrives as a Notice (notices=True), but no Gap is made of it.
        async with asyncio.timeout(15):
            async for item in c.events():
                assert not isinstance(item, Gap)
                if item.kind == "notice" and item.event == "gap":
                    break
        assert c.upstream_gaps == 0


async def test_blocking_client_yields_the_gap_too(
    real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    async with running_collector(real_redis_url, keys, emu.public_url) as collector:
        found: list[Gap] = []
        subscribed = threading.Event()

        def consume() -> None:
            with BlockingClient(real_redis_url, key_prefix=keys.prefix) as bc:
                bc.subscribe(TOPIC)
                subscribed.set()
                for item in bc.events(timeout=20):
                    if isinstance(item, Gap):
                        found.append(item)
                        return

        worker = asyncio.create_task(asyncio.to_thread(consume))
        await asyncio.to_thread(subscribed.wait, 15)
        await collector.wait_subscribed(lambda union: TOPIC in union, timeout=15)
        await emu.drop_all()
        await asyncio.wait_for(worker, 30)
        assert len(found) == 1
        assert found[0].source == "collector"
        assert found[0].reason.startswith("collector: reconnected to Upbit")
