"""Faults: the emulator drops, stalls, sends garbage, refuses or complains; Redis goes away.

After each fault the collector must recover on its own: reconnect, re-send the whole union, tell
consumers about the gap, and lose no intent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

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
from tests.conftest import RedisServer
from tests.helpers import scaled, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

WANTED = {"ticker:KRW-BTC", "trade:KRW-ETH"}


pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=3, rate=300)]


@pytest.fixture
async def r(r: aioredis.Redis, keys: Keys) -> aioredis.Redis:
    """The shared real-Redis fixture, with a client "bot" already wanting WANTED."""
    await r.sadd(keys.intents("bot"), *WANTED)
    await r.expire(keys.intents("bot"), 60)
    return r


def gaps(listener: Listener, keys: Keys) -> list[dict[str, object]]:
    return [n for n in listener.notices(keys.notices) if n["event"] == "gap"]


async def recovered(emu: Emulator, listener: Listener, keys: Keys, sends_before: int) -> None:
    """The union was re-sent on a new connection, a gap was announced, events flow again."""
    btc = keys.channel("ticker:KRW-BTC")
    await listener.wait(lambda: gaps(listener, keys))
    await until(lambda: len(sent_messages(emu)) > sends_before)
    assert topics_of(sent_messages(emu)[-1]) == WANTED  # no intent lost
    assert len(emu.connections) == 1
    seen = len(listener.messages[btc])
    await listener.wait(lambda: len(listener.messages[btc]) > seen)


async def test_drop_all_reconnects_resends_and_announces_a_gap(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    channels = [keys.notices, keys.channel("ticker:KRW-BTC")]
    async with (
        Listener(real_redis_url, channels) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        before = len(sent_messages(emu))
        await emu.drop_all()
        await recovered(emu, listener, keys, before)
        assert c.counters["reconnects"] == 1
        events = [n["event"] for n in listener.notices(keys.notices)]
        assert events.index("disconnected") < events.index("gap")
        await union_becomes(r, keys, WANTED)
        await until(lambda: _status(r, keys, state="subscribed", reconnects="1"))


async def test_a_stalled_upstream_is_detected_by_its_missing_pong(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    channels = [keys.notices, keys.channel("ticker:KRW-BTC")]
    async with (
        Listener(real_redis_url, channels) as listener,
        running_collector(
            real_redis_url, keys, emu.public_url, ping_interval=0.2, ping_timeout=0.3
        ) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        before = len(sent_messages(emu))
        stalled_at = time.monotonic()
        emu.stall(1.5)  # pings go unanswered; new handshakes wait too
        await listener.wait(
            lambda: any(n["event"] == "disconnected" for n in listener.notices(keys.notices))
        )
        assert time.monotonic() - stalled_at < scaled(1.5)  # the pong timeout, not the stall's end
        await recovered(emu, listener, keys, before)


async def test_quiet_markets_never_cause_a_reconnect(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with (
        Emulator(port=0, seed=3, rate=0.001) as quiet,  # practically no market events
        running_collector(real_redis_url, keys, quiet.public_url, ping_interval=0.2) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        await asyncio.sleep(1.5)  # many ping intervals without a single realtime frame
        assert quiet.counters["connections"] == 1
        assert c.counters["reconnects"] == 0


async def test_a_malformed_frame_is_counted_and_changes_nothing_else(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    btc = keys.channel("ticker:KRW-BTC")
    async with (
        Listener(real_redis_url, [btc]) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        assert await emu.send_malformed() == 1
        await until(lambda: c.counters["malformed_frames"] == 1)
        seen = len(listener.messages[btc])
        await listener.wait(lambda: len(listener.messages[btc]) > seen)
        assert emu.counters["connections"] == 1
        assert c.counters["reconnects"] == 0
        await until(lambda: _status(r, keys, malformed_frames="1", state="subscribed"))


async def test_refused_connections_are_retried_until_accepted(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    channels = [keys.notices, keys.channel("ticker:KRW-BTC")]
    async with (
        Listener(real_redis_url, channels) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        before = len(sent_messages(emu))
        emu.refuse_connections(1.0)
        await emu.drop_all()
        await until(lambda: emu.counters["refused_connections"] >= 2)
        assert c.state == "reconnecting"
        assert "503" in c.status.snapshot()["last_error"]
        await recovered(emu, listener, keys, before)
        # Retries were spaced by the backoff and the connect budget, not a tight loop.
        assert emu.counters["refused_connections"] <= 1.0 / 0.05 + 5


async def test_a_rate_limit_error_frame_slows_the_sender_down(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    async with (
        Listener(real_redis_url, [keys.notices]) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        assert c.public.budget.limits(time.monotonic()) == ((5, 1.0), (100, 60.0))
        await emu.inject({"error": {"name": "TOO_MANY_REQUESTS", "message": "Too Many Requests"}})
        await listener.wait(
            lambda: any(n["event"] == "error" for n in listener.notices(keys.notices))
        )
        error = next(n for n in listener.notices(keys.notices) if n["event"] == "error")
        assert error["name"] == "TOO_MANY_REQUESTS"
        assert c.public.budget.limits(time.monotonic()) == ((2, 1.0), (50, 60.0))
        assert c.counters["upstream_errors"] == 1


async def test_redis_going_away_keeps_the_upstream_and_is_reported_when_back(
    keys: Keys,
    emu: Emulator,
    redis_server_factory: Callable[[], RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="upbit_fanout.collector")
    server: RedisServer = redis_server_factory()
    r = aioredis.Redis.from_url(server.url)
    try:
        await r.sadd(keys.intents("bot"), *WANTED)
        await r.expire(keys.intents("bot"), 60)
        async with running_collector(server.url, keys, emu.public_url, queue_size=50) as c:
            await c.wait_subscribed(lambda union: union == WANTED)
            await r.aclose()
            server.kill()
            await until(lambda: not c.status.health.ok, within=5)
            events = c.counters["events_total"]
            await asyncio.sleep(0.5)
            # Intents cannot be read, yet nothing was unsubscribed: events still arrive.
            assert c.union == WANTED
            assert topics_of(sent_messages(emu)[-1]) == WANTED
            assert emu.counters["connections"] == 1
            assert c.counters["events_total"] > events
            assert c.counters["dropped_events"] > 0  # the bounded queue dropped the oldest

            server.start()  # an empty Redis, as after a restart without persistence
            r = aioredis.Redis.from_url(server.url)
            await r.sadd(keys.intents("bot"), *WANTED)  # the client's next heartbeat
            await r.expire(keys.intents("bot"), 60)
            await c.wait_subscribed(lambda union: union == WANTED)
            await until(lambda: _status(r, keys, redis_outages="1", state="subscribed"), 10)
            status = await status_of(r, keys)
            # Recovered: the error moved to previous_error (with its time), last_error is clear.
            assert "Redis was unreachable" in status["previous_error"]
            assert status["previous_error_at"].isdigit()
            assert status["last_error"] == ""
            assert status["last_error_at"] == ""
            assert int(status["dropped_events"]) > 0
            await union_becomes(r, keys, WANTED)
            # The queued events go out once the publisher's retry comes, with a gap notice.
            await until(lambda: any("events were dropped" in m for m in _logged(caplog)))
        assert sum("Redis unreachable" in m for m in _logged(caplog)) == 1  # once per outage
    finally:
        await r.aclose()


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


async def _status(r: aioredis.Redis, keys: Keys, **fields: str) -> bool:
    status = await status_of(r, keys)
    return all(status.get(name) == value for name, value in fields.items())
