"""What hostile intents cost the collector, and whether a normal client notices.

Starts the emulator in this process and ``upbit-fanout collector`` as a subprocess (its log to a
file), lets a normal client want ``ticker:KRW-BTC`` and counts its events on a Redis
subscription. Then, in one pipeline, the hostile writes: 100,000 valid-looking unknown codes in
one key, 100,000 junk members of 255 bytes in another, a 1 MB member, and ``--junk-keys`` keys
of 1,000 junk members each (every one of them parsed and refused). After ``--seconds`` it prints
and writes to ``bench/results/hostile_intents.json``:

- how long Redis took to take the pipeline, and the longest gap between the normal client's
  events after it (and during it: Redis itself is busy then);
- the union, the subscribe messages and upstream connections (nothing hostile sent, no reconnect);
- ``P:invalid`` fields and ``MEMORY USAGE``, ``invalid_intents``;
- the collector's log lines and bytes written meanwhile, the longest line;
- the collector's RSS before and after.

    .venv/bin/python bench/hostile_intents.py [--junk-keys 100] [--seconds 20]

Uses the Redis at ``--redis-url`` (default 127.0.0.1:6379) under a key prefix of its own, removed
afterwards. Before the limits, the same writes gave every client 0 events for 37 s, 100,000 log
lines (28 MB), 29 MB of ``P:invalid``, +100 MB RSS and a 2 MB log line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common
import redis.asyncio as aioredis

from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "hostile_intents.json"
COMMAND = Path(sys.executable).with_name("upbit-fanout")


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


async def run(redis_url: str, junk_keys: int, seconds: float, log_path: Path) -> dict[str, Any]:
    """The drill; the figures, with ``log_offset``: where the collector's log stood before."""
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with Emulator(port=0, seed=3, rate=300) as emu:
            env = {k: v for k, v in os.environ.items() if not k.startswith("UPBIT_FANOUT_")}
            env.update(UPBIT_FANOUT_KEY_PREFIX=keys.prefix, UPBIT_FANOUT_LEADER_LEASE="0")
            with log_path.open("wb") as log_file:
                process = await asyncio.create_subprocess_exec(
                    str(COMMAND), "collector", "--redis-url", redis_url, "--upstream",
                    emu.public_url, env=env, stderr=log_file,
                )  # fmt: skip
            try:
                return await _drill(
                    r, keys, emu, pid=process.pid, junk_keys=junk_keys, seconds=seconds
                )
            finally:
                process.terminate()
                await process.wait()
    finally:
        await _common.delete_prefix(r, keys.prefix)
        await r.aclose()


async def _drill(
    r: aioredis.Redis,
    keys: Keys,
    emu: Emulator,
    *,
    pid: int,
    junk_keys: int,
    seconds: float,
) -> dict[str, Any]:
    lease = int(seconds) + 60
    await r.sadd(keys.intents("good"), "ticker:KRW-BTC")
    await r.expire(keys.intents("good"), lease)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.channel("ticker:KRW-BTC"))
    arrivals: list[float] = []
    first = asyncio.Event()

    async def count() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                arrivals.append(time.monotonic())
                first.set()

    counter = asyncio.create_task(count())
    try:
        async with asyncio.timeout(30):
            await first.wait()
        await asyncio.sleep(3.0)  # let the market list load and the status settle
        log_offset = os.stat(f"/proc/{pid}/fd/2").st_size
        rss_before = rss_mb(pid)
        started = time.monotonic()
        async with r.pipeline(transaction=False) as pipe:
            hostile = [f"ticker:KRW-ZZ{n:07d}" for n in range(100_000)]
            junk = [f"junk-{n}-{'x' * 250}" for n in range(100_000)]
            for name, members in (("hostile", hostile), ("junk", junk)):
                for start in range(0, len(members), 10_000):
                    pipe.sadd(keys.intents(name), *members[start : start + 10_000])
                pipe.expire(keys.intents(name), lease)
            pipe.sadd(keys.intents("huge"), "ticker:KRW-" + "B" * 1_000_000)
            pipe.expire(keys.intents("huge"), lease)
            for n in range(junk_keys):
                pipe.sadd(keys.intents(f"junk{n:03d}"), *[f"junk{n}-{m}" for m in range(1000)])
                pipe.expire(keys.intents(f"junk{n:03d}"), lease)
            await pipe.execute()
        written = time.monotonic()
        await asyncio.sleep(seconds)
    finally:
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]

    def longest_gap(since: float) -> float:
        later = [t for t in arrivals if t >= since]
        return max((b - a for a, b in zip([since, *later], later, strict=False)), default=seconds)

    status = {k.decode(): v.decode() for k, v in (await r.hgetall(keys.status)).items()}
    return {
        "pipeline_seconds": round(written - started, 2),
        "good_client_events": len([t for t in arrivals if t >= started]),
        "longest_gap_seconds_after_pipeline": round(longest_gap(written), 2),
        "longest_gap_seconds_from_start": round(longest_gap(started), 2),
        "union": sorted(m.decode() for m in await r.smembers(keys.union)),
        "subscribe_messages": emu.counters["subscriptions"],
        "upstream_connections": emu.counters["connections"],
        "invalid_fields": await r.hlen(keys.invalid),
        "invalid_bytes": await r.memory_usage(keys.invalid),
        "invalid_intents": int(status.get("invalid_intents", "0")),
        "log_offset": log_offset,
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_mb(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--junk-keys", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--log", help="where the collector's log goes (default: a temporary file)")
    args = parser.parse_args()
    log_path = Path(args.log or tempfile.mkstemp(prefix="upbit-fanout-hostile-", suffix=".log")[1])
    figures = asyncio.run(run(args.redis_url, args.junk_keys, args.seconds, log_path))
    lines = log_path.read_bytes()[figures.pop("log_offset") :].decode(errors="replace")
    figures["log_lines"] = len(lines.splitlines())
    figures["log_bytes"] = len(lines.encode())
    figures["log_longest_line"] = max(map(len, lines.splitlines()), default=0)
    for name, value in figures.items():
        print(f"{name:38} {value}")
    result = {
        "benchmark": "hostile_intents",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "junk_keys": args.junk_keys,
        "seconds": args.seconds,
        **figures,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
