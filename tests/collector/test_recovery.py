"""Recovery of a real ``upbit-fanout collector`` process: a Redis restart under running clients,
an upstream that refuses connections for a while, and a malformed event from upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.client.support import restart_same_port
from tests.collector.process_support import (
    COMMAND,
    CollectorProcess,
    Recorder,
    collector_processes,
)
from tests.collector.service_support import status_of
from tests.conftest import RedisServer
from tests.helpers import ClientProcess, texts, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`")

TOLERANCE = 1.0
"""Extra seconds allowed on this shared 2-core machine."""


def _subscribed_topics(emu: Emulator) -> list[tuple[float, set[str]]]:
    """(monotonic time, topics) of every subscribe message the emulator received."""
    out = []
    for record in emu.received:
        raw = record.raw.decode() if isinstance(record.raw, bytes) else record.raw
        if raw.strip() == "PING" or '"LIST_SUBSCRIPTIONS"' in raw:
            continue
        topics = set()
        for item in json.loads(raw):
            for code in item.get("codes") or ():
                topics.add(f"{item['type']}:{code}")
        out.append((record.monotonic, topics))
    return out


# A redis-cli style client that heartbeats every 2 s (SADD + EXPIRE 6) and shrugs off errors: after
# a Redis restart it re-asserts its intent up to 2 s later, long after the collector's first sweep.
SLOW_CLIENT = """
import sys, time, redis
url, key, *topics = sys.argv[1:]
r = redis.Redis.from_url(url)
while True:
    try:
        r.execute_command("SADD", key, *topics)
        r.execute_command("EXPIRE", key, 6)
        print("beat", flush=True)
    except redis.RedisError:
        pass
    time.sleep(2)
