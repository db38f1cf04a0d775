"""Intents written with plain Redis commands -> one union -> one upstream subscription -> events.

Real Redis, the emulator over loopback, client processes that only run SADD + EXPIRE.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from tests.collector.service_support import (
    Listener,
    client_processes,
    running_collector,
    sent_messages,
    status_of,
    topics_of,
    union_becomes,
)
from tests.conftest import RedisServer
from tests.deployments import redis_server_args, spawn, wait_ping
from tests.helpers import free_port, scaled, text_map, until
from upbit_fanout.collector.intents import NO_KEYS_REASON
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.codec import detect_codec
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=1, rate=300)]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_client_processes_get_one_union_and_their_events(
    codec: str, real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    intents = {
        "bot-a": ["ticker:KRW-BTC", "trade:KRW-BTC"],
        "bot-b": ["ticker:KRW-BTC", "orderbook:KRW-BTC.5"],
        "chart": ["ticker:KRW-ETH"],
    }
    expected = {"ticker:KRW-BTC", "trade:KRW-BTC", "orderbook:KRW-BTC.5", "ticker:KRW-ETH"}
    channels = [keys.channel(topic) for topic in expected]
    async with (
        Listener(real_redis_url, channels) as listener,
        running_collector(real_redis_url, keys, emu.public_url, codec=codec) as c,
        client_processes(real_redis_url, keys, intents),
    ):
        await c.wait_subscribed(lambda union: union == expected)
        await union_becomes(r, keys, expected)
        last = sent_messages(emu)[-1]
        assert topics_of(last) == {
            "ticker:KRW-BTC",
            "ticker:KRW-ETH",
            "trade:KRW-BTC",
            "orderbook:KRW-BTC.5",
        }
        assert emu.counters["connections"] == 1  # one socket, one ticket for all of it
        assert len({message[0]["ticket"] for message in sent_messages(emu)}) == 1

        await listener.wait(lambda: all(listener.messages[ch] for ch in channels))
        for topic in expected:
            payloads = listener.messages[keys.channel(topic)]
            assert {detect_codec(p) for p in payloads} == {codec}
            for event in listener.events(keys.channel(topic)):
                type_name, code = topic.split(":")
                assert event["type"] == type_name
                assert event["code"] == code.split(".")[0]
        book = listener.events(keys.channel("orderbook:KRW-BTC.5"))[0]
        assert len(book["orderbook_units"]) == 5


async def test_a_killed_client_leaves_the_union_within_its_lease_plus_two_seconds(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    lease = 2
    eth = keys.channel("ticker:KRW-ETH")
    async with (
        Listener(real_redis_url, [eth]) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
        client_processes(
            real_redis_url, keys, {"doomed": ["ticker:KRW-BTC"], "alive": ["ticker:KRW-ETH"]}, lease
        ) as clients,
    ):
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC", "ticker:KRW-ETH"})
        killed_at = time.monotonic()
        await clients["doomed"].stop(kill=True)  # SIGKILL: no goodbye, the lease must run out
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-ETH"}, timeout=lease + 3)
        assert time.monotonic() - killed_at <= lease + scaled(2)
        await union_becomes(r, keys, {"ticker:KRW-ETH"})
        assert topics_of(sent_messages(emu)[-1]) == {"ticker:KRW-ETH"}
        # The other client's events keep flowing.
        seen = len(listener.messages[eth])
        await listener.wait(lambda: len(listener.messages[eth]) > seen + 3)


async def test_a_redis_cli_client_is_served_within_a_second_by_keyspace_notifications(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    # A sweep every 30 s: only the notifications can explain a fast reaction.
    async with running_collector(real_redis_url, keys, emu.public_url, sweep_interval=30) as c:
        await until(lambda: c.tracker.loaded)
        assert c.tracker.notifications
        started = time.monotonic()
        await r.execute_command("SADD", keys.intents("cli"), "ticker:KRW-BTC")
        await r.execute_command("EXPIRE", keys.intents("cli"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=1.0)
        assert time.monotonic() - started < scaled(1.0)
        # SREM is a change too; DEL takes the client away.
        await r.execute_command("SADD", keys.intents("cli"), "trade:KRW-BTC")
        await c.wait_subscribed(lambda union: "trade:KRW-BTC" in union, timeout=1.0)
        await r.execute_command("DEL", keys.intents("cli"))
        await c.wait_subscribed(lambda union: not union, timeout=1.0)


async def test_without_notifications_the_sweep_serves_a_client_within_one_interval(
    keys: Keys, emu: Emulator, redis_server_factory: Callable[[], RedisServer]
) -> None:
    server = redis_server_factory()
    async with running_collector(server.url, keys, emu.public_url, sweep_interval=0.5) as c:
        await until(lambda: c.tracker.loaded)
        sync = redis.Redis.from_url(server.url)
        try:
            sync.config_set("notify-keyspace-events", "")  # someone turned them off
            started = time.monotonic()
            sync.execute_command("SADD", keys.intents("cli"), "ticker:KRW-BTC")
            sync.execute_command("EXPIRE", keys.intents("cli"), 30)
        finally:
            sync.close()
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=2.0)
        assert time.monotonic() - started < 0.5 + scaled(0.5)


@pytest.fixture
def locked_redis_url() -> object:
    """A redis-server where CONFIG is disabled (as on managed Redis services)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed")
    port = free_port()
    process = spawn(redis_server_args(binary, port, "--rename-command", "CONFIG", ""))
    try:
        wait_ping(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


async def test_when_config_is_refused_it_says_so_once_and_relies_on_the_sweep(
    keys: Keys, emu: Emulator, locked_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="upbit_fanout.collector")
    async with running_collector(locked_redis_url, keys, emu.public_url, sweep_interval=0.3) as c:
        await until(lambda: c.tracker.loaded)
        assert not c.tracker.notifications
        sync = redis.Redis.from_url(locked_redis_url)
        try:
            sync.execute_command("SADD", keys.intents("cli"), "ticker:KRW-BTC")
            sync.execute_command("EXPIRE", keys.intents("cli"), 30)
        finally:
            sync.close()
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=2.0)
    refusals = [rec for rec in caplog.records if "keyspace notifications" in rec.getMessage()]
    assert len(refusals) == 1


