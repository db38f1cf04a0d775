"""What one more topic costs when the union is Upbit's whole universe: snapshot frames, bytes and
collector CPU of the resubscribe, realtime-only requests against the old all-snapshot ones.

    .venv/bin/python bench/resubscribe_snapshots.py [--window 2] [--rounds 3] [--rate 100]
                                                    [--redis-url redis://127.0.0.1:6379/0]

The emulator runs in a subprocess (all 855 markets, ``--rate`` events/s). A real
:class:`collector.Collector` subscribes to ticker, trade and orderbook of every market (2,565
topics), waits for the snapshots, then a second client adds ``candle.1m:KRW-BTC``. For ``--window``
seconds from that intent the bench reads, from the emulator's admin state, how many SNAPSHOT
frames and frames in all it sent on the connection, and measures this process's CPU time (the
collector receiving, decoding and dropping them). ``realtime-only`` is the collector as built
(codes already streaming go in an ``is_only_realtime`` object); ``all-snapshots`` is the same
collector with the request built as before (every code without the flag, so Upbit replays every
snapshot and the router drops them), alternating in one run. Results:
bench/results/resubscribe_snapshots.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Collection
from typing import Any

import _common
import httpx
import redis.asyncio as aioredis

from upbit_fanout.collector import Collector
from upbit_fanout.subscriptions import reconcile
from upbit_fanout.subscriptions.keys import Keys

RESULTS = _common.RESULTS / "resubscribe_snapshots.json"
_REQUEST = reconcile.Subscription.request


def _all_snapshots(
    self: reconcile.Subscription,
    ticket: str,
    fmt: str = "DEFAULT",
    applied: Collection[reconcile.StreamKey] = (),
) -> list[dict[str, Any]]:
    return _REQUEST(self, ticket, fmt, ())  # the request as it was: every code new


async def _connection(http: httpx.AsyncClient, base: str) -> dict[str, Any]:
    state = (await http.get(f"{base.replace('ws://', 'http://')}/_emulator/state")).json()
    (connection,) = state["connections"]
    return dict(connection)


async def _round(
    redis_url: str, base: str, mode: str, topics: list[str], window: float
) -> dict[str, Any]:
    reconcile.Subscription.request = _REQUEST if mode == "realtime-only" else _all_snapshots  # type: ignore[method-assign]
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with (
            httpx.AsyncClient() as http,
            Collector(
                redis=redis,
                key_prefix=keys.prefix,
                upstream_url=f"{base}/websocket/v1",
                validate_markets=False,
                leader_lease=None,
                verify_subscriptions=False,  # the LIST answer's bytes are not the point here
            ) as collector,
        ):
            for kind in ("ticker", "trade", "orderbook"):  # at most 1,000 topics per client
                mine = [topic for topic in topics if topic.startswith(f"{kind}:")]
                await redis.sadd(keys.intents(kind), *mine)
                await redis.expire(keys.intents(kind), 300)
            await collector.wait_subscribed(lambda u: len(u) == len(topics), timeout=60)
            await asyncio.sleep(3.0)  # the first snapshots are in and routed
            before = await _connection(http, base)
            dropped0 = collector.public.router.dropped_snapshots
            cpu0 = time.process_time()
            await redis.sadd(keys.intents("one"), "candle.1m:KRW-BTC")
            await redis.expire(keys.intents("one"), 300)
            await asyncio.sleep(window)
            cpu = time.process_time() - cpu0
            after = await _connection(http, base)
        return {
            "mode": mode,
            "snapshot_frames": after["snapshots_sent"] - before["snapshots_sent"],
            "frames": after["frames_sent"] - before["frames_sent"],
            "dropped_by_router": collector.public.router.dropped_snapshots - dropped0,
            "collector_cpu_seconds": round(cpu, 3),
        }
    finally:
        reconcile.Subscription.request = _REQUEST  # type: ignore[method-assign]
        await _common.delete_prefix(redis, keys.prefix)
        await redis.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    from upbit_fanout.emulator.markets import default_markets  # noqa: PLC0415

    codes = [market.code for market in default_markets()]
    topics = [f"{kind}:{code}" for code in codes for kind in ("ticker", "trade", "orderbook")]
    process, base = await _common.start_emulator_process(rate=args.rate, seed=3)
    rounds: dict[str, list[dict[str, Any]]] = {"realtime-only": [], "all-snapshots": []}
    try:
        for mode in _common.alternating(list(rounds), args.rounds):
            result = await _round(args.redis_url, base, mode, topics, args.window)
            rounds[mode].append(result)
            print(json.dumps(result), flush=True)
    finally:
        _common.stop_process(process)
    fields = ("snapshot_frames", "frames", "dropped_by_router", "collector_cpu_seconds")
    summary = _common.medians(rounds, fields, 3)
    report = {
        **_common.report_head("resubscribe_snapshots"),
        "topics": len(topics),
        "window_seconds": args.window,
        "emulator_rate": args.rate,
        "median": summary,
        "rounds": rounds,
    }
    _common.write_report(RESULTS, report)
    print(json.dumps({"median": summary}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
