"""Leadership with fencing, between real ``upbit-fanout collector`` processes and real signals.

Two collectors share one Redis and one prefix; the emulator plays Upbit in this test's event
loop; a recorder subscribes to the trade channel and the notices with receipt times. The lease is
2 s (10 s where the test needs a long one). Timing bounds carry a tolerance for this loaded
2-core machine, stated where they are asserted.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.collector.process_support import (
    COMMAND,
    CollectorProcess,
    Received,
    Recorder,
    collector_processes,
    notice_is,
)
from tests.collector.service_support import status_of
from tests.helpers import scaled, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import parse_leader

pytestmark = [
    pytest.mark.usefixtures("real_redis_url"),
    pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`"),
]

LEASE = 2.0
TOLERANCE = 1.5
"""Extra seconds allowed on this shared 2-core machine (process scheduling, Redis round trips)."""

TOPIC = "trade:KRW-BTC"
FAST = {"leader_lease": str(LEASE), "backoff_initial": "0.05", "ping_interval": "2"}


def _trade(message: Received) -> dict[str, object]:
    body = message.json()
    assert isinstance(body, dict)
    return body


async def _leader(r: aioredis.Redis, keys: Keys) -> tuple[int, str]:
    """(fencing token, collector id) in ``P:leader``."""
    value = await r.get(keys.leader)
    assert value is not None, "nobody holds the lease"
    token, holder = parse_leader(value)
    assert token is not None, value
    return token, holder


async def _want(r: aioredis.Redis, keys: Keys, *topics: str) -> None:
    await r.sadd(keys.intents("bot"), *topics)
    await r.expire(keys.intents("bot"), 120)
    await r.publish(keys.control, "bot")


async def _status_is(r: aioredis.Redis, keys: Keys, **fields: str) -> bool:
    status = await status_of(r, keys)
    return all(status.get(name) == value for name, value in fields.items())


async def test_a_paused_leader_publishes_nothing_after_the_standby_took_over(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    channel = keys.channel(TOPIC)
    async with (
        Emulator(port=0, seed=11, rate=300) as emu,
        Recorder(real_redis_url, [channel, keys.notices]) as rec,
        collector_processes() as procs,
    ):
        await _want(r, keys, TOPIC)
        a = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "a", tmp_path, **FAST
        )
        procs.append(a)
        await rec.wait_for(lambda m: m.channel == channel)  # a publishes
        b = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "b", tmp_path, **FAST
        )
        procs.append(b)
        await b.wait_log("standing by")

        stopped = time.monotonic()
        stopped_wall = time.time_ns() // 1_000_000
        a.signal(signal.SIGSTOP)  # a keeps its socket; the emulator keeps writing to it
        took = await rec.wait_for(notice_is("leader", collector_id="b"), since=stopped)
        takeover = took.at - stopped
        assert takeover <= LEASE + 1.0 + scaled(TOLERANCE), f"takeover took {takeover:.2f} s"
        await rec.wait_for(lambda m: m.channel == channel, since=took.at)  # b publishes
        await asyncio.sleep(2.0)  # a's socket fills with frames b publishes too

        resumed = time.monotonic()
        a.signal(signal.SIGCONT)
        await a.wait_log("lost")  # a found the lease taken, dropped its queue, stood by
        # Its status writer had things pending too: none of it may land. Absence is watched over
        # a window: a's writer flushes at once on waking: its heartbeat (5 s) is long overdue.
        holders = set()
        async with asyncio.timeout(30):
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                holders.add((await status_of(r, keys)).get("collector_id"))
                await asyncio.sleep(0.05)
        assert holders == {"b"}, "the paused leader wrote its status after losing the lease"
        # b keeps publishing after a woke up: the window where a could have written is covered
        await rec.wait_for(lambda m: m.channel == channel, since=time.monotonic() + 0.5)

        trades = rec.on(channel)
        ids = Counter(_trade(m)["sequential_id"] for m in trades)
        duplicates = {sid: n for sid, n in ids.items() if n > 1}
        assert duplicates == {}, f"{len(duplicates)} trades published twice"
        stale = [
            m
            for m in rec.on(channel, since=took.at)
            if int(str(_trade(m)["trade_timestamp"])) < stopped_wall
        ]
        assert stale == [], f"{len(stale)} events of the paused leader published after takeover"
        notices_after = [m.json() for m in rec.on(keys.notices, since=took.at)]
        assert not [n for n in notices_after if n.get("collector_id") == "a"]
        after_resume = rec.on(channel, since=resumed)
        assert after_resume, "nothing was published after SIGCONT"
        leader = await _leader(r, keys)
        assert leader[1] == "b"
        await until(lambda: _status_is(r, keys, collector_id="b", state="subscribed"), 10)
        assert a.process.returncode is None  # a is alive, standing by
        assert "standing by" in a.log
    print(f"takeover after SIGSTOP: {takeover:.2f} s (lease {LEASE} s)")


async def test_sigkill_failover_publishes_a_gap_and_takes_over_within_the_lease(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    channel = keys.channel(TOPIC)
    async with (
        Emulator(port=0, seed=12, rate=200) as emu,
        Recorder(real_redis_url, [channel, keys.notices]) as rec,
        collector_processes() as procs,
    ):
        await _want(r, keys, TOPIC)
        a = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "a", tmp_path, **FAST
        )
        procs.append(a)
        await rec.wait_for(lambda m: m.channel == channel)
        b = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "b", tmp_path, **FAST
        )
        procs.append(b)
        await b.wait_log("standing by")
        before = await _leader(r, keys)
        assert before[1] == "a"

        killed = time.monotonic()
        killed_wall = time.time_ns() // 1_000_000
        await a.kill()
        took = await rec.wait_for(notice_is("leader", collector_id="b"), since=killed)
        gap = await rec.wait_for(notice_is("gap", previous_leader="a"), since=killed)
        flowing = await rec.wait_for(lambda m: m.channel == channel, since=took.at)

        takeover = took.at - killed
        assert takeover <= LEASE + 1.0 + scaled(TOLERANCE), f"takeover took {takeover:.2f} s"
        body = gap.json()
        assert "failover" in body["reason"]
        assert body["since"] <= killed_wall <= body["until"]  # the window covers the death
        after = await _leader(r, keys)
        assert after[1] == "b"
        assert after[0] > before[0]
        await until(lambda: _status_is(r, keys, collector_id="b", state="subscribed"), 10)
    print(
        f"SIGKILL failover: leader after {takeover:.2f} s, events again after "
        f"{flowing.at - killed:.2f} s (lease {LEASE} s)"
    )


async def test_a_restart_with_the_same_collector_id_reclaims_its_lease_at_once(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    long_lease = 10.0
    settings = {**FAST, "leader_lease": str(long_lease)}
    channel = keys.channel(TOPIC)
    async with (
        Emulator(port=0, seed=13, rate=200) as emu,
        Recorder(real_redis_url, [channel, keys.notices]) as rec,
        collector_processes() as procs,
    ):
        await _want(r, keys, TOPIC)
        first = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "same", tmp_path, **settings
        )
        procs.append(first)
        await rec.wait_for(lambda m: m.channel == channel)
        before = await _leader(r, keys)
        assert before[1] == "same"

        killed = time.monotonic()
        await first.kill()  # its lease stays in Redis for up to 10 s
        second = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "same", tmp_path, **settings
        )
        procs.append(second)
        took = await rec.wait_for(notice_is("leader", collector_id="same"), since=killed)
        await rec.wait_for(notice_is("gap", previous_leader="same"), since=killed)
        await rec.wait_for(lambda m: m.channel == channel, since=took.at)
        reclaimed = took.at - killed
        # Before the dead lease could have expired (a process start is well under 9 s here).
        assert reclaimed < long_lease - 1.0, f"reclaimed after {reclaimed:.2f} s"
        after = await _leader(r, keys)
        assert after[1] == "same"
        assert after[0] > before[0]
    print(f"same-id restart: leader again {reclaimed:.2f} s after SIGKILL (lease {long_lease} s)")


async def test_two_live_collectors_with_one_id_do_not_take_the_lease_from_each_other(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    channel = keys.channel(TOPIC)
    async with (
        Emulator(port=0, seed=14, rate=200) as emu,
        Recorder(real_redis_url, [channel, keys.notices]) as rec,
        collector_processes() as procs,
    ):
        await _want(r, keys, TOPIC)
        first = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "twin", tmp_path, **FAST
        )
        procs.append(first)
        await rec.wait_for(lambda m: m.channel == channel)
        second = await CollectorProcess.start(
            real_redis_url, keys, emu.public_url, "twin", tmp_path, **FAST
        )
        procs.append(second)
        # The second one's first attempt reclaims (it cannot tell a live twin from a dead
        # predecessor); the first one finds its token replaced, says why, and stands by.
        line = await first.wait_log("SAME collector id")
        assert "ERROR" in line
        token = (await _leader(r, keys))[0]
        await rec.wait_for(notice_is("leader", token=token))  # the second one's term
        takeovers = len([m for m in rec.on(keys.notices) if notice_is("leader")(m)])
        # Several leases later nobody took it back: one term, one socket to Upbit.
        await rec.wait_for(lambda m: m.channel == channel, since=time.monotonic() + 2 * LEASE)
        assert (await _leader(r, keys))[0] == token
        assert len([m for m in rec.on(keys.notices) if notice_is("leader")(m)]) == takeovers
        await emu.wait_connections(1)
        assert "SAME collector id" not in second.log