async def test_invalid_intents_are_never_sent_and_are_reported(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="upbit_fanout.collector")
    bad = ["ticker:krw-btc", "bogus:KRW-BTC", "orderbook:KRW-BTC.7", "myAsset:KRW-BTC"]
    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await r.sadd(keys.intents("sloppy"), "ticker:KRW-BTC", *bad)
        await r.sadd(keys.intents("trader"), "myOrder:*")  # private, but no API keys here
        await r.expire(keys.intents("sloppy"), 30)
        await r.expire(keys.intents("trader"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        sweeps = c.tracker.sweeps
        await until(lambda: c.tracker.sweeps >= sweeps + 3)  # re-read a few times
        await until(lambda: c.status.counters["invalid_intents"] == 5)

        for message in sent_messages(emu):
            text = str(message)
            for needle in ("krw-btc", "bogus", "KRW-BTC.7", "myAsset", "myOrder"):
                assert needle not in text
        invalid = text_map(await r.hgetall(keys.invalid))
        assert set(invalid) == {
            *(f"sloppy {topic}" for topic in bad),
            "trader myOrder:*",
            "sloppy",
            "trader",
        }
        assert invalid["trader myOrder:*"] == NO_KEYS_REASON
        assert "upper case" in invalid["sloppy ticker:krw-btc"]
        assert invalid["sloppy"] == "4 refused"  # per client: a count (and a few examples)
        await until(lambda: _status_has(r, keys, invalid_intents="5", state="subscribed"))
        # One line per client (a count and an example), however many sweeps saw it.
        refused = [rec.getMessage() for rec in caplog.records if "refusing" in rec.getMessage()]
        assert len(refused) == 2
        assert any("refusing 4 intent(s) of client sloppy" in line for line in refused)

        # The report is kept current: when the intents go, so do the entries.
        await r.delete(keys.intents("sloppy"), keys.intents("trader"))
        await c.wait_subscribed(lambda union: not union)
        await until(lambda: c.status.counters["invalid_intents"] == 0)

        async def report_emptied() -> bool:
            return await r.hgetall(keys.invalid) == {}

        await until(report_emptied, what=f"{keys.invalid} emptied")


async def _status_has(r: aioredis.Redis, keys: Keys, **fields: str) -> bool:
    status = await status_of(r, keys)
    return all(status.get(name) == value for name, value in fields.items())
