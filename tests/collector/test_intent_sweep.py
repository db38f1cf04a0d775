"""Intent tracking at scale: chunked sweeps that let events through, light passes, per-client
changes. Real Redis (multi-key Lua), the emulator for the delivery test."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import running_collector
from tests.helpers import scaled, until
from upbit_fanout.collector.intents import IntentTracker
from upbit_fanout.collector.status import RedisHealth, Status
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=1, rate=1000)]


async def _write_clients(r: aioredis.Redis, keys: Keys, count: int, topic: str) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for index in range(count):
            pipe.sadd(keys.intents(f"c{index}"), topic)
            pipe.pexpire(keys.intents(f"c{index}"), 60_000)
        await pipe.execute()


@pytest.mark.slow
async def test_events_keep_being_published_while_thousands_of_keys_are_swept(
    real_redis_url: str,
    keys: Keys,
    emu: Emulator,
    r: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _write_clients(r, keys, 6000, "ticker:KRW-BTC")
    async with running_collector(real_redis_url, keys, emu.public_url, sweep_interval=60) as c:
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=30)
        await until(lambda: c.publisher.events_published > 0, within=10)
        tracker = c.tracker
        published_at_chunk: list[int] = []
        read = tracker._read

        async def observed(intent_keys: list[bytes]) -> object:
            published_at_chunk.append(c.publisher.events_published)
            return await read(intent_keys)

        monkeypatch.setattr(tracker, "_read", observed)
        changed = await tracker.sweep()
        assert not changed  # nothing changed: the view is the same 6000 clients
        assert len(tracker.intents) == 6000
        assert len(published_at_chunk) >= 30  # 200 keys per Lua call
        # The loop ran the publisher between the sweep's chunks: events kept reaching Redis.
        assert published_at_chunk[-1] > published_at_chunk[0]
        assert c.union == {"ticker:KRW-BTC"}


def _tracker(r: aioredis.Redis, keys: Keys, now: list[float]) -> IntentTracker:
    health = RedisHealth(Status(r, keys, collector_id="test", version="0"))
    return IntentTracker(r, keys, health=health, on_change=lambda: None, clock=lambda: now[0])


async def test_light_passes_check_only_run_out_leases_and_changes_are_per_client(
    keys: Keys, r: aioredis.Redis
) -> None:
    now = [100.0]
    tracker = _tracker(r, keys, now)
    await _write_clients(r, keys, 300, "ticker:KRW-BTC")  # 60 s leases
    assert await tracker.sweep()
    assert tracker.take_changes() is None  # the first view: everything is new
    assert len(tracker.intents) == 300

    # Within the leases the tracker noted, a light pass asks Redis nothing about the 300 keys
    # (no notification is listened to here, so this DEL goes unseen for now).
    await r.delete(keys.intents("c7"))
    assert not await tracker.light_sweep()
    assert tracker.lease_checks == 0
    assert "c7" in tracker.intents

    # Once they ran out by the tracker's clock, each key is asked its PTTL once: the gone one
    # is dropped, the others (renewed, as far as the tracker knows) get their new deadline.
    now[0] += 61
    assert await tracker.light_sweep()
    assert tracker.lease_checks == 300
    assert "c7" not in tracker.intents
    assert len(tracker.intents) == 299
    assert tracker.take_changes() == {"c7"}
    assert not await tracker.light_sweep()
    assert tracker.lease_checks == 300  # the new deadlines lie ahead

    # Keys made or changed without a notification wait for the full sweep (the safety net).
    await r.sadd(keys.intents("late"), "trade:KRW-ETH")
    await r.pexpire(keys.intents("late"), 60_000)
    await r.sadd(keys.intents("c1"), "trade:KRW-BTC")
    assert not await tracker.light_sweep()
    assert "late" not in tracker.intents
    assert await tracker.sweep()
    assert tracker.intents["late"] == {"trade:KRW-ETH"}
    assert tracker.intents["c1"] == {"ticker:KRW-BTC", "trade:KRW-BTC"}
    assert tracker.take_changes() == {"late", "c1"}
    assert tracker.full_sweeps == 2


async def test_a_lease_that_really_ran_out_is_dropped_by_the_next_light_pass(
    keys: Keys, r: aioredis.Redis
) -> None:
    health = RedisHealth(Status(r, keys, collector_id="test", version="0"))
    tracker = IntentTracker(r, keys, health=health, on_change=lambda: None)  # the real clock
    await r.sadd(keys.intents("brief"), "ticker:KRW-BTC")
    await r.pexpire(keys.intents("brief"), 300)
    await r.sadd(keys.intents("steady"), "ticker:KRW-ETH")
    await r.pexpire(keys.intents("steady"), 60_000)
    await tracker.sweep()
    assert set(tracker.intents) == {"brief", "steady"}
    await until(lambda: not tracker._due or tracker._due[0][0] <= time.monotonic(), within=5)
    assert await tracker.light_sweep()  # its PTTL made Redis delete it, whatever active expiry did
    assert set(tracker.intents) == {"steady"}
    assert tracker.lease_checks == 1


async def test_a_key_without_a_lease_is_refused_after_the_grace_by_a_light_pass(
    keys: Keys, r: aioredis.Redis
) -> None:
    now = [100.0]
    tracker = _tracker(r, keys, now)
    await r.sadd(keys.intents("shell"), "ticker:KRW-BTC")  # SADD from a shell, no EXPIRE yet
    await tracker.sweep()
    assert tracker.intents == {"shell": frozenset({"ticker:KRW-BTC"})}
    now[0] += tracker.limits.lease_grace + 1
    assert await tracker.light_sweep()
    assert "shell" not in tracker.intents
    assert "no TTL" in tracker.refused_keys["shell"].reason
    await r.expire(keys.intents("shell"), 30)  # an 'expire' event: ignored by the tracker
    assert await tracker.light_sweep()  # ... but unleased keys are re-read by every pass
    assert tracker.intents == {"shell": frozenset({"ticker:KRW-BTC"})}
    assert tracker.refused_keys == {}


async def test_a_refresh_of_one_client_touches_only_that_client(
    keys: Keys, r: aioredis.Redis
) -> None:
    now = [100.0]
    tracker = _tracker(r, keys, now)
    await _write_clients(r, keys, 50, "ticker:KRW-BTC")
    await tracker.sweep()
    tracker.take_changes()
    before = dict(tracker.intents)
    await r.sadd(keys.intents("c3"), "trade:KRW-BTC")
    assert await tracker.refresh(["c3"])
    assert tracker.take_changes() == {"c3"}
    assert {k: v for k, v in tracker.intents.items() if k != "c3"} == {
        k: v for k, v in before.items() if k != "c3"
    }
    assert not await tracker.refresh(["c4"])  # re-read, unchanged: no change reported
    assert tracker.take_changes() == set()


@pytest.mark.slow
async def test_a_new_intent_is_served_between_the_chunks_of_a_long_pass(
    real_redis_url: str,
    keys: Keys,
    emu: Emulator,
    r: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass over thousands of keys takes a while (here 15 chunks made 0.1 s slower each); an
    intent announced meanwhile is read between two chunks, not after the whole pass."""
    await _write_clients(r, keys, 3000, "ticker:KRW-BTC")
    async with running_collector(real_redis_url, keys, emu.public_url, sweep_interval=0.2) as c:
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=30)
        tracker = c.tracker
        tracker.full_sweep_every = 1  # every pass is a full one
        read = tracker._read
        chunk_started = asyncio.Event()

        async def slow(intent_keys: list[bytes]) -> dict[bytes, object]:
            if len(intent_keys) > 1:  # a pass's chunk; one client's refresh reads one key
                chunk_started.set()
                await asyncio.sleep(0.1)
            return await read(intent_keys)  # type: ignore[return-value]

        monkeypatch.setattr(tracker, "_read", slow)
        chunk_started.clear()
        await chunk_started.wait()  # a pass has begun: 1.5 s of it lie ahead
        started = time.monotonic()
        await r.sadd(keys.intents("late"), "trade:KRW-ETH")
        await r.pexpire(keys.intents("late"), 60_000)
        await c.wait_subscribed(lambda union: "trade:KRW-ETH" in union, timeout=5)
        assert time.monotonic() - started < scaled(0.8)
