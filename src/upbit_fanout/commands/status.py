"""``upbit-fanout status``: what the collector is doing and who wants what, from Redis alone.

Reads ``P:status``, ``P:union``, ``P:invalid``, ``P:leader``, every ``P:intents:*`` key (SCAN,
never KEYS) with its remaining lease (PTTL), and whether anyone listens on ``P:control`` (a
running collector does). Prints a readable summary, or with ``--json`` one JSON object whose
keys are stable (documented in docs/client.md) for scripts::

    {"redis_url", "key_prefix", "collector_listening", "collector" (null or the P:status fields,
     digits-only values as integers), "status_age_seconds", "last_event_age_seconds",
     "private_down_seconds", "private_last_event_age_seconds",
     "union": [...], "clients": [{"client_id", "topics", "lease_remaining_seconds"}],
     "invalid": [{"client_id", "topic", "reason"}], "leader": null or {"collector_id",
     "lease_remaining_seconds"}}

Exit status: 0, or 1 when Redis cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.redact import redact_url

HELP = "Show the collector's state, the union, every live client and refused intents."

_SCAN_COUNT = 500


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and ``--key-prefix``, shared by tail, status and check."""
    parser.add_argument(
        "--redis-url", default=None, help="Redis URL (default: UPBIT_FANOUT_REDIS_URL or settings)"
    )
    parser.add_argument(
        "--key-prefix", default=None, help="key prefix (default: UPBIT_FANOUT_KEY_PREFIX, 'upbit')"
    )


def redis_target(args: argparse.Namespace, settings: Settings) -> tuple[str, Keys]:
    url = args.redis_url or settings.redis_url
    return url, Keys(args.key_prefix or settings.key_prefix)


def configure(parser: argparse.ArgumentParser) -> None:
    add_redis_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object (stable keys)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    url, keys = redis_target(args, settings)
    try:
        report = asyncio.run(gather(url, keys))
    except (RedisError, OSError) as exc:
        print(
            f"upbit-fanout status: cannot read Redis at {redact_url(url)}: {exc}", file=sys.stderr
        )
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render_text(report))
    return 0


