"""The reader side of the client: the pub/sub link, its health, reconnects, gaps.

:meth:`Reader.run` is the client's ``reader`` task. It owns the link (:mod:`client._link`): the
link hands every socket read's replies to :meth:`Reader.accept`, the hot path, which turns each
message into an :class:`Event` and files it into the :class:`client._dispatch.Dispatch`'s
buffers synchronously. What cannot be filed at once (a full buffer under ``block``; a notice,
which needs awaiting) goes to the backlog with everything after it, the link is paused and a
``drain`` child task delivers it in order before the link reads again. A ``watch`` child task
PINGs the link when it was quiet and declares it dead when the PING gets no answer
(:class:`client._policy.Liveness`).

When the link breaks (the socket closed, a dead PING, a Sentinel failover, a reconnect done
underneath) the reader reconnects with capped backoff and jitter, or gives up
(:class:`client._policy.Outage`, ``max_outage``); then it re-asserts the intents
(:meth:`client._intents.IntentKey.reassert`), reports a :class:`Gap` and refreshes every topic
from its last value. A collector ``gap`` notice takes the same way (a Gap, then the last values).

The routing table (:meth:`Reader.route`) maps a channel to its topic; the client keeps it equal
to its topics, and the reader (un)subscribes the link to match (:meth:`Reader.send`, best
effort: a link that is down is brought up to date by :meth:`Reader.run` when it is back).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError

from upbit_fanout.client._cluster_link import ClusterLink
from upbit_fanout.client._dispatch import Dispatch
from upbit_fanout.client._errors import (
    ClientError,
    RedisUnavailableError,
    is_retryable,
    wrap_redis_error,
)
from upbit_fanout.client._fast_link import HiredisLink, hiredis_available
from upbit_fanout.client._intents import IntentKey
from upbit_fanout.client._items import Event, Gap, Notice
from upbit_fanout.client._link import Link, PubSubLink
from upbit_fanout.client._log import log
from upbit_fanout.client._policy import GiveUp, Liveness, Outage
from upbit_fanout.subscriptions.connection import REDIS_FAILURES, cluster_of, follow_primary
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.tasks import stop_tasks
from upbit_fanout.subscriptions.topics import Topic
from upbit_fanout.subscriptions.upbit_fields import PRIVATE_TYPES

__all__ = ["PubSubReader", "Reader", "link_class", "stop_client_tasks"]

PubSubReader: TypeAlias = Literal["auto", "hiredis", "redis-py"]

_MESSAGE: Final = b"message"
_SMESSAGE: Final = b"smessage"
_LOGGED_REPLY_ERRORS: Final = 10
_PRIVATE: Final = frozenset(PRIVATE_TYPES)


@dataclass(frozen=True, slots=True)
class _CallbacksOnly:
    """Backlog entry: an event already in the stream buffer, still due to the callbacks."""

    event: Event


class Reader:
    """The client's pub/sub side: open a link, run it, and reconnect when it breaks."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        client_id: str,
        url: str,
        link_class: Callable[[Redis], Link],
        topics: Mapping[str, Topic],
        dispatch: Dispatch,
        intents: IntentKey,
        fail: Callable[[ClientError, BaseException], None],
        running: Callable[[], bool],
        health_check_interval: float,
        max_reconnect_delay: float,
        max_outage: float | None,
        close_timeout: float,
        upstream_gaps: bool,
        read_coalesce: float = 0.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._cluster = cluster_of(redis) is not None
        self._client_id = client_id
        self._url = url
        self._link_class = link_class
        self._topics = topics
        self._dispatch = dispatch
        self._stream = dispatch.stream  # the hot path's (a Dispatch keeps its buffers for life)
        self._intents = intents
        self._fail = fail
        self._running = running
        self._health_interval = health_check_interval
        self._max_reconnect_delay = max_reconnect_delay
        self._max_outage = max_outage
        self._close_timeout = close_timeout
        self._upstream_gaps = upstream_gaps

        self._channels: dict[bytes, tuple[str, Topic]] = {}
        self._notices_channel = keys.notices
        self._notices_channel_bytes = self._notices_channel.encode()
        self._link: Link | None = None
        self.connected = False
        """True while the pub/sub connection is up."""
        self.blocked = False
        """The link is paused while the backlog is delivered (the consumer is behind)."""
        self._rx_count = 0
        # Replies the link handed over that accept() could not file at once, in order; while
        # it is not empty the link is paused and the drain task owns delivery (at most one
        # socket read's worth, plus what the reconnect logic adds).
        self._backlog: deque[Any] = deque()
        self._backlog_ready = asyncio.Event()
        self._reply_errors = 0
        self.reconnects = 0
        """Times the client lost Redis and came back (one :class:`Gap` each)."""
        self._rests_closed = 0  # read rests of the links closed so far
        self._read_coalesce = read_coalesce
        self._said_no_coalesce = False
        self.upstream_gaps = 0
        """Collector gap notices reported as a :class:`Gap` (``upstream_gaps=True``)."""

    # -- routing ------------------------------------------------------------------------------
    def route(self, name: str, topic: Topic) -> str:
        """Deliver the messages of ``topic``'s channel (returned) as events of ``name``."""
        channel = self._keys.channel(name)
        self._channels[channel.encode()] = (name, topic)
        return channel

    def unroute(self, name: str) -> str:
        """Stop delivering ``name``'s channel (returned); what is still buffered is filtered
        out by the consumer's side."""
        channel = self._keys.channel(name)
        self._channels.pop(channel.encode(), None)
        return channel

    async def send(self, command: str, channels: list[str]) -> None:
        """(UN)SUBSCRIBE on the link, best effort: when the link is down, :meth:`run` brings
        the new one up to date (:meth:`_catch_up`)."""
        link = self._link
        if link is None or not self.connected:
            return
        try:
            await link.send(command, *channels)
        except REDIS_FAILURES as exc:
            log.debug("could not send %s on the pub/sub connection (%s)", command, exc)

    # -- the link -----------------------------------------------------------------------------
    async def open_link(self) -> Link:
        """A new link, subscribed to the notices and every topic's channel."""
        if self._cluster:
            link: Link = ClusterLink(self._redis, [self._notices_channel])
            if self._read_coalesce and not self._said_no_coalesce:
                self._said_no_coalesce = True
                log.info(
                    "client %s: read_coalesce has no effect on a Redis Cluster (its node "
                    "connections are read through redis-py)",
                    self._client_id,
                )
        else:
            link = self._link_class(self._redis)
        channels = [self._notices_channel, *(self._keys.channel(name) for name in self._topics)]
        try:
            await link.open(channels)
        except BaseException:
            await _close_link(link)
            raise
        return link

    @property
    def read_rests(self) -> int:
        """How many times reading rested to coalesce reads, over every connection so far."""
        link = self._link
        return self._rests_closed + (link.rests if link is not None else 0)

    def adopt(self, link: Link) -> None:
        """The first link, opened by the client before it starts :meth:`run` with it."""
        self._link = link
        self.connected = True

    async def close(self) -> None:
        """Close the current link, if any (after :meth:`run` was stopped)."""
        link, self._link = self._link, None
        self.connected = False
        if link is not None:
            self._rests_closed += link.rests
            await _close_link(link)

    async def run(self, first: Link) -> None:
        """Read, and when the connection breaks, reconnect until it works or cannot."""
        loop = asyncio.get_running_loop()
        link: Link | None = first
        outage_wall = 0.0
        reason = ""
        outage = Outage(
            loop.time(), max_outage=self._max_outage, max_delay=self._max_reconnect_delay
        )
        while self._running():
            if link is None:
                try:
                    link = await self.open_link()
                except REDIS_FAILURES as exc:
                    if not is_retryable(exc):
                        self._fail(wrap_redis_error(exc, f"reconnecting to {self._url}"), exc)
                        return
                    step = outage.attempt_failed(loop.time())
                    if isinstance(step, GiveUp):
                        self._fail(
                            RedisUnavailableError(
                                f"Redis at {self._url} unreachable for {step.waited:.0f} s "
                                f"(max_outage={self._max_outage:g} s); giving up: {exc}"
                            ),
                            exc,
                        )
                        return
                    if step.report:
                        log.warning(
                            "Redis at %s unreachable (%s); retrying (attempt %d, next in %.1f s)",
                            self._url,
                            exc,
                            step.attempt,
                            step.delay,
                        )
                    await asyncio.sleep(step.delay)
                    continue
                try:
                    await self._recover(outage_wall, reason)
                except REDIS_FAILURES as exc:
                    await _close_link(link)
                    link = None
                    if not is_retryable(exc):
                        self._fail(wrap_redis_error(exc, "re-asserting the intents"), exc)
                        return
                    await asyncio.sleep(outage.recovery_failed())
                    continue
            self._link = link
            self.connected = True  # from here on, subscribe() sends SUBSCRIBE itself
            try:
                await self._catch_up(link)
                await self._run_link(link)
            except REDIS_FAILURES as exc:
                if not is_retryable(exc):
                    self._fail(wrap_redis_error(exc, "reading from the pub/sub connection"), exc)
                    return
                reason = f"Redis connection lost: {exc}"
                outage_wall = time.time()
                outage.lost(loop.time())
                log.warning("client %s: %s; reconnecting", self._client_id, reason)
            finally:
                self.connected = False
                self._link = None
                self._rests_closed += link.rests
                await _close_link(link)
            link = None

    async def _catch_up(self, link: Link) -> None:
        """(Un)subscribe what changed while the link was being opened (send() skipped it)."""
        wanted = {self._keys.channel(name) for name in self._topics} | {self._notices_channel}
        missing = wanted - link.channels
        extra = link.channels - wanted
        if missing:
            await link.send("SUBSCRIBE", *sorted(missing))
        if extra:
            await link.send("UNSUBSCRIBE", *sorted(extra))

    async def _run_link(self, link: Link) -> None:
        """Read the link while watching its health; raise when either fails.

        Messages the link had handed over but not yet delivered (the backlog) are delivered
        before this raises: they were received, so they come before the Gap.
        """
        self._backlog.clear()
        self._backlog_ready.clear()
        self.blocked = False
        name = f"fanout-{self._client_id}"
        run = asyncio.create_task(link.run(self.accept), name=f"{name}-link")
        watch = asyncio.create_task(self._watch(link), name=f"{name}-watch")
        drain = asyncio.create_task(self._drain(link), name=f"{name}-drain")
        children = [run, watch, drain]
        try:
            done, _ = await asyncio.wait(children, return_when=asyncio.FIRST_COMPLETED)
            # Several can end together (a failover drops the connection as the watch notices
            # it): every exception is retrieved, the first child's is raised.
            errors = [task.exception() for task in children if task in done]
            for error in errors:
                if error is not None:
                    raise error
            raise RedisConnectionError("the pub/sub reader stopped")  # pragma: no cover
        except REDIS_FAILURES:
            await stop_client_tasks(children, self._close_timeout)
            await self._flush_backlog()
            raise
        finally:
            await stop_client_tasks(children, self._close_timeout)
            for task in children:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: one that ended while being stopped
            self.blocked = False

    async def _watch(self, link: Link) -> None:
        """Notice a dead connection: PING when nothing arrived for an interval, then expect
        something (the PONG at least) within the next one."""
        interval = self._health_interval
        liveness = Liveness(self._rx_count)
        dispatch = self._dispatch
        while True:
            await asyncio.sleep(interval)
            if await follow_primary(self._redis):
                raise RedisConnectionError("the Redis primary moved (Sentinel failover)")
            if link.replaced:
                raise RedisConnectionError(
                    "the pub/sub connection was re-established underneath; subscriptions lost"
                )
            verdict = liveness.tick(self._rx_count, busy=self.blocked or dispatch.waiting)
            if verdict == "dead":
                raise RedisConnectionError(
                    f"no reply to a health-check PING within {interval:g} s (silent network cut?)"
                )
            if verdict == "ping":
                await link.send("PING")

    # -- the hot path -------------------------------------------------------------------------
    def accept(self, replies: list[Any]) -> None:
        """The hot path, called by the link with the replies of one socket read.

        Each message becomes an :class:`Event` (topic and bytes; decoding happens later, if
        the consumer asks) and goes into the buffers without waiting. What cannot be filed
        now (a full buffer under ``block``, a notice, which needs awaiting) goes to the
        backlog with everything after it, the link is paused and the drain task delivers it.
        """
        self._rx_count += len(replies)
        if self._backlog:
            self._defer(replies, 0)
            return
        channels = self._channels
        stream = self._stream
        dispatch = self._dispatch
        idle = dispatch.stream_idle  # none of these change while this runs: no await in it
        handlers = dispatch.has_handlers
        message = _MESSAGE
        index = -1
        for msg in replies:
            index += 1
            if (
                not isinstance(msg, list)
                or len(msg) != 3
                or (msg[0] != message and msg[0] != _SMESSAGE)
            ):
                if isinstance(msg, Exception):
                    self._reply_error(msg)
                continue  # subscribe/unsubscribe confirmations, PONG
            entry = channels.get(msg[1])
            if entry is None:
                if msg[1] == self._notices_channel_bytes:
                    self._defer(replies, index)
                    return
                continue  # a channel just unsubscribed
            event = Event(entry[0], entry[1], msg[2])
            if idle:
                stream.push_dropping(event)
            elif not stream.offer(event):
                self._defer(replies, index + 1, event)
                return
            if handlers and dispatch.handlers_for(entry[0]) and not dispatch.callbacks.offer(event):
                self._defer(replies, index + 1, _CallbacksOnly(event))
                return

    def _defer(self, replies: list[Any], start: int, first: Any = None) -> None:
        """Backlog ``first`` (an Event or _CallbacksOnly) and ``replies[start:]``; pause."""
        backlog = self._backlog
        if first is not None:
            backlog.append(first)
        backlog.extend(replies[start:] if start else replies)
        if backlog and not self.blocked:
            self.blocked = True
            link = self._link
            if link is not None:
                link.pause()
            self._backlog_ready.set()

    def _reply_error(self, error: Exception) -> None:
        """An error reply on the pub/sub connection (a SUBSCRIBE refused by an ACL): logged,
        the first ones each, then one in a thousand."""
        self._reply_errors += 1
        count = self._reply_errors
        if count <= _LOGGED_REPLY_ERRORS or count % 1000 == 0:
            log.warning("Redis refused a pub/sub command: %s (%d so far)", error, count)

    async def _drain(self, link: Link) -> None:
        """Deliver the backlog in order (waiting for room as needed), then resume the link."""
        ready = self._backlog_ready
        while True:
            await ready.wait()
            ready.clear()
            await self._flush_backlog()
            self.blocked = False
            link.resume()

    async def _flush_backlog(self) -> None:
        backlog = self._backlog
        channels = self._channels
        deliver_event = self._dispatch.deliver_event
        while backlog:
            work = backlog.popleft()
            if type(work) is Event:
                await deliver_event(work, to_stream=True)
            elif type(work) is _CallbacksOnly:
                await deliver_event(work.event, to_stream=False)
            elif isinstance(work, list) and len(work) == 3 and work[0] in (_MESSAGE, _SMESSAGE):
                entry = channels.get(work[1])
                if entry is not None:
                    await deliver_event(Event(entry[0], entry[1], work[2]), to_stream=True)
                elif work[1] == self._notices_channel_bytes:
                    await self._on_notice(work[2])
            elif isinstance(work, Exception):
                self._reply_error(work)

    # -- notices, gaps, recovery --------------------------------------------------------------
    async def _on_notice(self, payload: bytes) -> None:
        dispatch = self._dispatch
        to_consumer = dispatch.notices_wanted or bool(dispatch.notice_handlers)
        if not (to_consumer or self._upstream_gaps):
            return
        try:
            body = json.loads(payload)
        except ValueError:
            log.debug("ignoring a malformed notice: %r", payload[:200])
            return
        if not isinstance(body, dict):
            return
        at = body.get("at")
        notice = Notice(
            event=str(body.get("event", "")),
            at=at if isinstance(at, int) and not isinstance(at, bool) else None,
            data=body,
        )
        if to_consumer:
            await dispatch.deliver(notice)
        if notice.event == "gap" and self._upstream_gaps:
            await self._collector_gap(notice)

    async def _collector_gap(self, notice: Notice) -> None:
        """A collector ``gap`` notice: a :class:`Gap` for the topics it concerns, then their
        last values (as after a Redis outage)."""
        body = notice.data
        connection = body.get("connection")
        connection = connection if isinstance(connection, str) else None
        # "public"/"private": that connection's topics; none, or "all" (a failover, a lapsed
        # lease, the collector stopping), or any other word: every topic of this client.
        names = tuple(
            name
            for name in sorted(self._topics)
            if connection not in ("public", "private")
            or (self._topics[name].type in _PRIVATE) == (connection == "private")
        )
        if not names:
            return
        ended = notice.at / 1000 if notice.at is not None else time.time()
        since = body.get("since")
        started = ended
        if isinstance(since, int) and not isinstance(since, bool) and 0 < since / 1000 <= ended:
            started = since / 1000
        reason = body.get("reason")
        gap = Gap(
            reason=f"collector: {reason}"
            if isinstance(reason, str) and reason
            else "collector gap",
            started_at=started,
            ended_at=ended,
            topics=names,
            source="collector",
            connection=connection,
        )
        self.upstream_gaps += 1
        await self._dispatch.deliver(gap)
        await self._refresh(names)

    async def _recover(self, started: float, reason: str) -> None:
        """After a reconnect: intents back (replace), then a Gap, then the last values."""
        await self._intents.reassert()
        self.reconnects += 1
        ended = time.time()
        names = tuple(sorted(self._topics))
        log.info(
            "client %s reconnected to Redis after %.1f s; intents re-asserted, %d topic(s) "
            "resubscribed",
            self._client_id,
            ended - started,
            len(names),
        )
        await self._dispatch.deliver(
            Gap(reason=reason, started_at=started, ended_at=ended, topics=names)
        )
        await self._refresh(names)

    async def _refresh(self, names: tuple[str, ...]) -> None:
        """Deliver the last value of each of ``names`` as a cached :class:`Event`."""
        if not names:
            return
        topics = [(name, self._topics[name]) for name in names]
        if self._cluster:  # last values live in their channels' slots: a GET each, one trip
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, _ in topics:
                    pipe.execute_command("GET", self._keys.last(name), **{NEVER_DECODE: True})
                values = await pipe.execute()
        else:
            values = await self._redis.execute_command(  # type: ignore[no-untyped-call, unused-ignore]
                "MGET", *(self._keys.last(name) for name, _ in topics), **{NEVER_DECODE: True}
            )
        for (name, topic), value in zip(topics, values, strict=True):
            if value is not None and name in self._topics:
                await self._dispatch.deliver(Event(name, topic, bytes(value), cached=True))


