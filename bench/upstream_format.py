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
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import _common
import redis.asyncio as aioredis

from upbit_fanout.collector import Collector
from upbit_fanout.collector import transport_websockets as upstream_module
from upbit_fanout.subscriptions.keys import Keys

RESULTS = _common.RESULTS / "upstream_format.json"

_wire = {"bytes": 0}
_payload = {"bytes": 0}
_handle_many = upstream_module.Upstream.handle_many


class _CountingConnection(upstream_module._KeepAliveConnection):
    """Counts every byte the socket delivers (compressed, as on the wire)."""

    def data_received(self, data: bytes) -> None:
        _wire["bytes"] += len(data)
        super().data_received(data)


def _counting_handle_many(self: upstream_module.Upstream, batch: Iterable[str | bytes]) -> None:
    """Counts the messages' bytes as the collector reads them (after decompression). Patched
    into the class before any connection: a socket is handed its ``handle_many`` at connect."""
    batch = list(batch)
    _payload["bytes"] += sum(len(data) for data in batch)
    _handle_many(self, batch)


upstream_module._KeepAliveConnection = _CountingConnection  # type: ignore[misc]
upstream_module.Upstream.handle_many = _counting_handle_many  # type: ignore[method-assign]


async def _round(
    redis_url: str, base: str, fmt: str, topics: list[str], seconds: float
) -> dict[str, Any]:
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with Collector(
            redis=redis,
            key_prefix=keys.prefix,
            upstream_url=f"{base}/websocket/v1",
            upstream_format=fmt,  # type: ignore[arg-type]
            validate_markets=False,
            leader_lease=None,
        ) as collector:
            await redis.sadd(keys.intents("bench"), *topics)
            await redis.expire(keys.intents("bench"), 120)
            await collector.wait_subscribed(lambda u: len(u) == len(topics), timeout=20)
            await asyncio.sleep(1.0)  # snapshots and warm-up out of the window
            events0 = collector.counters["events_total"]
            wire0, payload0 = _wire["bytes"], _payload["bytes"]
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            events = collector.counters["events_total"] - events0
            wire, payload = _wire["bytes"] - wire0, _payload["bytes"] - payload0
            published = collector.public.router.counters()
        return {
            "format": fmt,
            "seconds": round(wall, 3),
            "events": events,
            "events_per_second": round(events / wall, 1),
            "payload_bytes_per_event": round(payload / max(events, 1), 1),
            "wire_bytes_per_event": round(wire / max(events, 1), 1),
            "cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 2),
            "passthrough": published["passthrough"],
            "encoded": published["encoded"],
        }
    finally:
        await _common.delete_prefix(redis, keys.prefix)
        await redis.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markets", type=int, default=40)
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    process, base = await _common.start_emulator_process(rate=args.rate, seed=7)
    try:
        from upbit_fanout.emulator.markets import default_markets  # noqa: PLC0415

        codes = [m.code for m in default_markets() if m.code.startswith("KRW-")][: args.markets]
        topics = [f"{kind}:{code}" for code in codes for kind in ("ticker", "trade", "orderbook")]
        rounds: dict[str, list[dict[str, Any]]] = {"DEFAULT": [], "SIMPLE": []}
        for fmt in _common.alternating(list(rounds), args.rounds):
            result = await _round(args.redis_url, base, fmt, topics, args.seconds)
            rounds[fmt].append(result)
            print(json.dumps(result), flush=True)
    finally:
        _common.stop_process(process)

    fields = ("events_per_second", "payload_bytes_per_event", "wire_bytes_per_event",
              "cpu_us_per_event")  # fmt: skip
    summary = _common.medians(rounds, fields, 2)
    ratios = {
        f"simple_over_default_{f}": round(summary["SIMPLE"][f] / summary["DEFAULT"][f], 3)
        for f in fields[1:]
    }
    report = {
        **_common.report_head("upstream_format"),
        "topics": len(topics),
        "emulator_rate": args.rate,
        "median": summary,
        **ratios,
        "rounds": rounds,
    }
    _common.write_report(RESULTS, report)
    print(json.dumps({"median": summary, **ratios}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
