"""``upbit-fanout demo``: the whole thing on one machine, offline, in one command (``make run``).

It starts the local Upbit emulator on a free loopback port and a collector pointed at it (Redis
from ``--redis-url`` or ``UPBIT_FANOUT_REDIS_URL``), prints how to watch it with ``redis-cli``,
and keeps a demo client's intent alive (``--topics``, heartbeated like a real client) until
Ctrl-C. Then the intent is released, the collector stops (status ``stopped``) and it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from upbit_fanout.collector import Collector
from upbit_fanout.commands.collector import collector_options
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.connection import redis_from_url
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import heartbeat_commands, release_commands
from upbit_fanout.subscriptions.redact import redact_url
from upbit_fanout.subscriptions.topics import split_valid

HELP = "Run an offline demo: the Upbit emulator, a collector and a demo intent, until Ctrl-C."

DEFAULT_TOPICS = "ticker:KRW-BTC,trade:KRW-BTC,orderbook:KRW-BTC.5"
CLIENT_ID = "demo"
LEASE_SECONDS = 10.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: UPBIT_FANOUT_REDIS_URL)")
    parser.add_argument(
        "--topics",
        default=DEFAULT_TOPICS,
        help=f"comma-separated topics the demo client wants (default {DEFAULT_TOPICS}); "
        "an empty string seeds nothing",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="emulated market events per second (default 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="emulator seed (default 0)")


def instructions(keys: Keys, redis_url: str, topics: list[str], upstream: str) -> str:
    """What the demo prints: how to watch and how to be a client with redis-cli alone."""
    first = "ticker:KRW-BTC" if "ticker:KRW-BTC" in topics or not topics else topics[0]
    cli = f"redis-cli -u {redis_url}"
    lines = [
        f"upbit-fanout demo: emulator at {upstream}, Redis at {redis_url}",
        "",
        "Watch the events and the collector:",
        f"  {cli} SUBSCRIBE {keys.channel(first)}",
        f"  {cli} HGETALL {keys.status}",
        f"  {cli} SMEMBERS {keys.union}",
        f"  {cli} SUBSCRIBE {keys.notices}",
        "",
        "Be a client yourself (an intent is a SET with a TTL):",
        f"  {cli} SADD {keys.intents('me')} ticker:KRW-ETH",
        f"  {cli} EXPIRE {keys.intents('me')} 30",
        f"  {cli} SUBSCRIBE {keys.channel('ticker:KRW-ETH')}",
        "",
        f"Demo intent ({keys.intents(CLIENT_ID)}): {', '.join(topics) if topics else '(none)'}",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_main(args, settings))


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    from upbit_fanout.emulator import Emulator  # noqa: PLC0415 - builds a market universe; only the demo needs it

    topics, invalid = split_valid(t.strip() for t in args.topics.split(",") if t.strip())
    if invalid:
        for text, reason in invalid.items():
            print(f"upbit-fanout demo: invalid topic {text!r}: {reason}", file=sys.stderr)
        return 2
    names = sorted(str(topic) for topic in topics)
    redis_url = args.redis_url or settings.redis_url
    options = collector_options(settings)
    keys: Keys = options["keys"]
    # The emulator has no account keys of ours: private topics would only be refused.
    options.update(access_key=None, secret_key=None, leader_lease=None)

    redis = redis_from_url(redis_url)
    try:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            print(
                f"upbit-fanout demo: cannot reach Redis at {redact_url(redis_url)} ({exc}).\n"
                "Start one (`redis-server`, or `docker compose up -d redis`) or pass --redis-url.",
                file=sys.stderr,
            )
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            async with (
                Emulator(port=0, seed=args.seed, rate=args.rate) as emulator,
                Collector(redis=redis, upstream_url=emulator.public_url, **options) as collector,
            ):
                print(
                    instructions(keys, redact_url(redis_url), names, emulator.public_url),
                    flush=True,
                )
                heartbeat = asyncio.create_task(_heartbeat(redis, keys, names, stop))
                try:
                    await stop.wait()
                finally:
                    heartbeat.cancel()
                    await asyncio.gather(heartbeat, return_exceptions=True)
                    await collector.aclose()  # first, so the release is not acted upon
                    await _release(redis, keys, bool(names))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await redis.aclose()
    print("upbit-fanout demo: stopped", flush=True)
    return 0


async def _heartbeat(
    redis: aioredis.Redis, keys: Keys, topics: list[str], stop: asyncio.Event
) -> None:
    """Keep the demo intent alive, as the client library does (a third of the lease)."""
    if not topics:
        return
    replace = True
    while not stop.is_set():
        try:
            async with redis.pipeline(transaction=True) as pipe:
                for command in heartbeat_commands(
                    keys, CLIENT_ID, topics, LEASE_SECONDS, replace=replace
                ):
                    pipe.execute_command(*command)
                if replace:  # tell the collector at once (it would also see it by itself)
                    pipe.publish(keys.control, CLIENT_ID)
                await pipe.execute()
            replace = False
        except (RedisError, OSError):
            replace = True  # Redis may have lost the key: write it whole next time
        await asyncio.sleep(LEASE_SECONDS / 3)


async def _release(redis: aioredis.Redis, keys: Keys, had_topics: bool) -> None:
    if not had_topics:
        return
    try:
        async with redis.pipeline(transaction=True) as pipe:
            for command in release_commands(keys, CLIENT_ID):
                pipe.execute_command(*command)
            await pipe.execute()
    except (RedisError, OSError):
        pass
