"""Snapshots: the current value of topics, from the last-value cache or a short-lived intent.

1. One round trip: ``SISMEMBER P:union`` per topic (is it live?) and ``MGET P:last:...``.
   A live topic with a last value (fresh enough when ``max_age`` is given) is answered at once,
   with no intent written.
2. The rest: a pub/sub connection of its own subscribes to their channels (and waits for the
   confirmations, so the first event cannot slip past), then ONE transaction writes a transient
   intent key for all of them and tells the collector on ``P:control``. The first event of each
   channel answers its topic. The intent is deleted as soon as every topic answered or the
   timeout passed; its lease (``timeout`` + 2 s) covers a process that dies meanwhile.

The snapshot never uses the client's main connection or buffers, so it works while the consumer
is behind, and its events never show up in the client's stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Final, cast

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import RedisError

from upbit_fanout.client._cluster_link import ClusterLink
from upbit_fanout.client._errors import SnapshotTimeoutError
from upbit_fanout.client._items import Event
from upbit_fanout.client._link import PubSubLink
from upbit_fanout.subscriptions.connection import cluster_of
from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.keys import Keys, invalid_field
from upbit_fanout.subscriptions.lease import MIN_LEASE_SECONDS, heartbeat_commands, release_commands
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["take_snapshots"]

log = logging.getLogger(__name__)

_LEASE_MARGIN: Final = 2.0
_SUBSCRIBED: Final = (b"subscribe", b"ssubscribe")
_MESSAGE: Final = b"message"


def is_fresh(event: Event, max_age: float | None, now: float) -> bool:
    """True when ``max_age`` is None, or the event's ``timestamp`` is within ``max_age`` s."""
    if max_age is None:
        return True
    try:
        stamp = event.timestamp
    except CodecError:
        return False
    return stamp is not None and now * 1000.0 - stamp <= max_age * 1000.0


async def take_snapshots(
    redis: Redis,
    keys: Keys,
    transient_client_id: str,
    topics: Mapping[str, Topic],
    *,
    timeout: float,  # noqa: ASYNC109 - the snapshot's deadline
    max_age: float | None,
) -> dict[str, Event]:
    """``{topic: event}`` for every topic; raises SnapshotTimeoutError with what is missing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    names = list(topics)
    cluster = cluster_of(redis) is not None
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:  # SISMEMBER each rather than SMISMEMBER: works before Redis 6.2
            pipe.execute_command("SISMEMBER", keys.union, name)
        if cluster:  # last values live in their channels' slots: a GET each (one round trip)
            for name in names:
                pipe.execute_command("GET", keys.last(name), **{NEVER_DECODE: True})
            replies = await pipe.execute()
            live_flags, values = replies[: len(names)], replies[len(names) :]
        else:
            pipe.execute_command(
                "MGET", *(keys.last(name) for name in names), **{NEVER_DECODE: True}
            )
            *live_flags, values = await pipe.execute()

    result: dict[str, Event] = {}
    now = time.time()
    for name, live, value in zip(names, live_flags, values, strict=True):
        if live and value is not None:
            event = Event(name, topics[name], bytes(value), cached=True)
            if is_fresh(event, max_age, now):
                result[name] = event
    pending = {name: topic for name, topic in topics.items() if name not in result}
    if not pending:
        return result

    by_channel = {keys.channel(name).encode(): name for name in pending}
    link = cast(PubSubLink, ClusterLink(redis, ())) if cluster else PubSubLink(redis)
    wrote = False
    try:
        await link.open(keys.channel(name) for name in pending)
        confirmed = 0
        while len(result) < len(topics):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if confirmed == len(pending) and not wrote:
                await _write_transient(
                    redis,
                    keys,
                    transient_client_id,
                    pending,
                    max(MIN_LEASE_SECONDS, timeout + _LEASE_MARGIN),
                )
                wrote = True
                continue
            msg = await link.read(wait=remaining)
            if not isinstance(msg, list) or len(msg) != 3:
                continue
            kind = msg[0]
            if kind in _SUBSCRIBED:
                confirmed += 1
            elif kind == _MESSAGE:
                hit = by_channel.get(msg[1])
                if hit is not None and hit not in result:
                    result[hit] = Event(hit, pending[hit], msg[2])
        missing = [name for name in topics if name not in result]
        if missing:  # explain before the intent goes (the collector's refusal goes with it)
            message = await _timeout_message(redis, keys, transient_client_id, missing, timeout)
    finally:
        if wrote:
            await _release_transient(redis, keys, transient_client_id)
        await link.close()
    if missing:
        raise SnapshotTimeoutError(message, missing, result)
    return result


async def _write_transient(
    redis: Redis, keys: Keys, client_id: str, topics: Mapping[str, Topic], lease: float
) -> None:
    cluster = cluster_of(redis) is not None
    async with redis.pipeline(transaction=True) as pipe:
        for command in heartbeat_commands(keys, client_id, topics, lease):
            pipe.execute_command(*command)
        if not cluster:
            pipe.execute_command("PUBLISH", keys.control, client_id)
        await pipe.execute()
    if cluster:  # a cluster transaction stays in the intent key's slot
        await redis.publish(keys.control, client_id)


async def _release_transient(redis: Redis, keys: Keys, client_id: str) -> None:
    try:
        async with asyncio.timeout(2.0):
            async with redis.pipeline(transaction=cluster_of(redis) is None) as pipe:
                for command in release_commands(keys, client_id):
                    pipe.execute_command(*command)
                await pipe.execute()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not delete the snapshot intent %s (%s); it expires soon", client_id, exc)


async def _timeout_message(
    redis: Redis, keys: Keys, client_id: str, missing: list[str], waited: float
) -> str:
    """Say which topics and the likeliest reason: no collector, or the collector refused them."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    message = f"no event for {shown} within {waited:g} s"
    try:
        async with asyncio.timeout(1.0):
            state, last_error = await redis.hmget(keys.status, ["state", "last_error"])
            reasons = await redis.hmget(
                keys.invalid, [invalid_field(client_id, name) for name in missing]
            )
    except (RedisError, OSError, TimeoutError):
        return message + f"; is a collector running for key prefix {keys.prefix!r}?"
    refused = [
        f"{name}: {_text(reason)}"
        for name, reason in zip(missing, reasons, strict=True)
        if reason is not None
    ]
    if refused:
        return message + "; the collector refused " + "; ".join(refused)
    if state is None:
        return message + (
            f"; no collector status in Redis ({keys.status}): is a collector running for key "
            f"prefix {keys.prefix!r}?"
        )
    hint = f"; collector state: {_text(state)}"
    if last_error:
        hint += f", last error: {_text(last_error)}"
    return message + hint + " (the collector may be down or the market quiet)"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
