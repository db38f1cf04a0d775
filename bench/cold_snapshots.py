"""What a cold snapshot costs: from REST (the leader's ``P:snapshot``) against a transient intent.

Runs the emulator and a collector in this process, a client with one live subscription
(``trade:KRW-BTC``), then ``--count`` sequential ``snapshot()`` calls of topics nobody streams,
twice in the same run: once with ``rest_snapshots=True`` (the default) and once with it off (the
transient-intent way, the baseline). For each it prints and writes to
``bench/results/cold_snapshots.json``: the WebSocket messages the emulator received during the
snapshots, the REST calls it answered, the median and worst latency of one ``snapshot()``, and
how long a live subscription made right after them took to be sent upstream.

    .venv/bin/python bench/cold_snapshots.py [--count 12] [--messages-per-min 20]

``--messages-per-min`` is the emulator's (and the collector's) per-connection budget, lowered
from Upbit's 100 so that the baseline's cost shows within a short run. Uses the Redis at
``--redis-url`` (default 127.0.0.1:6379) under a key prefix of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import _common
import redis.asyncio as aioredis

from upbit_fanout.client import FanoutClient
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cold_snapshots.json"
CODES = ("KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-USDT", "KRW-TRX", "KRW-LINK")


def topics(count: int) -> list[str]:
    names = [f"{kind}:{code}" for code in CODES for kind in ("ticker", "orderbook", "trade")]
    return (names * (count // len(names) + 1))[:count]


async def one_mode(redis_url: str, *, rest: bool, count: int, per_min: int) -> dict[str, Any]:
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with (
            Emulator(port=0, seed=7, rate=200, messages_per_min=per_min) as emu,
            Collector(
                redis=redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                max_per_minute=per_min,
                rest_snapshots=rest,
            ) as collector,
            FanoutClient(redis_url, key_prefix=keys.prefix) as client,
        ):
            await client.subscribe("trade:KRW-BTC")
            await collector.wait_subscribed(lambda union: "trade:KRW-BTC" in union, timeout=30)
            await emu.wait_received(1, within=30)
            messages_before = emu.received_total
            rest_before = emu.counters["quotation_requests"]
            latencies: list[float] = []
            kinds: dict[str, int] = {}
            for name in topics(count):
                started = time.perf_counter()
                event = await client.snapshot(name, timeout=120)
                latencies.append(time.perf_counter() - started)
                kind = event.stream_type or "?"
                kinds[kind] = kinds.get(kind, 0) + 1
            messages = emu.received_total - messages_before
            started = time.perf_counter()
            await client.subscribe("ticker:KRW-BTC")
            await collector.wait_subscribed(lambda union: "ticker:KRW-BTC" in union, timeout=120)
            live_after = time.perf_counter() - started
            return {
                "websocket_messages": messages,
                "rest_calls": emu.counters["quotation_requests"] - rest_before,
                "answered_by": kinds,
                "snapshot_median_ms": round(statistics.median(latencies) * 1000, 1),
                "snapshot_worst_ms": round(max(latencies) * 1000, 1),
                "next_live_subscription_ms": round(live_after * 1000, 1),
            }
    finally:
        await _common.delete_prefix(redis, keys.prefix)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--messages-per-min", type=int, default=20)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    figures = {
        mode: asyncio.run(
            one_mode(
                args.redis_url,
                rest=mode == "rest",
                count=args.count,
                per_min=args.messages_per_min,
            )
        )
        for mode in ("rest", "transient_intent")
    }
    for mode, values in figures.items():
        for name, value in values.items():
            print(f"{mode:18} {name:28} {value}")
    result = {
        "benchmark": "cold_snapshots",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "count": args.count,
        "messages_per_min": args.messages_per_min,
        **figures,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
