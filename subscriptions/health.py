"""The health rules: is a collector delivering, judged from its status report and the time.

One pure function, :func:`judge`, used by ``upbit-fanout check`` (on the report
``upbit-fanout status --json`` prints, read from Redis) and by the collector's own ``/healthz``
(on the same report built from its own state, :mod:`upbit_fanout.collector.metrics`), so the two
can never disagree. The rules, in order, are listed in docs/collector.md ("Health and metrics").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_AGE",
    "MAX_DELIVERY_AGE",
    "MAX_PRIVATE_DOWN",
    "MAX_UPSTREAM_DOWN",
    "STALE_STATUS",
    "judge",
]

_LIVE = ("connected", "subscribed")
STALE_STATUS = 15.0
"""A status hash older than this was left by a collector that is gone or cut off from Redis:
three of the collector's ``collector.status.HEARTBEAT_INTERVAL`` (5 s; a test keeps them in
step: this module sits below the collector and cannot import it)."""
_DOWN = ("connecting", "reconnecting")
MAX_AGE = 30.0
MAX_DELIVERY_AGE = 15.0
MAX_UPSTREAM_DOWN = 30.0
MAX_PRIVATE_DOWN = 60.0


def judge(
    report: Mapping[str, Any],
    *,
    max_age: float = MAX_AGE,
    max_delivery_age: float = MAX_DELIVERY_AGE,
    max_upstream_down: float = MAX_UPSTREAM_DOWN,
    max_private_down: float = MAX_PRIVATE_DOWN,
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
    recorded_down = report.get("private_down_seconds")  # the recorder's view of the same socket
    if isinstance(recorded_down, int | float) and not isinstance(recorded_down, bool):
        private_down = max(private_down or 0.0, float(recorded_down))
    enabled = collector.get("private") == "enabled"
    if enabled and private_down is not None and private_down > max_private_down:
        return False, (
            f"the private socket has been down for {private_down:.0f} s (API keys set; more "
            f"than --private-max-down {max_private_down:g} s): order and balance events are "
            f"not recorded live{error_note}"
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
