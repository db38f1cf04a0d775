"""End to end: client library -> Redis -> the real Collector -> the emulator over loopback.

- snapshot() of a cold topic through the collector, and of a live one from its cache;
- ten client SUBPROCESSES (each a FanoutClient) with overlapping topics: the union is right, each
  gets exactly its topics; one is killed with SIGKILL: the others keep receiving and its own
  topics leave the union within lease + 2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.client.support import client
from tests.helpers import ClientProcess, scaled, texts, until
from upbit_fanout.client import Event, FanoutClient, Orderbook, Ticker
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

COLLECTOR_FAST: dict[str, Any] = {
    "sweep_interval": 0.3,
    "ping_interval": 1.0,
    "ping_timeout": 1.0,
    "backoff_initial": 0.05,
    "backoff_max": 0.3,
    "coalesce": 0.02,
}
LEASE = 1.5


@pytest.fixture
async def collector(real_redis_url: str, keys: Keys) -> AsyncIterator[Collector]:
    async with Emulator(port=0, seed=7, rate=400) as emu:
        redis = aioredis.Redis.from_url(real_redis_url)
        try:
            async with Collector(
                redis=redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                **COLLECTOR_FAST,
            ) as running:
                yield running
        finally:
            await redis.aclose()


async def test_snapshot_through_the_real_collector(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, collector: Collector
) -> None:
    control = r.pubsub()
    await control.subscribe(keys.control)
    async with client(real_redis_url, keys) as c:
        # cold: nobody wants KRW-ETH, so the snapshot makes the collector subscribe for it
        cold = await c.snapshot("ticker:KRW-ETH", timeout=10)
        assert not cold.cached
        assert cold.code == "KRW-ETH"
        assert isinstance(cold.typed, Ticker)
        await collector.wait_subscribed(lambda union: "ticker:KRW-ETH" not in union)
        assert [k async for k in r.scan_iter(match=keys.intents_pattern)] == []

        # live: once subscribed, snapshots come from P:last without any intent write
        await c.subscribe("ticker:KRW-BTC")
        await collector.wait_subscribed(lambda union: "ticker:KRW-BTC" in union)
        first = await asyncio.wait_for(anext(c.events()), 10)
        assert isinstance(first, Event)
        await _drain(control)
        live = await c.snapshot("ticker:KRW-BTC", timeout=2)
        assert live.cached
        assert isinstance(live.typed, Ticker)
        assert await _drain(control) == []  # no transient intent, nothing said to the collector
    await control.aclose()


async def _drain(pubsub: Any, quiet: float = 0.3) -> list[bytes]:
    """Every control message until none came for ``quiet`` seconds."""
    said = []
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=0.05)
        if message is not None and message["type"] == "message":
            said.append(message["data"])
            deadline = time.monotonic() + quiet
    return said


CLIENT_SCRIPT = """
import asyncio, signal, sys
from upbit_fanout.client import FanoutClient

async def main():
    url, prefix, client_id, lease, *topics = sys.argv[1:]
    async with FanoutClient(url, key_prefix=prefix, client_id=client_id,
                            lease_seconds=float(lease)) as client:
        await client.subscribe(*topics)
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, asyncio.current_task().cancel)
        print("ready", flush=True)
        try:
            async for item in client:
                if item.kind == "event":
                    sys.stdout.write(item.topic + "\\n")
                    sys.stdout.flush()
        except asyncio.CancelledError:
            pass  # SIGTERM: leave the async with, which releases the lease

