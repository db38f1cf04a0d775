"""Sending: coalescing under the rate budget, snapshots on resubscribe, the empty union."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import (
    Listener,
    running_collector,
    sent_messages,
    status_of,
    topics_of,
    union_becomes,
)
from tests.helpers import scaled, text, until
from upbit_fanout.collector.intents import plan
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=2, rate=300)]


async def test_a_thousand_changes_in_a_second_become_few_messages_within_the_budget(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    codes = sorted(emu.known_codes)[:12]
    pool = [f"{kind}:{code}" for kind in ("ticker", "trade") for code in codes]
    writers, changes_each = 20, 50

    async def writer(index: int) -> None:
        rng = random.Random(index)
        key = keys.intents(f"bot-{index}")
        await r.sadd(key, rng.choice(pool))
        await r.expire(key, 30)
        for _ in range(changes_each - 2):
            topic = rng.choice(pool)
            if rng.random() < 0.6:
                await r.sadd(key, topic)
            else:
                await r.srem(key, topic)
            await asyncio.sleep(rng.uniform(0.0, 0.04))

    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await until(lambda: c.tracker.loaded)
        started = time.monotonic()
        await asyncio.gather(*(writer(i) for i in range(writers)))
        assert time.monotonic() - started < scaled(2.0)  # 1,000 changes in about a second

        final: dict[str, list[str]] = {}
        async for key in r.scan_iter(match=keys.intents_pattern):
            members = await r.smembers(key)
            if members:
                final[text(key)] = [text(m) for m in members]
        expected = {str(t) for t in plan(final, private_allowed=False).public_topics}
        assert expected
        await c.wait_subscribed(lambda union: union == expected)
        await asyncio.sleep(0.3)  # anything still pending would show now
        await union_becomes(r, keys, expected)

    messages = sent_messages(emu)
    times = [record.monotonic for record in emu.received]
    assert all(record.error is None for record in emu.received)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 5, "more than 5 in one second"
    assert len(messages) <= 5 * 3  # coalesced: a few per second, not one per change
    assert topics_of(messages[-1]) == expected  # the last message is the final union


async def test_a_new_topic_gets_its_snapshot_and_old_topics_get_no_second_one(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    btc, eth = keys.channel("ticker:KRW-BTC"), keys.channel("ticker:KRW-ETH")

    def snapshots(channel: str) -> int:
        return sum(1 for e in listener.events(channel) if e["stream_type"] == "SNAPSHOT")

    async with (
        Listener(real_redis_url, [btc, eth]) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await r.sadd(keys.intents("a"), "ticker:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await listener.wait(lambda: snapshots(btc) == 1)
        await listener.wait(lambda: len(listener.messages[btc]) >= 3)  # realtime flows too

        await r.sadd(keys.intents("b"), "ticker:KRW-ETH")
        await r.expire(keys.intents("b"), 30)
        await listener.wait(lambda: snapshots(eth) == 1)
        await asyncio.sleep(0.3)

        second = sent_messages(emu)[-1]
        assert topics_of(second) == {"ticker:KRW-BTC", "ticker:KRW-ETH"}  # re-sent whole
        # KRW-BTC already streams: asked realtime only, so Upbit sends no second snapshot
        assert {"type": "ticker", "codes": ["KRW-BTC"], "is_only_realtime": True} in second
        assert {"type": "ticker", "codes": ["KRW-ETH"]} in second
        assert snapshots(btc) == 1
        assert emu.connections[0].snapshots_sent == 2  # one per code, none repeated
        assert c.public.router.dropped_snapshots == 0  # the router's filter had nothing to do
        assert emu.counters["connections"] == 1


async def test_an_empty_union_closes_the_stream_and_a_new_intent_brings_it_back(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    btc = keys.channel("ticker:KRW-BTC")
    async with (
        Listener(real_redis_url, [btc, keys.notices]) as listener,
        running_collector(real_redis_url, keys, emu.public_url, warm_seconds=0) as c,
    ):
        await r.sadd(keys.intents("a"), "ticker:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await listener.wait(lambda: len(listener.messages[btc]) >= 2)

        await r.delete(keys.intents("a"))
        await emu.wait_connections(0)  # Upbit has no unsubscribe: the socket is closed
        await until(lambda: _status_is(r, keys, "idle"))
        await union_becomes(r, keys, set())
        assert c.union == frozenset()
        quiet = len(listener.messages[btc])
        await asyncio.sleep(0.3)
        assert len(listener.messages[btc]) == quiet  # no data flows for nothing
        reasons = [n.get("reason") for n in listener.notices(keys.notices)]
        assert "nothing subscribed" in reasons

        await r.sadd(keys.intents("a"), "ticker:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await listener.wait(lambda: len(listener.messages[btc]) > quiet + 1)
        assert emu.counters["connections"] == 2
        await union_becomes(r, keys, {"ticker:KRW-BTC"})


async def _status_is(r: aioredis.Redis, keys: Keys, state: str) -> bool:
    return (await status_of(r, keys)).get("state") == state


async def test_heartbeats_and_repeats_send_nothing(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await r.sadd(keys.intents("a"), "ticker:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        sweeps = c.tracker.sweeps
        for _ in range(5):  # what a heartbeating client does, and a chatty one
            await r.sadd(keys.intents("a"), "ticker:KRW-BTC")
            await r.pexpire(keys.intents("a"), 30_000)
            await r.publish(keys.control, "a")
            await r.sadd(keys.intents("b"), "ticker:KRW-BTC")  # same topic, another client
            await r.expire(keys.intents("b"), 30)
        await until(lambda: c.tracker.sweeps >= sweeps + 2)
        assert len(sent_messages(emu)) == 1  # the desired state never changed
        assert c.counters["sends_total"] == 1


async def test_a_topic_served_by_the_same_request_is_routed_without_a_message(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    five = keys.channel("orderbook:KRW-BTC.5")
    async with (
        Listener(real_redis_url, [five]) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await r.sadd(keys.intents("a"), "orderbook:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await c.wait_subscribed(lambda union: union == {"orderbook:KRW-BTC"})
        # 5 units are cut from the 30 already subscribed: Upbit needs no new request.
        await r.sadd(keys.intents("b"), "orderbook:KRW-BTC.5")
        await r.expire(keys.intents("b"), 30)
        await c.wait_subscribed(lambda union: "orderbook:KRW-BTC.5" in union)
        await listener.wait(lambda: listener.messages[five])
        assert len(listener.events(five)[0]["orderbook_units"]) == 5
        assert len(sent_messages(emu)) == 1
        await union_becomes(r, keys, {"orderbook:KRW-BTC", "orderbook:KRW-BTC.5"})


async def test_an_emptied_union_keeps_a_warm_socket_that_the_next_subscribe_reuses(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    btc, eth = keys.channel("ticker:KRW-BTC"), keys.channel("ticker:KRW-ETH")
    async with (
        Listener(real_redis_url, [btc, eth, keys.notices]) as listener,
        running_collector(real_redis_url, keys, emu.public_url, warm_seconds=30) as c,
    ):
        await r.sadd(keys.intents("a"), "ticker:KRW-BTC", "trade:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await listener.wait(lambda: len(listener.messages[btc]) >= 2)

        await r.delete(keys.intents("a"))
        await listener.wait(lambda: "idle" in [n["event"] for n in listener.notices(keys.notices)])
        await until(lambda: _status_is(r, keys, "idle"))
        await union_becomes(r, keys, set())
        # parked on the cheapest subscription: one ticker snapshot, then nothing flows
        parked = await _wait_message(emu, lambda m: any("is_only_snapshot" in i for i in m))
        assert parked[1:-1] == [{"type": "ticker", "codes": ["KRW-BTC"], "is_only_snapshot": True}]
        sub = emu.connections[0].subscription
        assert sub is not None
        assert not sub.realtime
        quiet = len(listener.messages[btc])
        await asyncio.sleep(0.5)
        assert len(listener.messages[btc]) == quiet  # the parking snapshot is nobody's event
        assert len(emu.connections) == 1  # still open: pings keep it

        await r.sadd(keys.intents("b"), "ticker:KRW-ETH", "ticker:KRW-BTC")
        await r.expire(keys.intents("b"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-ETH", "ticker:KRW-BTC"})
        await listener.wait(lambda: listener.messages[eth] and len(listener.messages[btc]) > quiet)
        assert emu.counters["connections"] == 1  # no new handshake
        # nothing was flowing, so every code asks for its snapshot again
        assert all("is_only_realtime" not in item for item in sent_messages(emu)[-1])
        events = [n["event"] for n in listener.notices(keys.notices)]
        assert "gap" not in events
        assert "disconnected" not in events


async def test_a_warm_socket_closes_after_its_time(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    async with running_collector(real_redis_url, keys, emu.public_url, warm_seconds=0.5) as c:
        await r.sadd(keys.intents("a"), "ticker:KRW-BTC")
        await r.expire(keys.intents("a"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await r.delete(keys.intents("a"))
        await emu.wait_connections(0, within=10)
        assert c.public.state.value == "idle"


async def _wait_message(
    emu: Emulator, predicate: Callable[[list[dict[str, Any]]], bool], within: float = 5.0
) -> list[dict[str, Any]]:
    async with asyncio.timeout(within):
        while True:
            for message in sent_messages(emu):
                if predicate(message):
                    return message
            await asyncio.sleep(0.02)
