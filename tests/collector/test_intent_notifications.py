"""Intent changes reach the tracker by keyevent notifications, and heartbeats do not.

The tracker runs with a sweep interval of ten minutes, so once its first sweep is done only a
notification can explain that it noticed a change (and :attr:`IntentTracker.sweeps` says no
other pass ran). :attr:`IntentTracker.notified` counts the notifications about intent keys that
reached it: a heartbeat (SADD of the same topics + PEXPIRE) must add none. Real Redis, and the
session's Redis Cluster (notifications are node-local: every primary is subscribed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from tests.deployments import ClusterDeployment
from tests.helpers import until
from upbit_fanout.collector.intents import DEFAULT_LIMITS, IntentTracker, Limits
from upbit_fanout.collector.status import RedisHealth, Status
from upbit_fanout.subscriptions.connection import open_redis
from upbit_fanout.subscriptions.keys import Keys

BTC, ETH = "ticker:KRW-BTC", "ticker:KRW-ETH"
WITHIN = 10.0  # generous: the machine may be loaded; a notification takes milliseconds


@contextlib.asynccontextmanager
async def running_tracker(
    r: aioredis.Redis, keys: Keys, limits: Limits = DEFAULT_LIMITS
) -> AsyncIterator[IntentTracker]:
    health = RedisHealth(Status(r, keys, collector_id="test", version="0"))
    tracker = IntentTracker(
        r, keys, health=health, on_change=lambda: None, sweep_interval=600, limits=limits
    )
    task = asyncio.create_task(tracker.run())
    try:
        await until(lambda: tracker.loaded, within=WITHIN)
        assert tracker.notifications
        yield tracker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def heartbeat(r: aioredis.Redis, keys: Keys, client_id: str, *topics: str) -> None:
    """What the client library writes every third of a lease (here one command at a time, so a
    Redis Cluster routes each)."""
    await r.sadd(keys.intents(client_id), *topics)
    await r.pexpire(keys.intents(client_id), 30_000)


async def check_notifications(r: aioredis.Redis, keys: Keys, *, rename: bool) -> IntentTracker:
    async with running_tracker(r, keys) as tracker:
        sweeps = tracker.sweeps

        # Added: SADD then PEXPIRE, no P:control message.
        await heartbeat(r, keys, "a", BTC)
        await until(lambda: tracker.intents.get("a") == frozenset({BTC}), within=WITHIN)

        # Heartbeats: the same SADD (adds nothing, so Redis sends no "sadd") and the PEXPIRE
        # ("expire", which nobody subscribed to). Then a marker change; notifications arrive
        # in order, so once the marker is seen every heartbeat's would have been too.
        before = tracker.notified
        for _ in range(20):
            await heartbeat(r, keys, "a", BTC)
        await r.persist(keys.intents("a"))  # left to the full sweep (the test below)
        await heartbeat(r, keys, "a", BTC)
        await heartbeat(r, keys, "marker", ETH)
        await until(lambda: "marker" in tracker.intents, within=WITHIN)
        assert tracker.notified == before + 1  # the marker's "sadd", nothing else

        # Removed: one topic of two, then the last one (Redis deletes the emptied key).
        await r.sadd(keys.intents("a"), ETH)
        await until(lambda: tracker.intents.get("a") == frozenset({BTC, ETH}), within=WITHIN)
        await r.srem(keys.intents("a"), BTC)
        await until(lambda: tracker.intents.get("a") == frozenset({ETH}), within=WITHIN)
        await r.srem(keys.intents("a"), ETH)
        await until(lambda: "a" not in tracker.intents, within=WITHIN)

        # Deleted.
        await r.delete(keys.intents("marker"))
        await until(lambda: "marker" not in tracker.intents, within=WITHIN)

        # Expired: a lease that runs out (Redis's active expiry deletes it within ~100 ms).
        await r.sadd(keys.intents("short"), BTC)
        await r.pexpire(keys.intents("short"), 200)
        await until(lambda: tracker.intents.get("short") == frozenset({BTC}), within=WITHIN)
        await until(lambda: "short" not in tracker.intents, within=WITHIN)

        if rename:  # RENAME needs both keys in one slot: not across a cluster's nodes
            await heartbeat(r, keys, "old", BTC)
            await until(lambda: "old" in tracker.intents, within=WITHIN)
            await r.rename(keys.intents("old"), keys.intents("new"))
            await until(
                lambda: (
                    "old" not in tracker.intents and tracker.intents.get("new") == frozenset({BTC})
                ),
                within=WITHIN,
            )

        assert tracker.sweeps == sweeps  # no pass over the keys explains any of it
        return tracker


@pytest.mark.usefixtures("real_redis_url")
async def test_changes_are_noticed_by_notifications_and_heartbeats_deliver_none(
    keys: Keys, r: aioredis.Redis
) -> None:
    await check_notifications(r, keys, rename=True)


@pytest.mark.slow
async def test_the_same_on_every_primary_of_a_redis_cluster(
    redis_cluster: ClusterDeployment, keys: Keys
) -> None:
    keys = keys.clustered()
    r = await open_redis(redis_cluster.node_url)
    try:
        await check_notifications(r, keys, rename=False)
    finally:
        async for key in r.scan_iter(match=f"{keys.prefix}*", count=1000):
            await r.delete(key)
        await r.aclose()


@pytest.mark.usefixtures("real_redis_url")
async def test_a_lease_made_permanent_is_found_by_the_full_sweep(
    keys: Keys, r: aioredis.Redis
) -> None:
    """PERSIST (or an EXPIRE above ``max_lease``) sends nothing the tracker listens to: the full
    sweep, every ``full_sweep_every`` passes, is what notices it; the grace then runs out."""
    now = [100.0]
    health = RedisHealth(Status(r, keys, collector_id="test", version="0"))
    tracker = IntentTracker(r, keys, health=health, on_change=lambda: None, clock=lambda: now[0])
    await heartbeat(r, keys, "a", BTC)
    await heartbeat(r, keys, "b", ETH)
    await tracker.sweep()
    await r.persist(keys.intents("a"))
    await r.expire(keys.intents("b"), 86_400)
    now[0] += tracker.limits.lease_grace + 1
    assert not await tracker.light_sweep()  # a leased key is not re-read by a light pass
    assert set(tracker.intents) == {"a", "b"}
    await tracker.sweep()  # the full sweep sees both TTLs: their grace starts now
    assert set(tracker.intents) == {"a", "b"}
    now[0] += tracker.limits.lease_grace + 1
    assert await tracker.light_sweep()  # unleased keys are re-read by every pass
    assert tracker.intents == {}
    assert "no TTL" in tracker.refused_keys["a"].reason
    assert "above the maximum lease" in tracker.refused_keys["b"].reason


@pytest.mark.usefixtures("real_redis_url")
async def test_every_command_that_makes_or_changes_an_intent_set_is_noticed(
    keys: Keys, r: aioredis.Redis
) -> None:
    """The watched events against what Redis 7 actually sends for each command (keys written
    by these commands have no TTL: a long grace keeps them served meanwhile)."""
    tmp_a, tmp_b = f"{keys.prefix}:tmp:a", f"{keys.prefix}:tmp:b"  # not intent keys
    await r.sadd(tmp_a, BTC, ETH)
    await r.sadd(tmp_b, ETH)
    other_db = aioredis.Redis.from_url(_url_of(r, db=1))
    intents = keys.intents
    try:
        async with running_tracker(r, keys, Limits(lease_grace=600)) as tracker:
            sweeps = tracker.sweeps
            view = tracker.intents

            async def sees(check: Callable[[], bool]) -> None:
                await until(check, within=WITHIN)

            await heartbeat(r, keys, "x", BTC, ETH)
            await sees(lambda: view.get("x") == frozenset({BTC, ETH}))
            await r.smove(intents("x"), intents("y"), BTC)  # srem + sadd
            await sees(
                lambda: view.get("x") == frozenset({ETH}) and view.get("y") == frozenset({BTC})
            )
            await r.spop(intents("y"))  # spop, then del: emptied
            await sees(lambda: "y" not in view)
            await r.sunionstore(intents("z"), [tmp_a, tmp_b])
            await sees(lambda: view.get("z") == frozenset({BTC, ETH}))
            await r.sinterstore(intents("z"), [tmp_a, tmp_b])
            await sees(lambda: view.get("z") == frozenset({ETH}))
            await r.sdiffstore(intents("z"), [tmp_a, tmp_b])
            await sees(lambda: view.get("z") == frozenset({BTC}))
            await r.copy(tmp_b, intents("w"))  # copy_to
            await sees(lambda: view.get("w") == frozenset({ETH}))
            dumped = await r.dump(intents("w"))
            assert dumped is not None
            await r.restore(intents("v"), 60_000, dumped)  # restore
            await sees(lambda: view.get("v") == frozenset({ETH}))
            # SORT ... STORE writes a LIST over it: its event needs the "l" flag, not asked
            # for; the full sweep finds it (checked at the end).
            await r.sort(tmp_a, alpha=True, store=intents("z"))
            await r.move(intents("w"), 1)  # move_from
            await sees(lambda: "w" not in view)
            await r.expire(intents("v"), -1)  # a TTL in the past deletes: del
            await sees(lambda: "v" not in view)
            await r.unlink(intents("x"))  # del
            await sees(lambda: "x" not in view)
            assert tracker.sweeps == sweeps
            assert view.get("z") == frozenset({BTC})  # not noticed ...
            await tracker.sweep()  # ... until the full sweep (every 15 passes) reads it
            assert "z" not in view
            assert "is a list, not a SET" in tracker.refused_keys["z"].reason
    finally:
        await other_db.delete(intents("w"))
        await other_db.aclose()


def _url_of(r: aioredis.Redis, *, db: int) -> str:
    kwargs = r.connection_pool.connection_kwargs
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"