"""


async def test_a_redis_restart_under_running_clients_never_closes_the_upstream_socket(
    redis_server_factory: Callable[[], RedisServer], keys: Keys, tmp_path: Path
) -> None:
    grace = 4.0
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    channel = keys.channel("trade:KRW-BTC")
    client = await ClientProcess.start(
        SLOW_CLIENT, server.url, keys.intents("a"), "trade:KRW-BTC", ready="beat"
    )  # its intent is written
    try:
        async with (
            Emulator(port=0, seed=21, rate=200) as emu,
            Recorder(server.url, [channel]) as rec,
            collector_processes() as procs,
        ):
            # A second client wrote its intent by hand and will not come back after the restart.
            await admin.sadd(keys.intents("gone"), "ticker:KRW-ETH")
            await admin.expire(keys.intents("gone"), 60)
            settings = {"leader_lease": "2", "redis_grace": str(grace), "backoff_initial": "0.05"}
            collector = await CollectorProcess.start(
                server.url, keys, emu.public_url, "c", tmp_path, **settings
            )
            procs.append(collector)
            await until(lambda: _union_is(admin, keys, {"trade:KRW-BTC", "ticker:KRW-ETH"}), 20)
            await rec.wait_for(lambda m: m.channel == channel)
            (connection,) = emu.connections
            connections_before = emu.counters["connections"]

            await asyncio.to_thread(restart_same_port, server)  # empty Redis, every link cut
            restarted = time.monotonic()

            await rec.wait_for(lambda m: m.channel == channel, since=restarted)  # flowing again
            # The collector keeps what it had for the grace period, then lets "gone" go.
            await until(lambda: _union_is(admin, keys, {"trade:KRW-BTC"}), grace + 15)
            shrunk = time.monotonic()
            await until(lambda: _state_is(admin, keys, "subscribed"), 10)
            await rec.wait_for(lambda m: m.channel == channel, since=time.monotonic())

            assert list(emu.connections) == [connection], "the upstream socket was replaced"
            assert emu.counters["connections"] == connections_before, "a new socket was opened"
            after = [topics for at, topics in _subscribed_topics(emu) if at > restarted]
            assert after, "the union never shrank upstream"
            assert all("trade:KRW-BTC" in topics for topics in after)
            assert shrunk - restarted >= grace - 0.5  # "gone" was kept for the grace period
        log = procs[0].log
        assert "keeping the intents of" in log
        assert "took it back" in log  # its lease vanished with Redis: re-taken, sockets kept
    finally:
        await client.stop(kill=True)
        await admin.aclose()


async def test_data_flows_again_within_seconds_of_a_connection_refusal_ending(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    channel = keys.channel("trade:KRW-BTC")
    refusal = 8.0
    async with (
        Emulator(port=0, seed=22, rate=200) as emu,
        Recorder(real_redis_url, [channel]) as rec,
        collector_processes() as procs,
    ):
        await r.sadd(keys.intents("bot"), "trade:KRW-BTC")
        await r.expire(keys.intents("bot"), 120)
        # The default backoff settings, as the command runs them.
        procs.append(
            await CollectorProcess.start(real_redis_url, keys, emu.public_url, "c", tmp_path)
        )
        await rec.wait_for(lambda m: m.channel == channel, within=20)

        emu.refuse_connections(refusal)  # HTTP 503 for every new handshake
        refused = time.monotonic()
        await emu.drop_all()
        back = await rec.wait_for(
            lambda m: m.channel == channel, within=refusal + 15, since=refused + refusal
        )
        assert emu.counters["refused_connections"] >= 3  # it kept trying through the refusal
        recovered = back.at - (refused + refusal)
        # Backoff for 503/refused is capped at 2 s; a connect and a snapshot take well under 1 s.
        assert recovered <= 3.0 + TOLERANCE, f"events again {recovered:.2f} s after the refusal"
    print(f"refusal of {refusal} s: events again {recovered:.2f} s after it ended")


async def test_an_event_with_wrong_field_types_is_counted_and_never_published(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    channel = keys.channel("ticker:KRW-BTC")
    async with (
        Emulator(port=0, seed=23, rate=1) as emu,
        Recorder(real_redis_url, [channel]) as rec,
        collector_processes() as procs,
    ):
        await r.sadd(keys.intents("bot"), "ticker:KRW-BTC")
        await r.expire(keys.intents("bot"), 120)
        proc = await CollectorProcess.start(real_redis_url, keys, emu.public_url, "c", tmp_path)
        procs.append(proc)
        await rec.wait_for(lambda m: m.channel == channel, within=20)  # the snapshot
        for _ in range(3):  # the same kind three times: logged once
            assert await emu.inject({"type": "ticker", "code": "KRW-BTC", "trade_price": "abc"})
        marker = {"type": "ticker", "code": "KRW-BTC", "trade_price": 123.5, "marker": "after"}
        assert await emu.inject(marker)
        await rec.wait_for(lambda m: m.json().get("marker") == "after")

        published = [m.json() for m in rec.on(channel)]
        assert all(event.get("trade_price") != "abc" for event in published)
        last = json.loads(await r.get(keys.last("ticker:KRW-BTC")) or b"{}")
        assert last.get("marker") == "after"  # never overwritten by the bad frame
        await until(lambda: _counter_at_least(r, keys, "malformed_frames", 3), 10)
        lines = [line for line in proc.lines if "trade_price" in line]
        assert len(lines) == 1, lines  # logged once for the kind
        assert "ticker.trade_price" in lines[0]


async def _union_is(r: aioredis.Redis, keys: Keys, expected: set[str]) -> bool:
    try:
        return texts(await r.smembers(keys.union)) == expected
    except redis.ConnectionError:  # the first command after a restart: the next one reconnects
        return False


async def _state_is(r: aioredis.Redis, keys: Keys, state: str) -> bool:
    try:
        return (await status_of(r, keys)).get("state") == state
    except redis.ConnectionError:
        return False


async def _counter_at_least(r: aioredis.Redis, keys: Keys, name: str, value: int) -> bool:
    return int((await status_of(r, keys)).get(name, "0")) >= value
