"""The asyncio client: :class:`FanoutClient`.

Tasks (each owned by the client, cancelled and awaited on close with a time limit; a crash is
logged in one place, :meth:`FanoutClient._task_done`, and fails the client loudly):

==============  ==================================================================================
``reader``      owns the pub/sub link (:mod:`client._link`): the link hands every socket read's
                messages to :meth:`FanoutClient._accept`, which files them into the buffers
                synchronously; a ``drain`` child task takes over, in order, whatever cannot be
                filed at once (a full buffer under ``block``: the link stops reading meanwhile; a
                notice). It pings the link when idle (a silent network cut is noticed),
                reconnects with capped backoff and jitter, re-asserts the intents, reports a
                :class:`Gap`, refreshes from the last values
``heartbeat``   refreshes the intent key every third of the lease (SADD + PEXPIRE in one
                MULTI/EXEC); independent of the consumer, so a slow consumer never loses the lease
``dispatcher``  runs the callbacks registered with :meth:`FanoutClient.on`, ``on_gap`` and
                ``on_notice``, one item at a time, in order
==============  ==================================================================================

Data path::

    Redis ──pub/sub──▶ link ─accept()─▶ stream buffer ───▶ ``async for item in client``
                                 └────▶ callback buffer ─▶ dispatcher ─▶ callbacks

Both buffers are bounded (``queue_size``) with the same ``overflow`` policy (see
:mod:`client._buffer`). While the client has event callbacks and nobody has started iterating,
the stream buffer only keeps the latest ``queue_size`` items and never makes the reader wait: a
callbacks-only program cannot stall on a buffer nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from upbit_fanout.client._buffer import Buffer, Overflow
from upbit_fanout.client._cluster_link import ClusterLink
from upbit_fanout.client._errors import (
    ClientError,
    RedisUnavailableError,
    SnapshotTimeoutError,
    is_retryable,
    wrap_redis_error,
)
from upbit_fanout.client._fast_link import HiredisLink, hiredis_available
from upbit_fanout.client._items import Event, Gap, Item, Notice
from upbit_fanout.client._link import Link, PubSubLink
from upbit_fanout.client._log import log
from upbit_fanout.client._policy import GiveUp, Liveness, Outage
from upbit_fanout.client._snapshot import take_snapshots
from upbit_fanout.client._streams import PrivateStream, StreamGroup
from upbit_fanout.client._util import default_client_id, transient_id
from upbit_fanout.subscriptions.connection import (
    cluster_of,
    follow_primary,
    is_sentinel_url,
    open_redis,
    redis_from_url,
)
from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import heartbeat_commands, lease_ms, release_commands
from upbit_fanout.subscriptions.redact import redact_url
from upbit_fanout.subscriptions.tasks import stop_tasks
from upbit_fanout.subscriptions.topics import Topic, parse_topic
from upbit_fanout.subscriptions.upbit_fields import PRIVATE_TYPES

__all__ = ["EventCallback", "FanoutClient", "GapCallback", "NoticeCallback"]

EventCallback: TypeAlias = Callable[[Event], Awaitable[None] | None]
GapCallback: TypeAlias = Callable[[Gap], Awaitable[None] | None]
NoticeCallback: TypeAlias = Callable[[Notice], Awaitable[None] | None]
TopicLike: TypeAlias = str | Topic
PubSubReader: TypeAlias = Literal["auto", "hiredis", "redis-py"]

_GLOB_CHARS: Final = frozenset("*?[")
_MESSAGE: Final = b"message"
_SMESSAGE: Final = b"smessage"
_BATCH: Final = 1024
_RELEASE_TIMEOUT: Final = 2.0
_LOGGED_CALLBACK_ERRORS: Final = 10
_PRIVATE: Final = frozenset(PRIVATE_TYPES)


@dataclass(frozen=True, slots=True)
class _CallbacksOnly:
    """Backlog entry: an event already in the stream buffer, still due to the callbacks."""

    event: Event


@dataclass(frozen=True, slots=True, eq=False)
class _Handler:
    pattern: str
    glob: bool
    callback: EventCallback


class FanoutClient:
    """Subscribe to upbit-fanout topics through Redis and receive their events.

    ::

        async with FanoutClient("redis://localhost:6379/0") as client:
            await client.subscribe("ticker:KRW-BTC", "orderbook:KRW-BTC.5")
            async for item in client:
                if item.kind == "event":
                    print(item.topic, item.data["trade_price"])

    ``redis`` is a URL (the client then creates and closes its own connection pool; Sentinel URLs
    too, see :func:`upbit_fanout.subscriptions.connection.redis_from_url`) or a
    ``redis.asyncio.Redis`` you own (TLS, ACL user, Sentinel: configured as you like; it is not
    closed by the client). Every other argument is keyword-only; docs/client.md explains each.
    """

    def __init__(
        self,
        redis: Redis | str,
        *,
        client_id: str | None = None,
        key_prefix: str = "upbit",
        lease_seconds: float = 30.0,
        queue_size: int = 10_000,
        overflow: Overflow = "block",
        notices: bool = False,
        upstream_gaps: bool = True,
        health_check_interval: float = 5.0,
        max_reconnect_delay: float = 5.0,
        max_outage: float | None = None,
        close_timeout: float = 5.0,
        pubsub_reader: PubSubReader = "auto",
    ) -> None:
        lease_ms(lease_seconds)  # validates (>= 1 s)
        if not math.isfinite(health_check_interval) or health_check_interval <= 0:
            raise ValueError("health_check_interval must be a positive number of seconds")
        if max_outage is not None and max_outage <= 0:
            raise ValueError("max_outage must be positive (or None: retry forever)")
        self._stream: Buffer[Item] = Buffer(queue_size, overflow)  # validates both
        self._callbacks: Buffer[Item] = Buffer(queue_size, overflow)
        self._keys = Keys(key_prefix)
        self.client_id = client_id if client_id is not None else default_client_id()
        self._keys.intents(self.client_id)  # validates the client id at once
        self._redis_url = redis if isinstance(redis, str) else None
        if isinstance(redis, str):
            self._url = redact_url(redis)
            self._redis: Redis = redis_from_url(redis)
            self._owns_redis = True
        else:
            self._url = "the given Redis client"
            self._redis = redis
            self._owns_redis = False
        self._cluster = cluster_of(self._redis) is not None
        if self._cluster:
            self._keys = self._keys.clustered()  # docs/contract.md, "Redis Cluster"
        self._lease = float(lease_seconds)
        self._notices_wanted = notices
        self._upstream_gaps = upstream_gaps
        self._health_interval = float(health_check_interval)
        self._max_reconnect_delay = float(max_reconnect_delay)
        self._max_outage = max_outage
        self._close_timeout = float(close_timeout)
        self._link_class = _link_class(pubsub_reader)

        self._topics: dict[str, Topic] = {}
        self._channels: dict[bytes, tuple[str, Topic]] = {}
        self._notices_channel = self._keys.notices
        self._notices_channel_bytes = self._notices_channel.encode()
        self._handlers: list[_Handler] = []
        self._handler_cache: dict[str, tuple[EventCallback, ...]] = {}
        self._gap_handlers: list[GapCallback] = []
        self._notice_handlers: list[NoticeCallback] = []
        self._stream_started = False
        self._stream_idle = False
        self._has_handlers = False

        self._intent_lock = asyncio.Lock()
        self._ever_wrote = False
        self._asserted = False
        self._dirty = False
        self._snapshot_seq = 0

        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._failure: BaseException | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._link: Link | None = None
        self._connected = False
        self._rx_count = 0
        self._reader_blocked = False
        # Replies the link handed over that accept() could not file at once, in order; while
        # it is not empty the link is paused and the drain task owns delivery (at most one
        # socket read's worth, plus what the reconnect logic adds).
        self._backlog: deque[Any] = deque()
        self._backlog_ready = asyncio.Event()
        self._reply_errors = 0
        self.callback_errors = 0
        """Callbacks that raised (each is logged; the first ones with a traceback)."""
        self.reconnects = 0
        """Times the client lost Redis and came back (one :class:`Gap` each)."""
        self.upstream_gaps = 0
        """Collector gap notices reported as a :class:`Gap` (``upstream_gaps=True``)."""

    # -- properties ---------------------------------------------------------------------------
    @property
    def topics(self) -> frozenset[str]:
        """The topics this client holds intents for."""
        return frozenset(self._topics)

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._connected

    @property
    def dropped(self) -> int:
        """Items discarded by the ``drop_oldest`` policy (0 under ``block``), summed over the
        iterator's and the callbacks' buffers."""
        return self._stream.dropped + self._callbacks.dropped

    @property
    def key_prefix(self) -> str:
        return self._keys.prefix

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> FanoutClient:
        if self._state != "new":
            raise ClientError("a FanoutClient can be opened only once; make a new one")
        try:
            await self._detect_cluster()
            await self._redis.ping()
            link = await self._open_link()
        except (RedisError, RedisClusterException, OSError) as exc:
            self._state = "closed"
            await self._close_redis()
            raise wrap_redis_error(exc, f"connecting to {self._url}") from exc
        except BaseException:
            self._state = "closed"
            await self._close_redis()
            raise
        self._state = "open"
        self._link = link
        self._connected = True
        self._spawn("reader", self._run_reader(link))
        self._spawn("heartbeat", self._heartbeat())
        self._spawn("dispatcher", self._dispatch())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every task, give the lease back (DEL + control message), close. Idempotent."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            await self._close_redis()
            return
        self._state = "closing"
        self._stream.close()
        self._callbacks.close()
        current = asyncio.current_task()  # aclose() from a callback: not the dispatcher itself
        await _stop_tasks(
            [task for task in self._tasks.values() if task is not current], self._close_timeout
        )
        self._tasks.clear()
        if self._link is not None:
            await self._close_link(self._link)
            self._link = None
        if self._ever_wrote:
            await self._release()
        await self._close_redis()
        self._state = "closed"

    async def _detect_cluster(self) -> None:
        """A plain URL of a Redis Cluster node: switch to a cluster client (and cluster names)."""
        if self._cluster or not self._owns_redis:
            return
        url = self._redis_url
        if url is None or is_sentinel_url(url) or url.startswith("unix:"):
            return
        redis = await open_redis(url)
        if cluster_of(redis) is None:
            await redis.aclose()
            return
        await self._redis.aclose()
        self._redis, self._cluster, self._keys = redis, True, self._keys.clustered()

    async def _release(self) -> None:
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                async with self._redis.pipeline(transaction=not self._cluster) as pipe:
                    for command in release_commands(self._keys, self.client_id):
                        pipe.execute_command(*command)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "could not release the intents of client %s (%s); they expire with the lease "
                "within %.0f s",
                self.client_id,
                exc,
                self._lease,
            )

    async def _close_redis(self) -> None:
        if self._owns_redis:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()

    def _check_open(self) -> None:
        if self._state != "open":
            raise ClientError(
                "this FanoutClient is not open: use it inside 'async with FanoutClient(...)'"
                if self._state == "new"
                else "this FanoutClient is closed"
            )
        if self._failure is not None:
            raise self._failure

    # -- subscriptions ------------------------------------------------------------------------
    async def subscribe(self, *topics: TopicLike, codes: Iterable[str] | None = None) -> None:
        """Hold intents for ``topics`` and receive their events.

        ``subscribe("ticker:KRW-BTC", "orderbook:KRW-BTC.5")``, or types with ``codes``:
        ``subscribe("trade", "ticker", codes=["KRW-BTC", "KRW-ETH"])``. Every topic is checked
        first: an invalid one raises :class:`InvalidTopicError` and nothing is written. Returns
        once the intent is in Redis (and the collector told through ``P:control``).
        """
        wanted = _expand(topics, codes)
        self._check_open()
        async with self._intent_lock:
            added = [topic for topic in wanted if str(topic) not in self._topics]
            if not added:
                return
            channels = [self._add_topic(topic) for topic in added]
            await self._send_to_link("SUBSCRIBE", channels)
            try:
                await self._write_intents(replace=self._dirty, control=True)
            except (RedisError, OSError) as exc:
                for topic in added:
                    self._remove_topic(str(topic))
                self._dirty = True
                await self._send_to_link("UNSUBSCRIBE", channels)
                raise wrap_redis_error(exc, "writing the subscription intent") from exc

    async def unsubscribe(self, *topics: TopicLike, codes: Iterable[str] | None = None) -> None:
        """Give up ``topics`` (same forms as :meth:`subscribe`); unknown ones are ignored.

        No event of these topics is delivered after this returns, even if already buffered.
        """
        wanted = _expand(topics, codes)
        self._check_open()
        async with self._intent_lock:
            removed = [str(topic) for topic in wanted if str(topic) in self._topics]
            if not removed:
                return
            channels = [self._remove_topic(name) for name in removed]
            await self._send_to_link("UNSUBSCRIBE", channels)
            try:
                await self._write_intents(replace=True, control=True)
            except (RedisError, OSError) as exc:
                self._dirty = True  # the next heartbeat rewrites the set
                raise wrap_redis_error(exc, "writing the subscription intent") from exc

    def _add_topic(self, topic: Topic) -> str:
        name = str(topic)
        channel = self._keys.channel(name)
        self._topics[name] = topic
        self._channels[channel.encode()] = (name, topic)
        return channel

    def _remove_topic(self, name: str) -> str:
        channel = self._keys.channel(name)
        self._topics.pop(name, None)
        self._channels.pop(channel.encode(), None)
        return channel

    async def _send_to_link(self, command: str, channels: list[str]) -> None:
        """Best effort: when the link is down, the reader resubscribes everything on reconnect."""
        link = self._link
        if link is None or not self._connected:
            return
        try:
            await link.send(command, *channels)
        except (RedisError, OSError) as exc:
            log.debug("could not send %s on the pub/sub connection (%s)", command, exc)

    async def _write_intents(self, *, replace: bool, control: bool) -> tuple[bool, bool]:
        """Write the intent key (caller holds the lock). Returns (key existed, key expected)."""
        key = self._keys.intents(self.client_id)
        names = list(self._topics)
        commands = heartbeat_commands(
            self._keys, self.client_id, names, self._lease, replace=replace
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.execute_command("EXISTS", key)
            for command in commands:
                pipe.execute_command(*command)
            if control and not self._cluster:
                pipe.execute_command("PUBLISH", self._keys.control, self.client_id)
            results = await pipe.execute()
        if control and self._cluster:  # a cluster transaction stays in the key's slot
            await self._redis.publish(self._keys.control, self.client_id)
        expected = self._asserted
        self._asserted = bool(names)
        self._ever_wrote = True
        self._dirty = False
        return bool(results[0]), expected

    # -- heartbeat ----------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self._lease / 3
        delay = interval
        failing = False
        while True:
            await asyncio.sleep(delay)
            if not self._topics and not self._dirty:
                delay = interval
                continue
            try:
                async with self._intent_lock:
                    existed, expected = await self._write_intents(
                        replace=self._dirty, control=False
                    )
                    if expected and not existed:
                        log.warning(
                            "the intent key of client %s had expired (Redis restarted, or this "
                            "process was stalled past its %.0f s lease); re-asserted it",
                            self.client_id,
                            self._lease,
                        )
                        await self._redis.publish(self._keys.control, self.client_id)
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("heartbeat of client %s failed (%s); retrying", self.client_id, exc)
                failing = True
                delay = min(interval, 1.0)
                continue
            if failing:
                log.info("heartbeat of client %s works again", self.client_id)
                failing = False
            delay = interval

    # -- reader -------------------------------------------------------------------------------
    async def _open_link(self) -> Link:
        link: Link = (
            ClusterLink(self._redis, [self._notices_channel])
            if self._cluster
            else self._link_class(self._redis)
        )
        channels = [self._notices_channel, *(self._keys.channel(name) for name in self._topics)]
        try:
            await link.open(channels)
        except BaseException:
            await self._close_link(link)
            raise
        return link

    async def _close_link(self, link: Link) -> None:
        try:
            await link.close()
        except (RedisError, OSError) as exc:
            log.debug("closing a pub/sub connection: %s", exc)

    async def _run_reader(self, first: Link) -> None:
        """Read, and when the connection breaks, reconnect until it works or cannot."""
        loop = asyncio.get_running_loop()
        link: Link | None = first
        outage_wall = 0.0
        reason = ""
        outage = Outage(
            loop.time(), max_outage=self._max_outage, max_delay=self._max_reconnect_delay
        )
        while self._state == "open":
            if link is None:
                try:
                    link = await self._open_link()
                except (RedisError, OSError) as exc:
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
                except (RedisError, OSError) as exc:
                    await self._close_link(link)
                    link = None
                    if not is_retryable(exc):
                        self._fail(wrap_redis_error(exc, "re-asserting the intents"), exc)
                        return
                    await asyncio.sleep(outage.recovery_failed())
                    continue
            self._link = link
            self._connected = True  # from here on, subscribe() sends SUBSCRIBE itself
            try:
                await self._catch_up(link)
                await self._run_link(link)
            except (RedisError, OSError) as exc:
                if not is_retryable(exc):
                    self._fail(wrap_redis_error(exc, "reading from the pub/sub connection"), exc)
                    return
                reason = f"Redis connection lost: {exc}"
                outage_wall = time.time()
                outage.lost(loop.time())
                log.warning("client %s: %s; reconnecting", self.client_id, reason)
            finally:
                self._connected = False
                self._link = None
                await self._close_link(link)
            link = None

    async def _catch_up(self, link: Link) -> None:
        """(Un)subscribe what changed while the link was being opened (subscribe() skipped it)."""
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
        self._reader_blocked = False
        name = f"fanout-{self.client_id}"
        run = asyncio.create_task(link.run(self._accept), name=f"{name}-link")
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
        except (RedisError, OSError):
            await _stop_tasks(children, self._close_timeout)
            await self._flush_backlog()
            raise
        finally:
            await _stop_tasks(children, self._close_timeout)
            for task in children:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: one that ended while being stopped
            self._reader_blocked = False

    async def _watch(self, link: Link) -> None:
        """Notice a dead connection: PING when nothing arrived for an interval, then expect
        something (the PONG at least) within the next one."""
        interval = self._health_interval
        liveness = Liveness(self._rx_count)
        while True:
            await asyncio.sleep(interval)
            if await follow_primary(self._redis):
                raise RedisConnectionError("the Redis primary moved (Sentinel failover)")
            if link.replaced:
                raise RedisConnectionError(
                    "the pub/sub connection was re-established underneath; subscriptions lost"
                )
            verdict = liveness.tick(self._rx_count, busy=self._reader_blocked)
            if verdict == "dead":
                raise RedisConnectionError(
                    f"no reply to a health-check PING within {interval:g} s (silent network cut?)"
                )
            if verdict == "ping":
                await link.send("PING")

    def _accept(self, replies: list[Any]) -> None:
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
            if self._stream_idle:
                stream.push_dropping(event)
            elif not stream.offer(event):
                self._defer(replies, index + 1, event)
                return
            if (
                self._has_handlers
                and self._handlers_for(entry[0])
                and not self._callbacks.offer(event)
            ):
                self._defer(replies, index + 1, _CallbacksOnly(event))
                return

    def _defer(self, replies: list[Any], start: int, first: Any = None) -> None:
        """Backlog ``first`` (an Event or _CallbacksOnly) and ``replies[start:]``; pause."""
        backlog = self._backlog
        if first is not None:
            backlog.append(first)
        backlog.extend(replies[start:] if start else replies)
        if backlog and not self._reader_blocked:
            self._reader_blocked = True
            link = self._link
            if link is not None:
                link.pause()
            self._backlog_ready.set()

    def _reply_error(self, error: Exception) -> None:
        """An error reply on the pub/sub connection (a SUBSCRIBE refused by an ACL): logged,
        the first ones each, then one in a thousand."""
        self._reply_errors += 1
        count = self._reply_errors
        if count <= _LOGGED_CALLBACK_ERRORS or count % 1000 == 0:
            log.warning("Redis refused a pub/sub command: %s (%d so far)", error, count)

    async def _drain(self, link: Link) -> None:
        """Deliver the backlog in order (waiting for room as needed), then resume the link."""
        ready = self._backlog_ready
        while True:
            await ready.wait()
            ready.clear()
            await self._flush_backlog()
            self._reader_blocked = False
            link.resume()

    async def _flush_backlog(self) -> None:
        backlog = self._backlog
        channels = self._channels
        while backlog:
            work = backlog.popleft()
            if type(work) is Event:
                await self._deliver_event(work, to_stream=True)
            elif type(work) is _CallbacksOnly:
                await self._deliver_event(work.event, to_stream=False)
            elif isinstance(work, list) and len(work) == 3 and work[0] in (_MESSAGE, _SMESSAGE):
                entry = channels.get(work[1])
                if entry is not None:
                    await self._deliver_event(Event(entry[0], entry[1], work[2]), to_stream=True)
                elif work[1] == self._notices_channel_bytes:
                    await self._on_notice(work[2])
            elif isinstance(work, Exception):
                self._reply_error(work)

    async def _deliver_event(self, event: Event, *, to_stream: bool) -> None:
        if to_stream:
            if self._stream_idle:
                self._stream.push_dropping(event)
            elif not self._stream.offer(event):
                await self._put_waiting(self._stream, event)
        if (
            self._has_handlers
            and self._handlers_for(event.topic)
            and not self._callbacks.offer(event)
        ):
            await self._put_waiting(self._callbacks, event)

    async def _put_waiting(self, buffer: Buffer[Item], item: Item) -> None:
        blocked, self._reader_blocked = self._reader_blocked, True
        try:
            await buffer.put(item)
        finally:
            self._reader_blocked = blocked

    async def _deliver(self, item: Item) -> None:
        """Deliver a non-hot-path item (gap, notice, refreshed event) to whoever wants it."""
        if isinstance(item, Notice):
            to_stream = self._notices_wanted
            to_callbacks = bool(self._notice_handlers)
        elif isinstance(item, Gap):
            to_stream = True
            to_callbacks = bool(self._gap_handlers)
        else:
            to_stream = True
            to_callbacks = bool(self._handlers_for(item.topic))
        if to_stream:
            if self._stream_idle:
                self._stream.push_dropping(item)
            elif not self._stream.offer(item):
                await self._put_waiting(self._stream, item)
        if to_callbacks and not self._callbacks.offer(item):
            await self._put_waiting(self._callbacks, item)

    async def _on_notice(self, payload: bytes) -> None:
        if not (self._notices_wanted or self._notice_handlers or self._upstream_gaps):
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
        if self._notices_wanted or self._notice_handlers:
            await self._deliver(notice)
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
        await self._deliver(gap)
        await self._refresh(names)

    async def _recover(self, started: float, reason: str) -> None:
        """After a reconnect: intents back (replace), then a Gap, then the last values."""
        async with self._intent_lock:
            await self._write_intents(replace=True, control=True)
        self.reconnects += 1
        ended = time.time()
        names = tuple(sorted(self._topics))
        log.info(
            "client %s reconnected to Redis after %.1f s; intents re-asserted, %d topic(s) "
            "resubscribed",
            self.client_id,
            ended - started,
            len(names),
        )
        await self._deliver(Gap(reason=reason, started_at=started, ended_at=ended, topics=names))
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
            values = await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "MGET", *(self._keys.last(name) for name, _ in topics), **{NEVER_DECODE: True}
            )
        for (name, topic), value in zip(topics, values, strict=True):
            if value is not None and name in self._topics:
                await self._deliver(Event(name, topic, bytes(value), cached=True))

    # -- consuming ----------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Item]:
        return self.events()

    def events(self) -> AsyncIterator[Item]:
        """The items in arrival order: :class:`Event`, :class:`Gap`, and :class:`Notice` when
        the client was made with ``notices=True``.

        Ends when the client is closed; raises :class:`RedisUnavailableError` (after the items
        already received) when the client gave up on Redis. One consumer per client: two
        iterators would share the items between them.
        """
        self._stream_started = True
        self._update_feed()
        return _Events(self)

    def batches(self, max_items: int = _BATCH) -> AsyncIterator[list[Item]]:
        """The same items as :meth:`events`, in lists: each ``async for`` step waits for the
        first item, then returns every item already received, up to ``max_items``.

        Never yields an empty list; ends and raises as :meth:`events` does. Cheaper per item
        when events come in bursts (one wake-up of your task per batch). One consumer per
        client: do not mix it with :meth:`events`.
        """
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive int, got {max_items!r}")
        self._stream_started = True
        self._update_feed()
        return _Batches(self, max_items)

    async def _next_batch(self, limit: int, wait: float | None) -> list[Item] | None:
        """Up to ``limit`` items, waiting at most ``wait`` s for the first (BlockingClient).

        ``[]`` means the timeout passed, None that the client is closed.
        """
        self._stream_started = True
        self._update_feed()
        buffer = self._stream
        while True:
            if self._state != "open":
                return None
            batch = [
                item
                for item in buffer.pop_many(limit)
                if type(item) is not Event or item.topic in self._topics
            ]
            if batch:
                return batch
            if self._failure is not None:
                raise self._failure
            if wait is None:
                await buffer.waiter()
                continue
            try:
                async with asyncio.timeout(wait):
                    await buffer.wait()
            except TimeoutError:
                return []

    # -- callbacks ----------------------------------------------------------------------------
    def on(self, pattern: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event whose topic matches ``pattern``.

        ``pattern`` is a topic (``"ticker:KRW-BTC"``) or a glob (``"ticker:*"``, ``"*"``).
        The callback may be a function or a coroutine function; callbacks run one at a time,
        in order, on the client's dispatcher task (keep them quick: a slow one slows only the
        callbacks, never the lease). One that raises is logged and counted in
        :attr:`callback_errors`. Returns a function that removes the callback. Registering
        callbacks does not subscribe: call :meth:`subscribe` for the topics.
        """
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        glob = any(ch in _GLOB_CHARS for ch in pattern)
        if not glob:
            pattern = str(parse_topic(pattern))
        handler = _Handler(pattern, glob, callback)
        self._handlers.append(handler)
        self._handlers_changed()

        def remove() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)
                self._handlers_changed()

        return remove

    def on_gap(self, callback: GapCallback) -> Callable[[], None]:
        """Call ``callback(gap)`` for each :class:`Gap` (a Redis reconnect of this client, or a
        collector gap notice). Returns a remover."""
        self._gap_handlers.append(callback)
        return lambda: _remove(self._gap_handlers, callback)

    def on_notice(self, callback: NoticeCallback) -> Callable[[], None]:
        """Call ``callback(notice)`` for each collector notice. Returns a remover."""
        self._notice_handlers.append(callback)
        return lambda: _remove(self._notice_handlers, callback)

    def _handlers_changed(self) -> None:
        self._handler_cache.clear()
        self._has_handlers = bool(self._handlers)
        self._update_feed()

    def _update_feed(self) -> None:
        # With callbacks and no iteration (yet), the stream keeps only the latest queue_size
        # items and never blocks the reader: a callbacks-only program must not stall on a
        # buffer nobody reads, and one that starts iterating later still gets recent items.
        self._stream_idle = bool(self._handlers) and not self._stream_started

    def _handlers_for(self, topic: str) -> tuple[EventCallback, ...]:
        found = self._handler_cache.get(topic)
        if found is None:
            found = tuple(
                handler.callback
                for handler in self._handlers
                if (
                    fnmatchcase(topic, handler.pattern)
                    if handler.glob
                    else topic == handler.pattern
                )
            )
            self._handler_cache[topic] = found
        return found

    async def _dispatch(self) -> None:
        buffer = self._callbacks
        while True:
            item = buffer.pop()
            if item is None:
                if self._state != "open" or self._failure is not None:
                    return  # closed, or failed (its buffer is closed: wait() would not wait)
                await buffer.wait()
                continue
            if isinstance(item, Event):
                if item.topic in self._topics:
                    for callback in self._handlers_for(item.topic):
                        await self._call(callback, item)
            elif isinstance(item, Gap):
                for gap_callback in tuple(self._gap_handlers):
                    await self._call(gap_callback, item)
            else:
                for notice_callback in tuple(self._notice_handlers):
                    await self._call(notice_callback, item)

    async def _call(self, callback: Callable[[Any], Awaitable[None] | None], item: Item) -> None:
        try:
            result = callback(item)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.callback_errors += 1
            count = self.callback_errors
            name = getattr(callback, "__qualname__", repr(callback))
            if count <= _LOGGED_CALLBACK_ERRORS:
                log.exception("callback %s failed on %r", name, item)
            elif count % 1000 == 0:
                log.error("callback %s failed on %r (%d callback errors so far)", name, item, count)

    # -- snapshots ----------------------------------------------------------------------------
    async def snapshot(
        self,
        topic: TopicLike,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline is this call's meaning
        max_age: float | None = None,
    ) -> Event:
        """The current value of one topic, whether or not this client subscribed to it.

        Answered at once from the topic's last-value key when the collector has the topic live
        (it is in ``P:union``) and, with ``max_age``, the event's ``timestamp`` is at most that
        many seconds old. A topic the collector does not have live is asked of its REST side
        (``P:snapshot``): the answer comes back on the topic's channel with ``stream_type``
        ``"REST"`` and costs no WebSocket message. Otherwise (a live topic without a value, no
        REST answer) the client holds a short-lived intent for the topic (its own key,
        ``{client_id}.snapN``, so it never disturbs this client's own intents), waits for the
        first event and lets the intent go. Raises :class:`SnapshotTimeoutError` after
        ``timeout`` seconds (no collector running, or a topic the collector refuses).
        """
        name = str(topic) if isinstance(topic, Topic) else str(parse_topic(topic))
        events = await self.snapshots([name], timeout=timeout, max_age=max_age)
        return events[name]

    async def snapshots(
        self,
        topics: Iterable[TopicLike],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline is this call's meaning
        max_age: float | None = None,
    ) -> dict[str, Event]:
        """:meth:`snapshot` for many topics at once: one round trip for the cached ones, one
        short-lived intent and one wait (all topics concurrently) for the rest.

        Returns ``{topic: event}``. On timeout, :class:`SnapshotTimeoutError` lists the topics
        still missing and carries the events that did arrive (``exc.received``).
        """
        wanted = {str(topic): topic for topic in _expand(tuple(topics), None)}
        self._check_open()
        if not wanted:
            return {}
        self._snapshot_seq += 1
        try:
            return await take_snapshots(
                self._redis,
                self._keys,
                transient_id(self.client_id, self._snapshot_seq),
                wanted,
                timeout=timeout,
                max_age=max_age,
            )
        except SnapshotTimeoutError:
            raise  # a TimeoutError, hence an OSError: not a Redis failure
        except (RedisError, OSError) as exc:
            raise wrap_redis_error(exc, "taking a snapshot") from exc

    # -- private streams ----------------------------------------------------------------------
    def private_stream(
        self, type_name: str = "myOrder", *, start: str = "$", block: float = 1.0
    ) -> PrivateStream:
        """A :class:`PrivateStream` reader of ``P:stream:{type_name}`` on this client's Redis
        (``start``: ``"$"`` now, ``"0"`` the beginning, or an entry id to resume after)."""
        return PrivateStream(
            self._redis, type_name, key_prefix=self._keys.prefix, start=start, block=block
        )

    def stream_group(
        self,
        type_name: str = "myOrder",
        *,
        group: str,
        consumer: str | None = None,
        start: str = "0",
        claim_idle: float = 30.0,
        block: float = 1.0,
    ) -> StreamGroup:
        """A :class:`StreamGroup` consumer (named ``consumer``, default this client's id) of
        ``group`` on ``P:stream:{type_name}``, on this client's Redis."""
        return StreamGroup(
            self._redis,
            type_name,
            group=group,
            consumer=consumer or self.client_id,
            key_prefix=self._keys.prefix,
            start=start,
            claim_idle=claim_idle,
            block=block,
        )

    # -- failures -----------------------------------------------------------------------------
    def _spawn(self, name: str, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"fanout-{self.client_id}-{name}")
        task.add_done_callback(self._task_done)
        self._tasks[name] = task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """The one place where a client task's end is noticed and, if it crashed, logged."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return  # the reader returns after _fail(); the others only end when closing
        log.error("client %s: task %s crashed", self.client_id, task.get_name(), exc_info=exc)
        self._fail(ClientError(f"internal error in {task.get_name()}: {exc!r}"), exc)

    def _fail(self, error: ClientError, cause: BaseException) -> None:
        if self._failure is not None or self._state != "open":
            return
        error.__cause__ = cause
        self._failure = error
        log.error("client %s gave up: %s", self.client_id, error)
        self._stream.close()
        self._callbacks.close()


class _Events:
    """The async iterator returned by :meth:`FanoutClient.events`."""

    __slots__ = ("_client",)

    def __init__(self, client: FanoutClient) -> None:
        self._client = client

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Item:
        # FanoutClient._next inlined: this runs once per event, every coroutine frame counts.
        client = self._client
        buffer = client._stream
        topics = client._topics
        while True:
            if client._state != "open":
                raise StopAsyncIteration  # closed: what is still buffered is discarded
            item = buffer.pop()
            if item is None:
                if client._failure is not None:
                    raise client._failure  # after the items received before the failure
                await buffer.waiter()
                continue
            if type(item) is Event and item.topic not in topics:
                continue  # unsubscribed since it was received
            return item


class _Batches:
    """The async iterator returned by :meth:`FanoutClient.batches`."""

    __slots__ = ("_client", "_limit")

    def __init__(self, client: FanoutClient, limit: int) -> None:
        self._client = client
        self._limit = limit

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> list[Item]:
        client = self._client
        buffer = client._stream
        topics = client._topics
        while True:
            if client._state != "open":
                raise StopAsyncIteration  # closed: what is still buffered is discarded
            items = buffer.pop_many(self._limit)
            if items:
                batch = [i for i in items if type(i) is not Event or i.topic in topics]
                if batch:
                    return batch
                continue  # all of them unsubscribed since
            if client._failure is not None:
                raise client._failure  # after the items received before the failure
            await buffer.waiter()


async def _stop_tasks(tasks: list[asyncio.Task[None]], limit: float) -> None:
    """Cancel ``tasks`` and wait for them, at most ``limit`` seconds
    (:func:`subscriptions.tasks.stop_tasks`: the cancellation is repeated every 0.1 s, since some
    redis-py calls swallow one). A task still alive after ``limit`` is logged, not waited for."""
    pending = await stop_tasks(tasks, within=limit)
    for task in pending:
        log.error("client task %s did not stop within %.1f s", task.get_name(), limit)


def _link_class(reader: PubSubReader) -> Callable[[Redis], Link]:
    """The link for ``pubsub_reader`` (``"auto"``: hiredis when importable, else redis-py)."""
    if reader == "redis-py":
        return PubSubLink
    if reader not in ("auto", "hiredis"):
        raise ValueError(f"pubsub_reader must be 'auto', 'hiredis' or 'redis-py', not {reader!r}")
    if hiredis_available():
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


def _remove(items: list[Any], item: Any) -> None:
    if item in items:
        items.remove(item)


def _expand(topics: tuple[TopicLike, ...], codes: Iterable[str] | None) -> list[Topic]:
    """Validated topics from ``subscribe``'s arguments (InvalidTopicError at the first bad one)."""
    if isinstance(codes, str):
        raise TypeError("codes must be a list of market codes, e.g. codes=['KRW-BTC']")
    result: list[Topic] = []
    if codes is None:
        for topic in topics:
            # a Topic built by hand is checked like a string: Topic("ticker", "krw-btc") raises
            result.append(parse_topic(str(topic) if isinstance(topic, Topic) else topic))
        return result
    code_list = list(codes)
    for type_name in topics:
        if not isinstance(type_name, str) or ":" in type_name:
            raise InvalidTopicError(
                str(type_name), "with codes=..., give data types such as 'trade', not topics"
            )
        for code in code_list:
            result.append(parse_topic(f"{type_name}:{code}"))
    return result
