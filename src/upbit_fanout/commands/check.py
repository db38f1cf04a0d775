"""``upbit-fanout check``: exit 0 when the collector is healthy, 1 otherwise, with one line saying
why (for container health checks and cron).

Healthy means: a collector is running (someone listens on ``P:control``, which a running
collector always does, and its ``P:status`` was rewritten within :data:`STALE_STATUS` seconds:
the collector rewrites it at least every ``HEARTBEAT_INTERVAL`` even when nothing changes), its
state is ``connected``/``subscribed`` with a fresh last event
(``last_event_at`` within ``--max-age`` seconds), or it has nothing to do (state ``idle``, or
an empty union). Redis unreachable, no status, a stopped or reconnecting collector, or stale
events are unhealthy. The rules are :func:`judge`, a pure function.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from upbit_fanout.collector.status import HEARTBEAT_INTERVAL
from upbit_fanout.commands.status import add_redis_arguments, gather, redis_target
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.redact import redact_url

HELP = "Exit 0 if the collector is connected with fresh events (or idle), else 1 with a reason."

_LIVE = ("connected", "subscribed")
STALE_STATUS = 3 * HEARTBEAT_INTERVAL
"""A status hash older than this was left by a collector that is gone or cut off from Redis."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_redis_arguments(parser)
    parser.add_argument(
        "--max-age",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="the last event may be at most this old while topics are subscribed (default 30)",
    )
    parser.add_argument(
        "--private-max-down",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with API keys: the private socket may be down at most this long "
        "(default: UPBIT_FANOUT_PRIVATE_DOWN_THRESHOLD, 60)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    url, keys = redis_target(args, settings)
    try:
        report = asyncio.run(gather(url, keys))
    except (RedisError, OSError) as exc:
        print(f"unhealthy: Redis unreachable at {redact_url(url)}: {exc}")
        return 1
    healthy, reason = judge(report, max_age=args.max_age)
    max_down = args.private_max_down
    if max_down is None:
        max_down = settings.private_down_threshold
    private = judge_private(report, max_down=max_down)
    if healthy and private is not None:
        healthy, reason = private
    print(f"{'ok' if healthy else 'unhealthy'}: {reason}")
    return 0 if healthy else 1


def judge_private(report: Mapping[str, Any], *, max_down: float) -> tuple[bool, str] | None:
    """The private rule: with API keys configured (``private`` is ``enabled``), the private
    socket down for more than ``max_down`` seconds is unhealthy. None: the rule has no say."""
    collector = report.get("collector") or {}
    if collector.get("private") != "enabled":
        return None
    down = report.get("private_down_seconds")
    if down is None or down <= max_down:
        return None
    return False, (
        f"the private socket has been down for {down:.0f} s (more than --private-max-down "
        f"{max_down:g} s): order and balance events are not recorded live"
    )


def judge(report: Mapping[str, Any], *, max_age: float) -> tuple[bool, str]:
    """(healthy, one-line reason) for a ``status`` report (see upbit_fanout.commands.status)."""
    prefix = report.get("key_prefix", "?")
    collector = report.get("collector")
    if not collector:
        return False, f"no collector status in Redis (is a collector running on prefix {prefix!r}?)"
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
    union = report.get("union") or []
    if state == "idle" or (state in _LIVE and not union):
        return True, "connected/idle: no topics requested"
    if state not in _LIVE:
        return False, f"collector is {state}{error_note}"
    age = report.get("last_event_age_seconds")
    if age is None:
        return False, f"collector is {state} for {len(union)} topic(s) but no event arrived yet"
    if age > max_age:
        return False, (
            f"last event {age:.1f} s ago (more than --max-age {max_age:g} s) for "
            f"{len(union)} topic(s){error_note}"
        )
    return True, f"{state}: {len(union)} topic(s), last event {age:.1f} s ago"
