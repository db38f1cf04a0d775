"""Private events never lost, with real processes: the collector (``upbit-fanout collector``) and a
consumer-group reader run as subprocesses and are SIGKILLed; the emulator (in this test's loop)
places the orders on its simulated account; Redis is the shared real one.

Counts are scaled to keep the suite fast: 150 orders (300 myOrder events) for the consumer
test, 120 orders for each collector crash (a restart, and a hot standby taking over).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.collector.process_support import collector_env
from tests.helpers import COMMAND, ClientProcess, stream_entries, text, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.keys import Keys

ACCESS = "AkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAk"
SECRET = "Sx9kTr4WqPz2LmN8vBc6Hd3Jf7Gy5Ue1Oi0Pa2Sd"

pytestmark = [
    pytest.mark.usefixtures("real_redis_url"),
    pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`"),
    pytest.mark.timeout(180),
]

# A consumer of the group "books": records each entry's effect and its ack in one transaction
# (exactly-once processing), a little slowly so that a SIGKILL lands in the middle.
CONSUMER = """
import asyncio, sys, time
import redis.asyncio as aioredis
from upbit_fanout.client import StreamEvent, StreamGroup

async def main(url, prefix, done_key):
    r = aioredis.Redis.from_url(url)
    group = StreamGroup(r, "myOrder", group="books", consumer="books-1", key_prefix=prefix,
                        block=0.2, count=20)
    print("ready", flush=True)
    while True:
        for item in await group.read():
            line = item.entry_id
            if isinstance(item, StreamEvent):
                order = item.typed
                line = f"{item.entry_id} {order.uuid} {order.state}"
            time.sleep(0.004)  # the "work"
            async with r.pipeline(transaction=True) as pipe:
                pipe.rpush(done_key, line)
                group.ack_in(pipe, item)
                await pipe.execute()
            print("processed", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


def _env(keys: Keys) -> dict[str, str]:
    return collector_env(
        keys,
        access_key=ACCESS,
        secret_key=SECRET,
        leader_lease="2",
        backoff_initial="0.05",
        backoff_max="0.5",
    )


async def _collector(url: str, emu: Emulator, keys: Keys, cwd: Path) -> Any:
    return await asyncio.create_subprocess_exec(
        str(COMMAND),
        "collector",
        "--redis-url",
        url,
        "--upstream",
        emu.public_url,
        env=_env(keys),
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _a_standby_is_listed(r: aioredis.Redis, keys: Keys) -> bool:
    return bool([key async for key in r.scan_iter(match=keys.standby_pattern)])


async def _stop(process: Any) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def _entries(r: aioredis.Redis, keys: Keys) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for entry_id, fields in stream_entries(await r.xrange(keys.stream("myOrder"))):
        event = decode_event(fields[b"payload"])
        out.append((text(entry_id), text(fields[b"source"]), event))
    return out


def _buy(emu: Emulator) -> str:
    return emu.place_order(code="KRW-BTC", side="bid", ord_type="price", price="6000")


async def _reconciled(r: aioredis.Redis, keys: Keys, after: int) -> bool:
    status = await r.hgetall(keys.status)
    gaps = int(status.get(b"private_gaps", b"0") or 0)
    result = text(status.get(b"private_last_reconcile", b""))
    at = int(status.get(b"private_last_reconcile_at", b"0") or 0)
    return gaps >= 1 and result.startswith("ok") and at > after


async def test_a_consumer_killed_mid_stream_processes_every_fill_exactly_once(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    done_key = f"{keys.prefix}:test:processed"

    async def consumer() -> ClientProcess:
        return await ClientProcess.start(
            CONSUMER, real_redis_url, keys.prefix, done_key, ready="ready"
        )

    async with Emulator(port=0, seed=11, rate=100, access_key=ACCESS, secret_key=SECRET) as emu:
        collector = await _collector(real_redis_url, emu, keys, tmp_path)
        reader = await consumer()
        try:
            await until(
                lambda: _status_is(r, keys, "private_last_reconcile", "ok"), within=30
            )  # the collector is up and recording (no intent anywhere)
            placed = []
            for _ in range(150):
                placed.append(_buy(emu))
                await asyncio.sleep(0.002)
            await until(lambda: _length_at_least(r, done_key, 100), within=60)
            await reader.stop(kill=True)  # in the middle of the 300 fills
            killed_at = await r.llen(done_key)
            assert killed_at < 300
            reader = await consumer()  # the same consumer name comes back
            await until(lambda: _length_at_least(r, done_key, 300), within=60)
            await asyncio.sleep(0.5)  # nothing more may come
            lines = [text(line) for line in await r.lrange(done_key, 0, -1)]
            groups = await r.xinfo_groups(keys.stream("myOrder"))
        finally:
            await reader.stop(kill=True)
            await _stop(collector)

    entry_ids = [line.split()[0] for line in lines]
    assert len(entry_ids) == len(set(entry_ids)) == 300  # every fill once
    per_order: dict[str, list[str]] = {}
    for line in lines:
        _, uuid, state = line.split()
        per_order.setdefault(uuid, []).append(state)
    assert set(per_order) == set(placed)
    assert all(states == ["trade", "done"] for states in per_order.values())  # in order
    assert entry_ids == sorted(entry_ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert groups[0]["pending"] == 0
    assert 100 <= killed_at < 300


@pytest.mark.parametrize("takeover", ["restart", "standby"])
async def test_a_collector_killed_in_a_burst_is_reconciled_after_restart(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path, takeover: str
) -> None:
    """SIGKILL of the leader mid-burst; then a new process starts, or a hot standby that was
    running all along takes over when the dead leader's lease (2 s) runs out."""
    async with Emulator(port=0, seed=12, rate=100, access_key=ACCESS, secret_key=SECRET) as emu:
        collector = await _collector(real_redis_url, emu, keys, tmp_path)
        standby = None
        try:
            await until(lambda: _status_is(r, keys, "private_last_reconcile", "ok"), within=30)
            if takeover == "standby":
                standby = await _collector(real_redis_url, emu, keys, tmp_path)
                # it is up and says so: a standby, waiting for the lease
                await until(lambda: _a_standby_is_listed(r, keys), within=30)
            placed = []
            for n in range(120):
                placed.append(_buy(emu))
                if n == 40:
                    killed = time.time_ns() // 1_000_000
                    collector.send_signal(signal.SIGKILL)  # mid-burst
                    await collector.wait()
                await asyncio.sleep(0.005)
            if standby is None:
                collector = await _collector(real_redis_url, emu, keys, tmp_path)
            await until(lambda: _reconciled(r, keys, killed), within=60)
            # the reconciled entries' round trip: every order placed has its final state
            await until(lambda: _all_done(r, keys, placed), within=10)
            entries = await _entries(r, keys)
        finally:
            await _stop(collector)
            if standby is not None:
                await _stop(standby)

    gaps = [event for _, source, event in entries if source == "gap"]
    assert len(gaps) == 1
    assert gaps[0]["from"] <= killed < gaps[0]["to"]  # the hole covers the time it was dead
    orders = [(source, event) for _, source, event in entries if source != "gap"]
    final = {event["uuid"]: event["state"] for _, event in orders}
    assert set(final) == set(placed)  # the final state of every order placed ...
    assert set(final.values()) == {"done"}
    states = Counter((event["uuid"], event["state"]) for _, event in orders)
    assert max(states.values()) == 1  # ... and nothing twice
    assert any(source == "rest" for source, _ in orders)  # some came back only through REST


async def _all_done(r: aioredis.Redis, keys: Keys, uuids: list[str]) -> bool:
    done = {
        event["uuid"]
        for _, source, event in await _entries(r, keys)
        if source != "gap" and event.get("state") == "done"
    }
    return set(uuids) <= done


async def _status_is(r: aioredis.Redis, keys: Keys, field: str, prefix: str) -> bool:
    value = await r.hget(keys.status, field)
    return value is not None and text(value).startswith(prefix)


async def _length_at_least(r: aioredis.Redis, key: str, count: int) -> bool:
    return int(await r.llen(key)) >= count
