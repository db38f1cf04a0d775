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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from upbit_fanout.collector.status import HEARTBEAT_INTERVAL
from upbit_fanout.commands.status import add_redis_arguments, gather, redis_target
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.redact import redact_url

HELP = "Exit 0 if events reach Redis subscribers (canary) and the upstream is up, else 1 with why."

_LIVE = ("connected", "subscribed")
_DOWN = ("connecting", "reconnecting")
MAX_AGE = 30.0
MAX_DELIVERY_AGE = 15.0
MAX_UPSTREAM_DOWN = 30.0
STALE_STATUS = 3 * HEARTBEAT_INTERVAL
"""A status hash older than this was left by a collector that is gone or cut off from Redis."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_redis_arguments(parser)
    parser.add_argument(
        "--max-age",
        type=float,
        default=MAX_AGE,
        metavar="SECONDS",
        help="no event AND no upstream keep-alive for this long while topics are subscribed is "
        f"unhealthy (default {MAX_AGE:g})",
    )
    parser.add_argument(
        "--max-delivery-age",
        type=float,
        default=MAX_DELIVERY_AGE,
        metavar="SECONDS",
        help="the last canary must have come back through Redis within this "
        f"(default {MAX_DELIVERY_AGE:g})",
    )
    parser.add_argument(
        "--max-upstream-down",
        type=float,
        default=MAX_UPSTREAM_DOWN,
        metavar="SECONDS",
        help="a wanted upstream connection may be down at most this long "
        f"(default {MAX_UPSTREAM_DOWN:g})",
    )
    parser.add_argument("--json", action="store_true", help='{"healthy", "reason", "thresholds"}')


def thresholds_of(args: argparse.Namespace) -> dict[str, float]:
    return {
        "max_age": args.max_age,
        "max_delivery_age": args.max_delivery_age,
        "max_upstream_down": args.max_upstream_down,
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    url, keys = redis_target(args, settings)
    thresholds = thresholds_of(args)
    try:
        report = asyncio.run(gather(url, keys))
    except (RedisError, OSError) as exc:
        healthy, reason = False, f"Redis unreachable at {redact_url(url)}: {exc}"
    else:
        healthy, reason = judge(report, **thresholds)
    if args.json:
        print(json.dumps({"healthy": healthy, "reason": reason, "thresholds": thresholds}))
    else:
        print(f"{'ok' if healthy else 'unhealthy'}: {reason}")
    return 0 if healthy else 1


def judge(
    report: Mapping[str, Any],
    *,
    max_age: float = MAX_AGE,
    max_delivery_age: float = MAX_DELIVERY_AGE,
    max_upstream_down: float = MAX_UPSTREAM_DOWN,
    now: float | None = None,
) -> tuple[bool, str]:
    """(healthy, one-line reason) for a ``status`` report (see upbit_fanout.commands.status).

    ``now`` is the wall-clock time in seconds (default: ``time.time()``): the ages of the
    collector's ms timestamps are measured from it.
    """
    clock = time.time() if now is None else now

    def age(name: str) -> float | None:
        value = fields.get(name)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return None
        return max(0.0, clock - value / 1000)

    prefix = report.get("key_prefix", "?")
    collector = report.get("collector")
    if not collector:
        return False, f"no collector status in Redis (is a collector running on prefix {prefix!r}?)"
    fields: Mapping[str, Any] = collector
    state = str(collector.get("state", "?"))
    error = collector.get("last_error") or ""
    error_note = f" (last error: {error})" if error else ""
    if not report.get("collector_listening"):
        return False, f"no collector is running (its last recorded state was {state!r})"
    status_age = report.get("status_age_seconds")
    if status_age is not None and status_age > STALE_STATUS:
        return False, (
            f"the collector's status was last written {status_age:.0f} s ago (state {state!r}): "
            "it is stuck or cannot write to Redis"
        )
    if state == "stopped":
        return False, f"collector is stopped{error_note}"
    if "role" in collector:  # older collectors have no canary: judged on the rest
        delivered = age("canary_ok_at")
        canary_error = collector.get("canary_error") or ""
        why = f" ({canary_error})" if canary_error else error_note
        if delivered is None:
            since = age("leader_since") or age("started_at")
            if since is None or since > max_delivery_age:
                started = "" if since is None else f" in the {since:.0f} s since it took the lead"
                return False, (
                    f"delivery not confirmed: no canary came back through Redis{started} "
                    f"(--max-delivery-age {max_delivery_age:g} s); consumers may receive "
                    f"nothing{why}"
                )
        elif delivered > max_delivery_age:
            return False, (
                f"delivery not confirmed: the last canary came back through Redis "
                f"{delivered:.1f} s ago (more than --max-delivery-age {max_delivery_age:g} s); "
                f"consumers may receive nothing{why}"
            )
    private_down = age("private_upstream_down_since")
    enabled = collector.get("private") == "enabled"
    if enabled and private_down is not None and private_down > max_upstream_down:
        return False, (
            f"the private upstream (API keys set) has been down for {private_down:.0f} s "
            f"(more than --max-upstream-down {max_upstream_down:g} s){error_note}"
        )
    union = report.get("union") or []
    if state == "idle" or (state in _LIVE and not union):
        return True, "connected/idle: no topics requested"
    if state in _DOWN:
        down = age("upstream_down_since")
        if down is None:
            return False, f"collector is {state}{error_note}"
        if down > max_upstream_down:
            return False, (
                f"the upstream has been down for {down:.0f} s (more than --max-upstream-down "
                f"{max_upstream_down:g} s) while {len(union)} topic(s) are wanted{error_note}"
            )
        return True, (
            f"{state} for {down:.1f} s (within --max-upstream-down {max_upstream_down:g} s)"
            f"{error_note}"
        )
    if state not in _LIVE:
        return False, f"collector is {state}{error_note}"
    event_age = report.get("last_event_age_seconds")
    alive = age("upstream_alive_at")
    if event_age is not None and event_age <= max_age:
        return True, f"{state}: {len(union)} topic(s), last event {event_age:.1f} s ago"
    if alive is not None and alive <= max_age:
        last = "none yet" if event_age is None else f"{event_age:.1f} s ago"
        return True, (
            f"{state}: {len(union)} topic(s), quiet market (last event {last}, upstream "
            f"keep-alive {alive:.1f} s ago)"
        )
    if event_age is None:
        connected = age("connected_since")
        if connected is not None and connected <= max_age:
            return True, f"{state}: {len(union)} topic(s), waiting for the first event"
        return False, f"collector is {state} for {len(union)} topic(s) but no event arrived yet"
    return False, (
        f"last event {event_age:.1f} s ago and no upstream keep-alive either (more than "
        f"--max-age {max_age:g} s) for {len(union)} topic(s){error_note}"
    )
