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
import sys
from typing import TYPE_CHECKING, Any

from upbit_fanout.validate import arg, client_id, host, port, redis_url, ws_url

if TYPE_CHECKING:
    from pydantic import SecretStr

    from upbit_fanout.settings import Settings

HELP = "Run the collector: one Upbit subscription for every intent in Redis, events republished."

_PUBLIC_SUFFIX = "/websocket/v1"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", type=arg(redis_url), help="Redis URL (default: UPBIT_FANOUT_REDIS_URL)"
    )
    parser.add_argument(
        "--upstream",
        metavar="WS_URL",
        type=arg(ws_url),
        help="public WebSocket URL (default: UPBIT_FANOUT_UPBIT_WS_URL)",
    )
    parser.add_argument(
        "--private-upstream",
        metavar="WS_URL",
        type=arg(ws_url),
        help="private WebSocket URL (default: UPBIT_FANOUT_UPBIT_PRIVATE_WS_URL, or derived "
        "from --upstream)",
    )
    parser.add_argument(
        "--collector-id",
        type=arg(client_id),
        help="name in P:status and P:leader (default: host-pid)",
    )
    parser.add_argument(
        "--metrics-port",
        type=arg(port),
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port (default: "
        "UPBIT_FANOUT_METRICS_PORT; 0 or unset: off)",
    )
    parser.add_argument(
        "--metrics-host",
        type=arg(host),
        metavar="HOST",
        help="address the metrics port binds to (default: UPBIT_FANOUT_METRICS_HOST, 127.0.0.1)",
    )


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
    from upbit_fanout.collector.intents import Limits  # noqa: PLC0415 - kept off --help's path

    return {
        "key_prefix": settings.key_prefix,
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
        "backoff_fast_max": settings.backoff_fast_max,
        "queue_size": settings.queue_size,
        "stream_maxlen": settings.private_stream_maxlen,
        "record_private": settings.record_private,
        "rest_url": settings.upbit_rest_url or None,
        "reconcile_lookback": settings.reconcile_lookback,
        "rest_snapshots": settings.rest_snapshots,
        "backfill_max_trades": settings.backfill_max_trades,
        "snapshot_requests_per_client": settings.snapshot_requests_per_client,
        "leader_lease": settings.leader_lease or None,
        "collector_id": settings.collector_id,
        "redis_grace": settings.redis_grace,
        "upstream_format": settings.upstream_format,
        "upstream_transport": settings.upstream_transport,
        "read_coalesce": settings.read_coalesce,
        "verify_subscriptions": settings.verify_subscriptions,
        "verify_delay": settings.verify_delay,
        "warm_seconds": settings.warm_seconds,
        "limits": Limits(
            max_topics_per_client=settings.max_topics_per_client,
            max_union_topics=settings.max_union_topics,
            max_request_bytes=settings.max_request_bytes,
            max_topic_length=settings.max_topic_length,
            max_client_id_length=settings.max_client_id_length,
            max_lease=settings.max_lease,
            lease_grace=settings.lease_grace,
            invalid_examples=settings.invalid_examples,
            max_invalid_clients=settings.max_invalid_clients,
        ),
        "validate_markets": settings.validate_markets,
        "markets_url": settings.markets_url or None,
        "markets_refresh": settings.markets_refresh,
    }


def _secret(value: SecretStr | None) -> str | None:
    """The secret's text; None when unset or empty (compose passes empty variables)."""
    text = value.get_secret_value() if value is not None else ""
    return text or None


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.event_loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - extra fast, only when chosen
        except ImportError:
            print(
                "upbit-fanout collector: UPBIT_FANOUT_EVENT_LOOP=uvloop needs the uvloop package "
                "(pip install 'upbit-fanout[fast]'), which is not installed",
                file=sys.stderr,
            )
            return 2
        return int(uvloop.run(_main(args, settings)))
    return asyncio.run(_main(args, settings))


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    from upbit_fanout.collector import Collector  # noqa: PLC0415 - kept off --help's path
    from upbit_fanout.collector.metrics import MetricsServer  # noqa: PLC0415
    from upbit_fanout.collector.transport import (  # noqa: PLC0415
        TransportUnavailableError,
        load_transport,
    )
    from upbit_fanout.subscriptions.connection import open_redis  # noqa: PLC0415

    try:  # picows chosen but not installed: one line, before anything starts
        load_transport(settings.upstream_transport)
    except TransportUnavailableError as exc:
        print(f"upbit-fanout collector: {exc}", file=sys.stderr)
        return 2
    options = collector_options(settings)
    if args.collector_id:
        options["collector_id"] = args.collector_id
    redis = await open_redis(args.redis_url or settings.redis_url)
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
        metrics_port = args.metrics_port if args.metrics_port is not None else settings.metrics_port
        metrics = (
            MetricsServer(
                collector, host=args.metrics_host or settings.metrics_host, port=metrics_port
            )
            if metrics_port
            else None
        )
        try:
            if metrics is not None:
                await metrics.start()
            await collector.run()
        finally:
            if metrics is not None:
                await metrics.aclose()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await redis.aclose()
    return 0
