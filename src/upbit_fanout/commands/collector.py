"""``upbit-fanout collector``: run the collector until SIGINT or SIGTERM (then exit 0).

Settings come from ``UPBIT_FANOUT_*`` variables (see :mod:`upbit_fanout.settings` and
docs/collector.md); ``--redis-url``, ``--upstream`` and ``--private-upstream`` override them. When
only ``--upstream`` is given and it ends with ``/websocket/v1``, the private URL is that plus
``/private`` (the emulator's layout, and Upbit's). Signal handlers live here and only here; the
API keys are never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from upbit_fanout.collector import Collector
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.keys import Keys

HELP = "Run the collector: one Upbit subscription for every intent in Redis, events republished."

_PUBLIC_SUFFIX = "/websocket/v1"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: UPBIT_FANOUT_REDIS_URL)")
    parser.add_argument(
        "--upstream",
        metavar="WS_URL",
        help="public WebSocket URL (default: UPBIT_FANOUT_UPBIT_WS_URL)",
    )
    parser.add_argument(
        "--private-upstream",
        metavar="WS_URL",
        help="private WebSocket URL (default: UPBIT_FANOUT_UPBIT_PRIVATE_WS_URL, or derived "
        "from --upstream)",
    )
    parser.add_argument("--collector-id", help="name in P:status and P:leader (default: host-pid)")


def private_url(args: argparse.Namespace, settings: Settings) -> str | None:
    """The private URL: ``--private-upstream``; else derived from ``--upstream`` when given; else
    the setting; else derived from the public setting. None when nothing fits."""
    if getattr(args, "private_upstream", None):
        return str(args.private_upstream)
    upstream = getattr(args, "upstream", None)
    if not upstream and settings.upbit_private_ws_url:
        return settings.upbit_private_ws_url
    public = str(upstream or settings.upbit_ws_url).rstrip("/")
    if public.endswith(_PUBLIC_SUFFIX):
        return public + "/private"
    return None


def collector_options(settings: Settings) -> dict[str, Any]:
    """The :class:`collector.Collector` keyword arguments that come from the settings."""
    return {
        "keys": Keys(settings.key_prefix),
        "access_key": _secret(settings.access_key),
        "secret_key": _secret(settings.secret_key),
        "codec": settings.codec,
        "sweep_interval": settings.sweep_interval,
        "ping_interval": settings.ping_interval,
        "ping_timeout": settings.ping_timeout,
        "max_per_second": settings.max_messages_per_second,
        "max_per_minute": settings.max_messages_per_minute,
        "connect_per_second": settings.connect_per_second,
        "backoff_initial": settings.backoff_initial,
        "backoff_max": max(settings.backoff_max, settings.backoff_initial),
        "queue_size": settings.queue_size,
        "stream_maxlen": settings.private_stream_maxlen,
        "record_private": settings.record_private,
        "rest_url": settings.upbit_rest_url or None,
        "reconcile_lookback": settings.reconcile_lookback,
        "leader_lease": settings.leader_lease or None,
        "collector_id": settings.collector_id,
    }


def _secret(value: SecretStr | None) -> str | None:
    """The secret's text; None when unset or empty (compose passes empty variables)."""
    text = value.get_secret_value() if value is not None else ""
    return text or None


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_main(args, settings))


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    options = collector_options(settings)
    if args.collector_id:
        options["collector_id"] = args.collector_id
    redis = aioredis.Redis.from_url(args.redis_url or settings.redis_url)
    try:
        collector = Collector(
            redis=redis,
            upstream_url=args.upstream or settings.upbit_ws_url,
            private_url=private_url(args, settings),
            **options,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, collector.stop)
        try:
            await collector.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await redis.aclose()
    return 0