async def gather(url: str, keys: Keys, *, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as the ``--json`` object."""
    redis = Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=5.0)
    try:
        return await _gather(redis, url, keys, time.time() if now is None else now)
    finally:
        await redis.aclose()


async def _gather(redis: Redis, url: str, keys: Keys, now: float) -> dict[str, Any]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.status)
        pipe.smembers(keys.union)
        pipe.hgetall(keys.invalid)
        pipe.get(keys.leader)
        pipe.pttl(keys.leader)
        pipe.pubsub_numsub(keys.control)
        status_raw, union_raw, invalid_raw, leader_raw, leader_ttl, numsub = await pipe.execute()

    intent_keys = [
        key async for key in redis.scan_iter(match=keys.intents_pattern, count=_SCAN_COUNT)
    ]
    clients: list[dict[str, Any]] = []
    if intent_keys:
        async with redis.pipeline(transaction=False) as pipe:
            for key in intent_keys:
                pipe.smembers(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        for index, key in enumerate(intent_keys):
            members, ttl = replies[2 * index], replies[2 * index + 1]
            client_id = keys.client_id_of(_text(key))
            if client_id is None or ttl == -2:  # expired between SCAN and SMEMBERS
                continue
            if not isinstance(members, set):  # a key of the wrong type: show it, it is a fault
                members = set()
            clients.append(
                {
                    "client_id": client_id,
                    "topics": sorted(_text(member) for member in members),
                    "lease_remaining_seconds": ttl / 1000 if ttl >= 0 else None,
                }
            )
    clients.sort(key=lambda client: str(client["client_id"]))

    status = {_text(name): _text(value) for name, value in status_raw.items()}
    collector = {name: _typed(value) for name, value in status.items()} if status else None
    invalid = []
    for field, reason in sorted((_text(k), _text(v)) for k, v in invalid_raw.items()):
        client_id, _, topic = field.partition(" ")
        invalid.append({"client_id": client_id, "topic": topic, "reason": reason})
    listening = int(numsub[0][1]) if numsub else 0
    return {
        "redis_url": redact_url(url),
        "key_prefix": keys.prefix,
        "collector_listening": listening > 0,
        "collector": collector,
        "status_age_seconds": _age(status.get("updated_at"), now),
        "last_event_age_seconds": _age(status.get("last_event_at"), now),
        "private_down_seconds": _age(status.get("private_down_since"), now),
        "private_last_event_age_seconds": _age(status.get("private_last_event_at"), now),
        "union": sorted(_text(member) for member in union_raw),
        "clients": clients,
        "invalid": invalid,
        "leader": None
        if leader_raw is None
        else {
            "collector_id": _text(leader_raw),
            "lease_remaining_seconds": leader_ttl / 1000 if leader_ttl >= 0 else None,
        },
    }


def _private_lines(report: dict[str, Any], collector: dict[str, Any]) -> list[str]:
    """The private side: recording, socket, last private event, gaps, last reconciliation."""
    note = collector.get("private")
    if note in (None, ""):
        return []
    lines = [f"Private    {note}  (recording {collector.get('private_recording') or 'off'})"]
    state = collector.get("private_upstream_state")
    if state not in (None, ""):
        down = report.get("private_down_seconds")
        extra = "" if down is None else f", down for {down:.1f} s"
        lines.append(f"  {'socket':<13} {state}{extra}")
    lines.append(f"  {'last event':<13} {_ago(report.get('private_last_event_age_seconds'))}")
    gaps = collector.get("private_gaps")
    if gaps not in (None, ""):
        lines.append(f"  {'gaps':<13} {gaps} (last: {collector.get('private_last_gap')} ms)")
    result = collector.get("private_last_reconcile")
    if result not in (None, ""):
        at = collector.get("private_last_reconcile_at")
        when = f"{_clock(at)} UTC: " if isinstance(at, int) else ""
        lines.append(f"  {'reconciled':<13} {when}{result}")
    return lines


def render_text(report: dict[str, Any]) -> str:
    """The readable form of a :func:`gather` report."""
    lines = [f"Redis      {report['redis_url']}  (key prefix {report['key_prefix']!r})"]
    collector = report["collector"]
    if collector is None:
        lines.append("Collector  none: no status in Redis (is a collector running on this prefix?)")
    else:
        listening = "" if report["collector_listening"] else "  [NOT RUNNING: nobody on P:control]"
        ident = collector.get("collector_id", "?")
        lines.append(f"Collector  {collector.get('state', '?')}  ({ident}){listening}")
        for label, name in (("upstream", "upstream"), ("ticket", "ticket")):
            if collector.get(name) not in (None, ""):
                lines.append(f"  {label:<13} {collector[name]}")
        since = collector.get("connected_since")
        if isinstance(since, int):
            lines.append(f"  {'connected':<13} {_clock(since)} UTC")
        lines.append(f"  {'last event':<13} {_ago(report['last_event_age_seconds'])}")
        lines.append(f"  {'status age':<13} {_ago(report['status_age_seconds'])}")
        counters = [
            f"{name}={collector[name]}"
            for name in (
                "events_total",
                "sends_total",
                "reconnects",
                "invalid_intents",
                "dropped_events",
                "malformed_frames",
                "upstream_errors",
                "redis_outages",
            )
            if name in collector
        ]
        if counters:
            lines.append(f"  {'counters':<13} {', '.join(counters)}")
        lines.append(f"  {'last error':<13} {collector.get('last_error') or '-'}")
        lines.extend(_private_lines(report, collector))
    union = report["union"]
    lines.append(f"Union ({len(union)})  {', '.join(union) if union else '-'}")
    clients = report["clients"]
    lines.append(f"Clients ({len(clients)})")
    width = max((len(client["client_id"]) for client in clients), default=0)
    for client in clients:
        lease = client["lease_remaining_seconds"]
        lease_text = "no TTL!" if lease is None else f"{lease:5.1f} s"
        topics = ", ".join(client["topics"]) or "-"
        lines.append(f"  {client['client_id']:<{width}}  lease {lease_text}  {topics}")
    invalid = report["invalid"]
    if invalid:
        lines.append(f"Invalid intents ({len(invalid)})")
        for item in invalid:
            lines.append(f"  {item['client_id']}  {item['topic']}  {item['reason']}")
    leader = report["leader"]
    if leader is not None:
        lease = leader["lease_remaining_seconds"]
        lines.append(
            f"Leader     {leader['collector_id']}"
            + ("" if lease is None else f"  (lease {lease:.1f} s)")
        )
    return "\n".join(lines)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _typed(value: str) -> str | int:
    """Digits-only status values (counters, ms timestamps) as integers, the rest unchanged."""
    return int(value) if value.isdigit() else value


def _age(ms_text: str | None, now: float) -> float | None:
    if not ms_text or not ms_text.isdigit():
        return None
    return round(max(0.0, now - int(ms_text) / 1000), 3)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    return f"{seconds / 60:.1f} min ago"


def _clock(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