async def _close_link(link: Link) -> None:
    try:
        await link.close()
    except REDIS_FAILURES as exc:
        log.debug("closing a pub/sub connection: %s", exc)


async def stop_client_tasks(tasks: list[asyncio.Task[None]], limit: float) -> None:
    """Cancel ``tasks`` and wait for them, at most ``limit`` seconds
    (:func:`subscriptions.tasks.stop_tasks`: the cancellation is repeated every 0.1 s, since some
    redis-py calls swallow one). A task still alive after ``limit`` is logged, not waited for."""
    pending = await stop_tasks(tasks, within=limit)
    for task in pending:
        log.error("client task %s did not stop within %.1f s", task.get_name(), limit)


def link_class(reader: PubSubReader, read_coalesce: float = 0.0) -> Callable[[Redis], Link]:
    """The link for ``pubsub_reader`` (``"auto"``: hiredis when importable, else redis-py),
    resting its reads ``read_coalesce`` seconds when busy (the hiredis link only; checked by
    the caller, :func:`subscriptions.coalesce.check_interval`)."""
    if reader == "redis-py":
        if read_coalesce:
            raise ValueError(
                "read_coalesce needs the hiredis pub/sub reader (pubsub_reader='auto' or "
                "'hiredis'), not 'redis-py'"
            )
        return PubSubLink
    if reader not in ("auto", "hiredis"):
        raise ValueError(f"pubsub_reader must be 'auto', 'hiredis' or 'redis-py', not {reader!r}")
    if hiredis_available():
        if read_coalesce:
            return functools.partial(HiredisLink, read_coalesce=read_coalesce)
        return HiredisLink
    if reader == "hiredis":
        raise ClientError(
            "pubsub_reader='hiredis' needs the hiredis package: pip install 'redis[hiredis]'"
        )
    log.warning(  # pragma: no cover - hiredis comes with redis[hiredis], our dependency
        "the hiredis package is missing: the client reads pub/sub through redis-py, several "
        "times slower per event; install 'redis[hiredis]'"
    )
    return PubSubLink  # pragma: no cover
