"""Cost of a private stream entry: the publish script with and without the identity check.

    .venv/bin/python bench/private_streams.py [--events 20000] [--batch 50] [--redis-url URL]

Publishes ``--events`` myOrder items (a real sample payload, a fresh identity each) through
``collector.publisher.Publisher`` in batches of ``--batch``, three ways: ``plain`` (no identity:
XADD only), ``dedupe`` (identity checked in ``P:stream:myOrder:seen``: ZADD NX + trim + PEXPIRE +
XADD), and ``duplicates`` (the same items again: every one refused by the check). Prints
entries/s and the wall time per entry for each, and writes bench/results/private_streams.json.
Keys live under a throwaway prefix and are deleted afterwards. Use a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import time
import uuid
from pathlib import Path

import _common
import redis.asyncio as aioredis

from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.subscriptions.keys import Keys

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "upbit-samples" / "myOrder.jsonl"


async def run(url: str, events: int, batch: int) -> dict[str, object]:
    redis = aioredis.Redis.from_url(url)
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    payload = SAMPLE.read_text().splitlines()[0].encode()
    idents = [f"myOrder|{uuid.uuid4()}|wait|0" for _ in range(events)]
    results: dict[str, object] = {}
    try:
        for mode in ("plain", "dedupe", "duplicates"):
            publisher = Publisher(redis, keys, stream_maxlen=events)
            items = [
                Outgoing(
                    "myOrder:KRW-BTC",
                    payload,
                    "myOrder",
                    private=True,
                    publish=False,
                    identity=None if mode == "plain" else idents[n],
                )
                for n in range(events)
            ]
            start = time.perf_counter()
            for i in range(0, events, batch):
                await publisher.publish(items[i : i + batch])
            elapsed = time.perf_counter() - start
            results[mode] = {
                "entries_per_s": round(events / elapsed),
                "us_per_entry": round(elapsed / events * 1e6, 2),
                "appended": publisher.stream_entries,
                "refused": publisher.stream_duplicates,
            }
            print(f"{mode:<11} {events / elapsed:>10,.0f} entries/s  {results[mode]}")
    finally:
        await _common.delete_prefix(redis, keys.prefix)
        await redis.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    results = asyncio.run(run(args.redis_url, args.events, args.batch))
    out = Path(__file__).resolve().parent / "results" / "private_streams.json"
    out.write_text(
        json.dumps(
            {
                "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()} {platform.python_version()}",
                "events": args.events,
                "batch": args.batch,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
