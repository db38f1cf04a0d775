"""``upbit-fanout demo``: the whole thing on one machine, offline, in one command (``make run``).

It starts the local Upbit emulator on a free loopback port and a collector pointed at it (Redis
from ``--redis-url`` or ``UPBIT_FANOUT_REDIS_URL``), prints how to watch it with ``redis-cli``,
and keeps a demo client's intent alive (``--topics``, through :class:`FanoutClient`, as any
client would) until Ctrl-C. Then the client lets go of its lease, the collector stops (status
``stopped``) and it exits 0.

When nothing answers on that Redis URL (a fresh machine), the demo starts a Redis of its own on a
free loopback port (:mod:`upbit_fanout.localredis`: ``redis-server`` from ``PATH``, or the one of
the ``embedded`` extra), says so, prints its URL and stops it on exit. A Redis that answers but
refuses our password is an error, not a reason to start another.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import TYPE_CHECKING

from upbit_fanout.validate import arg, at_least, redis_url

if TYPE_CHECKING:
    from upbit_fanout.client import FanoutClient
    from upbit_fanout.localredis import LocalRedis
    from upbit_fanout.settings import Settings
    from upbit_fanout.subscriptions.keys import Keys

HELP = "Run an offline demo: the Upbit emulator, a collector and a demo intent, until Ctrl-C."

# SIGHUP too (the terminal closed): the demo must get to stopping the Redis it may have started.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_TOPICS = "ticker:KRW-BTC,trade:KRW-BTC,orderbook:KRW-BTC.5"
CLIENT_ID = "demo"
LEASE_SECONDS = 10.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        type=arg(redis_url),
        help="Redis URL (default: UPBIT_FANOUT_REDIS_URL); when nothing answers there, the demo "
        "starts a Redis of its own",
    )
    parser.add_argument(
        "--topics",
        default=DEFAULT_TOPICS,
        help=f"comma-separated topics the demo client wants (default {DEFAULT_TOPICS}); "
        "an empty string seeds nothing",
    )
    parser.add_argument(
        "--rate",
        type=arg(at_least(0)),
        default=20.0,
        help="emulated market events per second (default 20)",
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
    started = time.monotonic()
    from upbit_fanout.subscriptions.topics import split_valid  # noqa: PLC0415

    topics, invalid = split_valid(t.strip() for t in args.topics.split(",") if t.strip())
    if invalid:
        for text, reason in invalid.items():
            print(f"upbit-fanout demo: invalid topic {text!r}: {reason}", file=sys.stderr)
        return 2
    names = sorted(str(topic) for topic in topics)
    url = args.redis_url or settings.redis_url
    local: LocalRedis | None = None
    problem = asyncio.run(_redis_problem(url))
    if problem is not None:
        refused, description = problem
        if refused:  # something answers: starting another Redis would hide the mistake
            print(f"upbit-fanout demo: {description}", file=sys.stderr)
            return 1
        from upbit_fanout.localredis import (  # noqa: PLC0415
            LocalRedisUnavailableError,
            start_local_redis,
        )

        try:
            local = start_local_redis()
        except LocalRedisUnavailableError as exc:
            print(f"upbit-fanout demo: {description}; {exc}", file=sys.stderr)
            return 1
        print(
            f"upbit-fanout demo: {description}; started a Redis of its own ({local.source}, "
            f"stopped on exit) at {local.url}",
            flush=True,
        )
        url = local.url
    try:
        return asyncio.run(_main(args, settings, url, names, started))
    finally:
        if local is not None:
            local.stop()
            print(f"upbit-fanout demo: stopped its Redis at {local.url}", flush=True)


async def _redis_problem(url: str) -> tuple[bool, str] | None:
    """None when Redis answers at ``url``; else (refused our credentials, description)."""
    from redis.exceptions import RedisError  # noqa: PLC0415 - kept off --help's path

    from upbit_fanout.subscriptions.connection import redis_from_url  # noqa: PLC0415
    from upbit_fanout.subscriptions.redis_errors import (  # noqa: PLC0415
        describe_redis_error,
        is_auth_error,
    )

    client = redis_from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return is_auth_error(exc), describe_redis_error(exc, url)
    finally:
        await client.aclose()
    return None


async def _main(
    args: argparse.Namespace, settings: Settings, url: str, names: list[str], started: float
) -> int:
    # Imported here: `upbit-fanout --help` needs none of it.
    from upbit_fanout.client import FanoutClient  # noqa: PLC0415
    from upbit_fanout.collector import Collector  # noqa: PLC0415
    from upbit_fanout.commands.collector import collector_options  # noqa: PLC0415
    from upbit_fanout.emulator import Emulator  # noqa: PLC0415
    from upbit_fanout.subscriptions.connection import redis_from_url  # noqa: PLC0415
    from upbit_fanout.subscriptions.redact import redact_url  # noqa: PLC0415

    options = collector_options(settings)
    # The emulator has no account keys of ours: private topics would only be refused.
    options.update(access_key=None, secret_key=None, leader_lease=None)

    redis = redis_from_url(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with (
            Emulator(port=0, seed=args.seed, rate=args.rate) as emulator,
            Collector(redis=redis, upstream_url=emulator.public_url, **options) as collector,
        ):
            # the collector's names: on a Redis Cluster its own keys carry the {P} hash tag
            keys = collector.keys
            print(instructions(keys, redact_url(url), names, emulator.public_url), flush=True)
            client = FanoutClient(
                redis,
                client_id=CLIENT_ID,
                key_prefix=collector.key_prefix,
                lease_seconds=LEASE_SECONDS,
                queue_size=100,
                overflow="drop_oldest",  # the demo only reports the first event
            )
            async with client:  # its exit lets go of the lease
                if names:
                    await client.subscribe(*names)
                watch = asyncio.create_task(_first_event(client, started))
                try:
                    await stop.wait()
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                    await collector.aclose()  # first, so the release is not acted upon
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await redis.aclose()
    print("upbit-fanout demo: stopped", flush=True)
    return 0


async def _first_event(client: FanoutClient, started: float) -> None:
    """Say when the first event reached the demo client, then keep draining its buffer."""
    said = False
    async for item in client:
        if item.kind == "event" and not said:
            said = True
            seconds = time.monotonic() - started
            print(
                f"upbit-fanout demo: first event ({item.topic}) {seconds:.1f} s after start-up",
                flush=True,
            )
