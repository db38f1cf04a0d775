"""DEFAULT against SIMPLE frames upstream: bytes received and collector CPU per event.

    .venv/bin/python bench/upstream_format.py [--seconds 5] [--rounds 3] [--markets 40]
                                              [--rate 3000] [--redis-url redis://127.0.0.1:6379/0]

The emulator runs in a subprocess of its own (``upbit-fanout emulator --rate R``, the same seed
every time) so that only the collector's work is in this process. A real
:class:`collector.Collector` (json codec) subscribes to ticker, trade and 30-unit orderbook of
the first ``--markets`` KRW markets, once with ``upstream_format="DEFAULT"`` and once with
``"SIMPLE"``, alternating for ``--rounds`` rounds of ``--seconds`` each after a 1 s warm-up, in
one run. Per round: events received (``events_total``), payload bytes (the WebSocket messages as
the collector reads them, after decompression), wire bytes (what the socket delivered, with
permessage-deflate as negotiated by default), and this process's CPU time per event. Payloads
published to Redis carry DEFAULT names either way (tests/collector/test_upstream_protocol.py
checks the bytes are the same). The Redis at ``--redis-url`` is used under a key prefix of the
bench's own, deleted afterwards. Results: bench/results/upstream_format.json (medians of rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from upbit_fanout.collector import Collector
from upbit_fanout.collector import transport_websockets as upstream_module
from upbit_fanout.subscriptions.keys import Keys

RESULTS = Path(__file__).parent / "results" / "upstream_format.json"

_wire = {"bytes": 0}


class _CountingConnection(upstream_module._KeepAliveConnection):
    """Counts every byte the socket delivers (compressed, as on the wire)."""

    def data_received(self, data: bytes) -> None:
        _wire["bytes"] += len(data)
        super().data_received(data)


upstream_module._KeepAliveConnection = _CountingConnection  # type: ignore[misc]


async def _start_emulator(rate: float) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read line by line
        [sys.executable, "-m", "upbit_fanout.cli", "emulator", "--port", "0", "--seed", "7",
         "--rate", str(rate)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    return process, line.decode().strip()


async def _round(
    redis_url: str, base: str, fmt: str, topics: list[str], seconds: float
) -> dict[str, Any]:
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with Collector(
            redis=redis,
            keys=keys,
            upstream_url=f"{base}/websocket/v1",
            upstream_format=fmt,  # type: ignore[arg-type]
            validate_markets=False,
            leader_lease=None,
        ) as collector:
            await redis.sadd(keys.intents("bench"), *topics)
            await redis.expire(keys.intents("bench"), 120)
            await collector.wait_subscribed(lambda u: len(u) == len(topics), timeout=20)
            await asyncio.sleep(1.0)  # snapshots and warm-up out of the window
            payload = {"bytes": 0}
            handle = collector.public.handle

            def counting(data: str | bytes) -> None:
                payload["bytes"] += len(data)
                handle(data)

            collector.public.handle = counting  # type: ignore[method-assign]
            events0 = collector.counters["events_total"]
            wire0 = _wire["bytes"]
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            events = collector.counters["events_total"] - events0
            wire = _wire["bytes"] - wire0
            published = collector.public.router.counters()
        return {
            "format": fmt,
            "seconds": round(wall, 3),
            "events": events,
            "events_per_second": round(events / wall, 1),
            "payload_bytes_per_event": round(payload["bytes"] / max(events, 1), 1),
            "wire_bytes_per_event": round(wire / max(events, 1), 1),
            "cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 2),
            "passthrough": published["passthrough"],
            "encoded": published["encoded"],
        }
    finally:
        async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


def _median(rounds: list[dict[str, Any]], field: str) -> float:
    return round(float(statistics.median(r[field] for r in rounds)), 2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markets", type=int, default=40)
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    process, base = await _start_emulator(args.rate)
    try:
        from upbit_fanout.emulator.markets import default_markets  # noqa: PLC0415

        codes = [m.code for m in default_markets() if m.code.startswith("KRW-")][: args.markets]
        topics = [f"{kind}:{code}" for code in codes for kind in ("ticker", "trade", "orderbook")]
        rounds: dict[str, list[dict[str, Any]]] = {"DEFAULT": [], "SIMPLE": []}
        for index in range(args.rounds):
            for fmt in ("DEFAULT", "SIMPLE") if index % 2 == 0 else ("SIMPLE", "DEFAULT"):
                result = await _round(args.redis_url, base, fmt, topics, args.seconds)
                rounds[fmt].append(result)
                print(json.dumps(result), flush=True)
    finally:
        process.terminate()
        process.wait(10)

    fields = ("events_per_second", "payload_bytes_per_event", "wire_bytes_per_event",
              "cpu_us_per_event")  # fmt: skip
    summary = {fmt: {f: _median(rs, f) for f in fields} for fmt, rs in rounds.items()}
    ratios = {
        f"simple_over_default_{f}": round(summary["SIMPLE"][f] / summary["DEFAULT"][f], 3)
        for f in fields[1:]
    }
    report = {
        "bench": "upstream_format",
        "command": "python bench/upstream_format.py " + " ".join(sys.argv[1:]),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "topics": len(topics),
        "emulator_rate": args.rate,
        "median": summary,
        **ratios,
        "rounds": rounds,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"median": summary, **ratios}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