asyncio.run(main())
"""

INTENTS: dict[str, list[str]] = {
    "bot-0": ["ticker:KRW-BTC"],
    "bot-1": ["ticker:KRW-BTC", "trade:KRW-BTC"],
    "bot-2": ["trade:KRW-BTC", "orderbook:KRW-BTC.5"],
    "bot-3": ["ticker:KRW-ETH", "orderbook:KRW-BTC.5"],
    "bot-4": ["ticker:KRW-ETH"],
    "bot-5": ["trade:KRW-ETH", "ticker:KRW-BTC"],
    "bot-6": ["orderbook:KRW-ETH.15"],
    "bot-7": ["ticker:KRW-XRP", "trade:KRW-ETH"],
    "bot-8": ["ticker:KRW-XRP", "ticker:KRW-BTC", "orderbook:KRW-ETH.15"],
    "bot-9": ["trade:KRW-XRP", "ticker:KRW-BTC"],  # trade:KRW-XRP is bot-9's alone
}


async def start_client(url: str, keys: Keys, client_id: str, topics: list[str]) -> ClientProcess:
    """A FanoutClient (CLIENT_SCRIPT) in its own process; its ``lines`` are the topics it got."""
    return await ClientProcess.start(
        CLIENT_SCRIPT, url, keys.prefix, client_id, str(LEASE), *topics, ready="ready"
    )


@pytest.mark.slow
async def test_ten_client_processes_share_one_collector(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, collector: Collector
) -> None:
    everything = {topic for topics in INTENTS.values() for topic in topics}
    processes: dict[str, ClientProcess] = {}
    try:
        started = await asyncio.gather(
            *(start_client(real_redis_url, keys, cid, t) for cid, t in INTENTS.items())
        )
        processes = dict(zip(INTENTS, started, strict=True))
        union = await collector.wait_subscribed(lambda u: u == everything, timeout=15)
        assert union == everything
        assert texts(await r.smembers(keys.union)) == everything

        async def everyone_saw_all_their_topics() -> bool:
            return all(set(p.lines) >= set(INTENTS[cid]) for cid, p in processes.items())

        await until(everyone_saw_all_their_topics, 15)
        for cid, process in processes.items():
            assert set(process.lines) == set(INTENTS[cid]), cid  # exactly its own topics

        victim = processes.pop("bot-9")
        counts = {cid: len(p.lines) for cid, p in processes.items()}
        killed_at = time.monotonic()
        await victim.stop(kill=True)
        await collector.wait_subscribed(lambda u: "trade:KRW-XRP" not in u, timeout=LEASE + 2)
        assert time.monotonic() - killed_at <= LEASE + scaled(2)
        assert texts(await r.smembers(keys.union)) == everything - {"trade:KRW-XRP"}

        async def others_still_receive() -> bool:
            return all(len(p.lines) > counts[cid] + 3 for cid, p in processes.items())

        await until(others_still_receive, 10)
        assert not await r.exists(keys.intents("bot-9"))  # expired, nobody cleaned up
    finally:
        for process in processes.values():
            await process.stop()
    # SIGTERM made every survivor leave its ``async with``: their leases were given back at once
    assert [key async for key in r.scan_iter(match=keys.intents_pattern)] == []
    assert all(p.process.returncode == 0 for p in processes.values())


async def test_a_client_and_the_collector_agree_on_names(
    real_redis_url: str, keys: Keys, collector: Collector
) -> None:
    async with FanoutClient(real_redis_url, key_prefix=keys.prefix, lease_seconds=LEASE) as c:
        await c.subscribe("orderbook:KRW-BTC.5", "orderbook:KRW-BTC")
        await collector.wait_subscribed(lambda u: {"orderbook:KRW-BTC.5", "orderbook:KRW-BTC"} <= u)
        seen: dict[str, int] = {}
        async with asyncio.timeout(10):
            async for item in c:
                if isinstance(item, Event):
                    assert isinstance(item.typed, Orderbook), item.typed
                    seen[item.topic] = len(item.typed.orderbook_units)
                    if len(seen) == 2:
                        break
        assert seen == {"orderbook:KRW-BTC.5": 5, "orderbook:KRW-BTC": 30}


async def test_a_client_asks_for_a_grouped_book_and_is_refused_one_of_another_quote(
    real_redis_url: str, keys: Keys, collector: Collector
) -> None:
    async with client(real_redis_url, keys) as c:
        with pytest.raises(ValueError, match="KRW markets only"):
            await c.subscribe("orderbook:BTC-ETH.5@0.001")  # refused locally, nothing written
        await c.subscribe("orderbook:KRW-BTC.5@10000")
        await collector.wait_subscribed(lambda union: "orderbook:KRW-BTC.5@10000" in union)
        item = await asyncio.wait_for(anext(c.events()), 10)
        assert isinstance(item, Event)
        assert item.topic == "orderbook:KRW-BTC.5@10000"
        book = item.typed
        assert isinstance(book, Orderbook)
        assert book.level == 10000
        assert len(book.orderbook_units) == 5
        assert all(unit.ask_price % 10000 == 0 for unit in book.orderbook_units)
