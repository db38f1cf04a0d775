"""``upbit-fanout check``: exit 0 when data reaches consumers, 1 otherwise, with one line saying
why (for container health checks and cron); ``--json`` prints ``{"healthy", "reason",
"thresholds"}`` instead.

Healthy means, in this order (:func:`judge`, a pure function of the ``status`` report and the
time):

1. a collector is running (someone listens on ``P:control``) and its ``P:status`` was rewritten
   within :data:`STALE_STATUS` seconds (it is rewritten at least every ``HEARTBEAT_INTERVAL``);
2. **delivery is confirmed**: the leader's canary, published through the same batch path as
   every event, came back on its own subscription within ``--max-delivery-age`` seconds
   (``canary_ok_at``; a new leader gets that long for its first one);
3. the private connection, when it is enabled (API keys set) and wanted, has not been down for
   more than ``--max-upstream-down`` seconds;
4. nothing is wanted (state ``idle``, or an empty union), or the public connection is up, or it
   has been down for at most ``--max-upstream-down`` seconds;
5. an event arrived within ``--max-age`` seconds, or, for a quiet market, the upstream's
   keep-alive pong did (``upstream_alive_at``): data silence alone is not a fault.

An intent key of the wrong type (or with an id outside the contract) is a client's fault: it is
mentioned, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

from upbit_fanout.commands.status import add_redis_arguments, gather, redis_target
from upbit_fanout.subscriptions.health import (
    MAX_AGE,
    MAX_DELIVERY_AGE,
    MAX_UPSTREAM_DOWN,
    judge,
)
from upbit_fanout.validate import arg, at_least

if TYPE_CHECKING:
    from upbit_fanout.settings import Settings

HELP = "Exit 0 if events reach Redis subscribers (canary) and the upstream is up, else 1 with why."


def configure(parser: argparse.ArgumentParser) -> None:
    add_redis_arguments(parser)
    parser.add_argument(
        "--max-age",
        type=arg(at_least(0.001, unit="s")),
        default=MAX_AGE,
        metavar="SECONDS",
        help="no event AND no upstream keep-alive for this long while topics are subscribed is "
        f"unhealthy (default {MAX_AGE:g})",
    )
    parser.add_argument(
        "--max-delivery-age",
        type=arg(at_least(0.001, unit="s")),
        default=MAX_DELIVERY_AGE,
        metavar="SECONDS",
        help="the last canary must have come back through Redis within this "
        f"(default {MAX_DELIVERY_AGE:g})",
    )
    parser.add_argument(
        "--max-upstream-down",
        type=arg(at_least(0.001, unit="s")),
        default=MAX_UPSTREAM_DOWN,
        metavar="SECONDS",
        help="a wanted upstream connection may be down at most this long "
        f"(default {MAX_UPSTREAM_DOWN:g})",
    )
    parser.add_argument(
        "--private-max-down",
        type=arg(at_least(0.001, unit="s")),
        default=None,
        metavar="SECONDS",
        help="with API keys: the private socket may be down at most this long; order and "
        "balance events are not recorded live meanwhile (default: "
        "UPBIT_FANOUT_PRIVATE_DOWN_THRESHOLD, 60)",
    )
    parser.add_argument("--json", action="store_true", help='{"healthy", "reason", "thresholds"}')


def thresholds_of(args: argparse.Namespace, settings: Settings) -> dict[str, float]:
    private = args.private_max_down
    return {
        "max_age": args.max_age,
        "max_delivery_age": args.max_delivery_age,
        "max_upstream_down": args.max_upstream_down,
        "max_private_down": settings.private_down_threshold if private is None else private,
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    from redis.exceptions import RedisError  # noqa: PLC0415 - kept off --help's path

    from upbit_fanout.subscriptions.redis_errors import describe_redis_error  # noqa: PLC0415

    url, keys = redis_target(args, settings)
    thresholds = thresholds_of(args, settings)
    try:
        report = asyncio.run(gather(url, keys))
    except (RedisError, OSError) as exc:
        healthy, reason = False, describe_redis_error(exc, url)
    else:
        healthy, reason = judge(report, **thresholds)
        bad_keys = report.get("bad_keys") or []
        if bad_keys:  # a client's fault, not the collector's: said, never a reason to fail
            reason += f"; {len(bad_keys)} bad intent key(s) ignored (see upbit-fanout status)"
    if args.json:
        print(json.dumps({"healthy": healthy, "reason": reason, "thresholds": thresholds}))
    else:
        print(f"{'ok' if healthy else 'unhealthy'}: {reason}")
    return 0 if healthy else 1
