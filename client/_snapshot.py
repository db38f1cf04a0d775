"""Snapshots: the current value of topics, from the last-value cache or a short-lived intent.

1. One round trip: ``SISMEMBER P:union`` per topic (is it live?) and ``MGET P:last:...``.
   A live topic with a last value (fresh enough when ``max_age`` is given) is answered at once,
   with no intent written.
2. The rest: a pub/sub connection of its own subscribes to their channels and to ``P:notices``
   (and waits for the confirmations, so the first event cannot slip past). The first event of
   each channel answers its topic.
3. Cold topics (not live) are asked of the leader's REST side first: one ``PUBLISH
   P:snapshot`` of ``{"id", "client", "topics"}`` (at most 100 topics each; docs/contract.md,
   "Cold snapshots"). The leader publishes each answer on the topic's channel (``stream_type``
   ``REST``), costing no WebSocket message. When nobody listens (``PUBLISH`` counts 0
   receivers: no collector, or one too old to answer), when the collector's ``snapshot`` notice
   says a topic failed, or after ``rest_wait`` seconds, the topics still missing go the old way:
4. ONE transaction writes a transient intent key for them and tells the collector on
   ``P:control`` (:func:`client._intents.write_intent`, as for the client's own key; live topics
   without a last value go this way at once). The intent is deleted as soon as every topic
   answered or the timeout passed; its lease (``timeout`` + 2 s) covers a process that dies
   meanwhile.

The snapshot never uses the client's main connection or buffers, so it works while the consumer
is behind, and its events never show up in the client's stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Final, cast

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from upbit_fanout.client._cluster_link import ClusterLink
from upbit_fanout.client._errors import SnapshotTimeoutError
from upbit_fanout.client._intents import RELEASE_TIMEOUT, release_intent, write_intent
from upbit_fanout.client._items import Event
from upbit_fanout.client._link import PubSubLink
from upbit_fanout.client._log import log
from upbit_fanout.subscriptions.connection import REDIS_FAILURES, cluster_of
from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.keys import MAX_CLIENT_ID, Keys, invalid_field
from upbit_fanout.subscriptions.lease import MIN_LEASE_SECONDS
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["take_snapshots"]

_LEASE_MARGIN: Final = 2.0
_SUBSCRIBED: Final = (b"subscribe", b"ssubscribe")
_REST_BATCH: Final = 100  # topics per P:snapshot request (the collector's limit)
REST_WAIT: Final = 2.0
"""Seconds a cold snapshot waits for the REST answer before it falls back to an intent."""
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
    rest_wait: float = REST_WAIT,
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
    cold: set[str] = set()
    now = time.time()
    for name, live, value in zip(names, live_flags, values, strict=True):
        if not live and not topics[name].is_private:
            cold.add(name)
        if live and value is not None:
            event = Event(name, topics[name], bytes(value), cached=True)
            if is_fresh(event, max_age, now):
                result[name] = event
    pending = {name: topic for name, topic in topics.items() if name not in result}
    if not pending:
        return result

    by_channel = {keys.channel(name).encode(): name for name in pending}
    notices = keys.notices.encode()
    link = cast(PubSubLink, ClusterLink(redis, (keys.notices,))) if cluster else PubSubLink(redis)
    lease = max(MIN_LEASE_SECONDS, timeout + _LEASE_MARGIN)
    owner = transient_client_id.rpartition(".snap")[0] or transient_client_id  # paced per client
    wrote = False
    asked = False  # the REST request was sent
    rest_ids: set[str] = set()
    intent: set[str] = set()  # topics written into the transient intent
    fallback: set[str] = set()  # topics to write into it next
    rest_until = 0.0
    try:
        await link.open([*(keys.channel(name) for name in pending), keys.notices])
        confirmed = 0
        while len(result) < len(topics):
            now_loop = loop.time()
            remaining = deadline - now_loop
            if remaining <= 0:
                break
            if confirmed == len(pending) + 1 and not asked:
                asked = True
                rest = sorted(name for name in pending if name in cold) if rest_wait > 0 else []
                fallback |= set(pending) - set(rest)
                for start in range(0, len(rest), _REST_BATCH):
                    chunk = rest[start : start + _REST_BATCH]
                    suffix = f".r{start // _REST_BATCH}"
                    request_id = transient_client_id[: MAX_CLIENT_ID - len(suffix)] + suffix
                    body = {"id": request_id, "client": owner, "topics": chunk}
                    try:
                        receivers = await redis.publish(keys.snapshot_requests, json.dumps(body))
                    except ResponseError as exc:  # NOPERM: an ACL without P:snapshot
                        log.debug("snapshot request not sent (%s); using an intent", exc)
                        receivers = 0
                    if receivers:
                        rest_ids.add(request_id)
                    else:  # no collector listens: the intent way for these, at once
                        fallback |= set(chunk)
                # leave the intent way at least half the time that is left
                rest_until = now_loop + min(rest_wait, remaining / 2)
            if asked and rest_ids and now_loop >= rest_until:
                rest_ids.clear()  # no answer in time: whatever is missing takes the intent way
                fallback |= set(pending)
            fallback = {name for name in fallback if name not in result and name not in intent}
            if fallback:
                await write_intent(redis, keys, transient_client_id, fallback, lease)
                wrote = True
                intent |= fallback
                fallback = set()
                continue
            wait = remaining if not rest_ids else max(0.0, min(remaining, rest_until - now_loop))
            msg = await link.read(wait=wait)
            if not isinstance(msg, list) or len(msg) != 3:
                continue
            kind = msg[0]
            if kind in _SUBSCRIBED:
                confirmed += 1
            elif kind == _MESSAGE and msg[1] == notices:
                fallback |= _failed_topics(msg[2], rest_ids)
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


def _failed_topics(payload: bytes, request_ids: set[str]) -> set[str]:
    """The topics a collector's ``snapshot`` notice says it could not answer from REST."""
    if b'"snapshot"' not in payload:
        return set()
    try:
        body = json.loads(payload)
    except ValueError:
        return set()
    if not isinstance(body, dict) or body.get("event") != "snapshot":
        return set()
    if body.get("id") not in request_ids:
        return set()
    failed = body.get("failed")
    return {str(name) for name in failed} if isinstance(failed, dict) else set()


async def _release_transient(redis: Redis, keys: Keys, client_id: str) -> None:
    try:
        async with asyncio.timeout(RELEASE_TIMEOUT):
            await release_intent(redis, keys, client_id)
    except (*REDIS_FAILURES, TimeoutError) as exc:
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
    except (*REDIS_FAILURES, TimeoutError):
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
