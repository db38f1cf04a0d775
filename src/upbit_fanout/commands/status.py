"""``upbit-fanout status``: what the collector is doing and who wants what, from Redis alone.

Reads ``P:status``, ``P:union``, ``P:invalid``, ``P:leader``, every ``P:intents:*`` key (SCAN,
never KEYS) with its remaining lease (PTTL), and whether anyone listens on ``P:control`` (a
running collector does). Prints a readable summary, or with ``--json`` one JSON object whose
keys are stable (documented in docs/client.md) for scripts::

    {"redis_url", "key_prefix", "collector_listening", "collector" (null or the P:status fields,
     digits-only values as integers), "status_age_seconds", "last_event_age_seconds",
     "private_down_seconds", "private_last_event_age_seconds",
     "union": [...], "clients": [{"client_id", "topics", "topic_count",
     "lease_remaining_seconds"}], "bad_keys": [{"key", "type", "reason"}],
     "invalid": [{"client_id", "topic" (null: the client's summary), "reason"}],
     "leader": null or {"collector_id", "token",
     "lease_remaining_seconds"}, "standbys": [{"collector_id", "version", "state",
     "started_at", "at"}]}

A key of the wrong type, or one whose client id is outside the contract, is listed in
``bad_keys`` and otherwise skipped; a key with more than 1,000 members shows 10 of them and its
count. Ids, topics and reasons are escaped (no newline or control character reaches the
terminal). Exit status: 0, or 1 when Redis cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from upbit_fanout.validate import arg, key_prefix, redis_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from upbit_fanout.settings import Settings
    from upbit_fanout.subscriptions.keys import Keys

HELP = "Show the collector's state, the union, every live client and refused intents."

_SCAN_COUNT = 500
_MAX_TOPICS_SHOWN = 1000
"""A key with more members shows a sample of :data:`_SAMPLE` and its count."""
_SAMPLE = 10


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and ``--key-prefix``, shared by tail, status and check."""
    parser.add_argument(
        "--redis-url",
        default=None,
        type=arg(redis_url),
        help="Redis URL (default: UPBIT_FANOUT_REDIS_URL or settings)",
    )
    parser.add_argument(
        "--key-prefix",
        default=None,
        type=arg(key_prefix),
        help="key prefix (default: UPBIT_FANOUT_KEY_PREFIX, 'upbit')",
    )


def redis_target(args: argparse.Namespace, settings: Settings) -> tuple[str, Keys]:
    from upbit_fanout.subscriptions.keys import Keys  # noqa: PLC0415 - kept off --help's path

    url = args.redis_url or settings.redis_url
    return url, Keys(args.key_prefix or settings.key_prefix)


def configure(parser: argparse.ArgumentParser) -> None:
    add_redis_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object (stable keys)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from redis.exceptions import RedisError  # noqa: PLC0415 - kept off --help's path

    from upbit_fanout.subscriptions.redis_errors import describe_redis_error  # noqa: PLC0415

    url, keys = redis_target(args, settings)
    try:
        report = asyncio.run(gather(url, keys))
    except (RedisError, OSError) as exc:
        print(f"upbit-fanout status: {describe_redis_error(exc, url)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render_text(report))
    return 0


async def gather(url: str, keys: Keys, *, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as the ``--json`` object."""
    from upbit_fanout.subscriptions.connection import cluster_of, open_redis  # noqa: PLC0415

    redis = await open_redis(url, socket_connect_timeout=3.0, socket_timeout=5.0)
    if cluster_of(redis) is not None:
        keys = keys.clustered()  # docs/contract.md, "Redis Cluster"
    try:
        return await _gather(redis, url, keys, time.time() if now is None else now)
    finally:
        await redis.aclose()


async def _gather(redis: Redis, url: str, keys: Keys, now: float) -> dict[str, Any]:
    from redis.exceptions import ResponseError  # noqa: PLC0415 - kept off --help's path

    from upbit_fanout.collector.intents import clip  # noqa: PLC0415
    from upbit_fanout.subscriptions.connection import cluster_primaries, node_client  # noqa: PLC0415
    from upbit_fanout.subscriptions.keys import split_invalid_field  # noqa: PLC0415
    from upbit_fanout.subscriptions.lease import parse_leader  # noqa: PLC0415
    from upbit_fanout.subscriptions.redact import redact_url  # noqa: PLC0415

    nodes = await cluster_primaries(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.status)
        pipe.smembers(keys.union)
        pipe.hgetall(keys.invalid)
        pipe.get(keys.leader)
        pipe.pttl(keys.leader)
        if nodes is None:
            pipe.pubsub_numsub(keys.control)
            (
                status_raw,
                union_raw,
                invalid_raw,
                leader_raw,
                leader_ttl,
                numsub,
            ) = await pipe.execute()
        else:
            status_raw, union_raw, invalid_raw, leader_raw, leader_ttl = await pipe.execute()
    if nodes is not None:
        # A cluster counts classic subscribers per node: the collector listens on one of them.
        numsub = [(keys.control, 0)]
        for host, port in nodes:
            node = node_client(redis, host, port)
            try:
                counted = await node.pubsub_numsub(keys.control)
                numsub = [(keys.control, int(numsub[0][1]) + int(counted[0][1]))]
            finally:
                await node.aclose()

    clients, bad_keys = await _read_clients(redis, keys)
    standbys: list[dict[str, Any]] = []
    async for key in redis.scan_iter(match=keys.standby_pattern, count=_SCAN_COUNT):
        try:
            raw = await redis.get(key)
        except ResponseError:  # not a string: not a standby's key (one key must not blind us)
            continue
        with contextlib.suppress(ValueError):
            body = json.loads(raw) if raw is not None else None
            if isinstance(body, dict):
                standbys.append(body)
    standbys.sort(key=lambda standby: str(standby.get("collector_id")))

    status = {_text(name): _text(value) for name, value in status_raw.items()}
    collector = {name: _typed(value) for name, value in status.items()} if status else None
    invalid: list[dict[str, Any]] = []
    for field, reason in sorted((_text(k), _text(v)) for k, v in invalid_raw.items()):
        client_id, topic = split_invalid_field(field)
        invalid.append(
            {
                # The collector wrote them escaped already; clip() only makes sure of it.
                "client_id": clip(client_id, 200),
                "topic": clip(topic, 200)
                if topic is not None
                else None,  # None: the client's summary
                "reason": clip(reason, 300),
            }
        )
    listening = int(numsub[0][1]) if numsub else 0
    return {
        "redis_url": redact_url(url),
        # A Redis Cluster's primaries (host:port), None for a single Redis (or Sentinel).
        "redis_cluster_primaries": None
        if nodes is None
        else [f"{host}:{port}" for host, port in nodes],
        "key_prefix": keys.prefix,
        "collector_listening": listening > 0,
        "collector": collector,
        "status_age_seconds": _age(status.get("updated_at"), now),
        "last_event_age_seconds": _age(status.get("last_event_at"), now),
        "private_down_seconds": _age(status.get("private_down_since"), now),
        "private_last_event_age_seconds": _age(status.get("private_last_event_at"), now),
        "union": sorted(_text(member) for member in union_raw),
        "clients": clients,
        "bad_keys": bad_keys,
        "invalid": invalid,
        "leader": None
        if leader_raw is None
        else {
            "collector_id": parse_leader(leader_raw)[1],
            "token": parse_leader(leader_raw)[0],  # the fencing token of its term
            "lease_remaining_seconds": leader_ttl / 1000 if leader_ttl >= 0 else None,
        },
        "standbys": standbys,
    }


async def _read_clients(
    redis: Redis, keys: Keys
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every intent key: the clients (a few topics of a huge key), and the keys that are no
    client (wrong type, id outside the contract), each with what to do. Never raises for what a
    key holds: one bad key must not blind the operator."""
    from redis.exceptions import RedisError, ResponseError  # noqa: PLC0415 - off --help's path

    from upbit_fanout.collector.intents import (  # noqa: PLC0415
        escape,
        id_reason,
        valid_client_id,
    )

    prefix = keys.intents_pattern[:-1].encode()
    intent_keys = [
        key if isinstance(key, bytes) else key.encode()
        async for key in redis.scan_iter(match=keys.intents_pattern, count=_SCAN_COUNT)
    ]
    clients: list[dict[str, Any]] = []
    bad_keys: list[dict[str, Any]] = []
    if not intent_keys:
        return clients, bad_keys
    async with redis.pipeline(transaction=False) as pipe:
        for key in intent_keys:
            pipe.type(key)
            pipe.pttl(key)
            pipe.scard(key)
        replies = await pipe.execute(raise_on_error=False)
    sets: list[tuple[bytes, str, int, int]] = []
    for index, key in enumerate(intent_keys):
        kind_raw, ttl, size = replies[3 * index : 3 * index + 3]
        if isinstance(kind_raw, BaseException) or isinstance(ttl, BaseException):
            if isinstance(kind_raw, RedisError | OSError) and not isinstance(
                kind_raw, ResponseError
            ):
                raise kind_raw
            continue
        kind = _text(kind_raw)
        raw_id = key[len(prefix) :]
        client_id = valid_client_id(raw_id)
        shown = escape(key, 200)
        if kind == "none":
            continue  # expired between SCAN and TYPE
        if kind != "set":
            bad_keys.append(
                {"key": shown, "type": kind, "reason": f"a {kind}, not a SET of topics: DEL it"}
            )
            continue
        if client_id is None:
            bad_keys.append({"key": shown, "type": kind, "reason": id_reason(raw_id)})
            continue
        sets.append((key, client_id, int(ttl), int(size) if isinstance(size, int) else 0))
    async with redis.pipeline(transaction=False) as pipe:
        for key, _, _, size in sets:
            if size <= _MAX_TOPICS_SHOWN:
                pipe.smembers(key)
            else:
                pipe.srandmember(key, _SAMPLE)
        members_replies = await pipe.execute(raise_on_error=False)
    for (_, client_id, ttl, size), reply in zip(sets, members_replies, strict=True):
        members = [] if isinstance(reply, BaseException) else reply
        clients.append(
            {
                "client_id": client_id,
                "topics": sorted(escape(member, 80) for member in members),
                "topic_count": size,
                "lease_remaining_seconds": ttl / 1000 if ttl >= 0 else None,
            }
        )
    clients.sort(key=lambda client: str(client["client_id"]))
    bad_keys.sort(key=lambda item: str(item["key"]))
    return clients, bad_keys


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
    cluster = report.get("redis_cluster_primaries")
    if cluster is not None:
        lines.append(f"  {'cluster':<13} {len(cluster)} primaries: {', '.join(cluster)}")
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
        role = collector.get("role")
        if role:
            since = collector.get("leader_since")
            lines.append(
                f"  {'role':<13} {role}"
                + (f" since {_clock(since)} UTC" if isinstance(since, int) else "")
            )
        uptime = collector.get("uptime_seconds")
        if isinstance(uptime, int):
            lines.append(f"  {'uptime':<13} {_duration(uptime)}")
        if collector.get("events_per_second") not in (None, ""):
            lines.append(f"  {'rate':<13} {collector['events_per_second']} events/s (last minute)")
        lines.append(f"  {'delivery':<13} {_delivery(collector, report)}")
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
                "subscription_mismatches",
            )
            if name in collector
        ]
        if counters:
            lines.append(f"  {'counters':<13} {', '.join(counters)}")
        for label, name in (("received", "received_by_type"), ("published", "published_by_type")):
            by_type = _by_type(collector.get(name))
            if by_type:
                lines.append(f"  {label:<13} {by_type}")
        lines.append(f"  {'last error':<13} {_error(collector, 'last_error')}")
        if collector.get("previous_error"):
            lines.append(f"  {'recovered':<13} {_error(collector, 'previous_error')}")
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
        count = client.get("topic_count", len(client["topics"]))
        if count > len(client["topics"]):
            topics += f", ... ({count} in all)"
        lines.append(f"  {client['client_id']:<{width}}  lease {lease_text}  {topics}")
    bad_keys = report.get("bad_keys") or []
    if bad_keys:
        lines.append(f"Bad intent keys ({len(bad_keys)}), ignored")
        for item in bad_keys:
            lines.append(f"  {item['key']}  {item['reason']}")
    invalid = report["invalid"]
    if invalid:
        lines.append(f"Invalid intents ({len(invalid)})")
        for item in invalid:
            lines.append(f"  {item['client_id']}  {item['topic'] or '-'}  {item['reason']}")
    leader = report["leader"]
    if leader is not None:
        lease = leader["lease_remaining_seconds"]
        details = [] if lease is None else [f"lease {lease:.1f} s"]
        if leader.get("token") is not None:
            details.append(f"token {leader['token']}")
        lines.append(
            f"Leader     {leader['collector_id']}"
            + (f"  ({', '.join(details)})" if details else "")
        )
    for standby in report.get("standbys") or []:
        lines.append(
            f"Standby    {standby.get('collector_id', '?')}  ({standby.get('state', '?')}, "
            f"version {standby.get('version', '?')})"
        )
    return "\n".join(lines)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _error(collector: dict[str, Any], name: str) -> str:
    text = collector.get(name) or ""
    if not text:
        return "-"
    at = collector.get(f"{name}_at")
    return f"{text}  (at {_clock(at)} UTC)" if isinstance(at, int) else str(text)


def _by_type(value: object) -> str:
    try:
        counts = json.loads(value) if isinstance(value, str) and value else {}
    except ValueError:
        return ""
    if not isinstance(counts, dict):
        return ""
    return ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))


def _delivery(collector: dict[str, Any], report: dict[str, Any]) -> str:
    """The canary: when delivery through Redis was last confirmed, and how fast."""
    ok_at = collector.get("canary_ok_at")
    updated = collector.get("updated_at")
    error = collector.get("canary_error") or ""
    if not isinstance(ok_at, int):
        return f"not confirmed yet{f' ({error})' if error else ''}"
    age = report.get("status_age_seconds") or 0.0
    if isinstance(updated, int):
        age += max(0.0, (updated - ok_at) / 1000)
    latency = collector.get("canary_latency_ms", "?")
    return f"canary came back {_ago(age)} ({latency} ms){f'; {error}' if error else ''}"


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
