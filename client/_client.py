"""The asyncio client: :class:`FanoutClient`, a thin composition of three parts.

================================  ==============================================================
``client/_intents.py``            :class:`IntentKey`: the client's intent key and its lease: the
                                  one transaction that writes it, the ``heartbeat`` task (every
                                  third of the lease, independent of the consumer, so a slow
                                  consumer never loses the lease), the release on close
``client/_reader.py``             :class:`Reader`: the ``reader`` task. It owns the pub/sub link,
                                  files every socket read's messages into the buffers on its hot
                                  path (a ``drain`` child takes over what cannot be filed at once:
                                  a full buffer under ``block`` pauses the link), pings the link
                                  when idle, reconnects with capped backoff and jitter,
                                  re-asserts the intents, reports a :class:`Gap`, refreshes from
                                  the last values; collector gap notices too
``client/_dispatch.py``           :class:`Dispatch`: the two bounded buffers and the callbacks;
                                  the ``dispatcher`` task runs the callbacks registered with
                                  :meth:`FanoutClient.on`, ``on_gap`` and ``on_notice``, one item
                                  at a time, in order
================================  ==============================================================

Data path::

    Redis ──pub/sub──▶ link ─Reader.accept()─▶ stream buffer ───▶ ``async for item in client``
                                         └────▶ callback buffer ─▶ dispatcher ─▶ callbacks

This module holds what a user calls: the lifecycle (open, close, the tasks and the one place a
crash is noticed, :meth:`FanoutClient._task_done`), ``subscribe``/``unsubscribe`` (the topics,
kept in one mapping the three parts read), the iterators, snapshots and private streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Final, Literal, TypeAlias

from redis.asyncio import Redis
from redis.exceptions import RedisError

from upbit_fanout.client._buffer import Buffer, Overflow
from upbit_fanout.client._dispatch import Dispatch, EventCallback, GapCallback, NoticeCallback
from upbit_fanout.client._errors import ClientError, SnapshotTimeoutError, wrap_redis_error
from upbit_fanout.client._intents import IntentKey
from upbit_fanout.client._items import Event, Item
from upbit_fanout.client._log import log
from upbit_fanout.client._reader import PubSubReader, Reader, link_class, stop_client_tasks
from upbit_fanout.client._snapshot import take_snapshots
from upbit_fanout.client._streams import PrivateStream, StreamGroup
from upbit_fanout.client._util import default_client_id, transient_id
from upbit_fanout.subscriptions.coalesce import check_interval
from upbit_fanout.subscriptions.connection import (
    REDIS_FAILURES,
    cluster_of,
    is_sentinel_url,
    open_redis,
    redis_from_url,
)
from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import lease_ms
from upbit_fanout.subscriptions.redact import redact_url
from upbit_fanout.subscriptions.topics import Topic, parse_topic

__all__ = [
    "EventCallback",
    "FanoutClient",
    "GapCallback",
    "NoticeCallback",
    "PubSubReader",
]

TopicLike: TypeAlias = str | Topic

_BATCH: Final = 1024


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
        read_coalesce: float = 0.0,
    ) -> None:
        lease_ms(lease_seconds)  # validates (>= 1 s)
        if not math.isfinite(health_check_interval) or health_check_interval <= 0:
            raise ValueError("health_check_interval must be a positive number of seconds")
        if max_outage is not None and max_outage <= 0:
            raise ValueError("max_outage must be positive (or None: retry forever)")
        self._topics: dict[str, Topic] = {}
        """The topics this client holds: written here (under the intent lock), read by the
        three parts (the intent key's members, the reader's resubscriptions and gaps, the
        filter that drops buffered events of a topic given up)."""
        self._dispatch = Dispatch(queue_size, overflow, self._topics, notices=notices)
        self._stream: Buffer[Item] = self._dispatch.stream  # the iterators' hot path
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
        if cluster_of(self._redis) is not None:
            self._keys = self._keys.clustered()  # docs/contract.md, "Redis Cluster"
        self._lease = float(lease_seconds)
        self._health_interval = float(health_check_interval)
        self._max_reconnect_delay = float(max_reconnect_delay)
        self._max_outage = max_outage
        self._upstream_gaps = upstream_gaps
        self._close_timeout = float(close_timeout)
        self._read_coalesce = check_interval(read_coalesce)
        self._link_class = link_class(pubsub_reader, self._read_coalesce)
        self._snapshot_seq = 0

        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._failure: BaseException | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._build_parts()

    def _build_parts(self) -> None:
        """The intent key and the reader, on the current Redis client (and again when opening
        found a Redis Cluster behind a plain URL)."""
        self._intents = IntentKey(
            self._redis, self._keys, self.client_id, self._lease, self._topics
        )
        self._reader = Reader(
            self._redis,
            self._keys,
            client_id=self.client_id,
            url=self._url,
            link_class=self._link_class,
            topics=self._topics,
            dispatch=self._dispatch,
            intents=self._intents,
            fail=self._fail,
            running=self._is_open,
            health_check_interval=self._health_interval,
            max_reconnect_delay=self._max_reconnect_delay,
            max_outage=self._max_outage,
            close_timeout=self._close_timeout,
            upstream_gaps=self._upstream_gaps,
            read_coalesce=self._read_coalesce,
        )

    # -- properties ---------------------------------------------------------------------------
    @property
    def topics(self) -> frozenset[str]:
        """The topics this client holds intents for."""
        return frozenset(self._topics)

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._reader.connected

    @property
    def dropped(self) -> int:
        """Items discarded by the ``drop_oldest`` policy (0 under ``block``), summed over the
        iterator's and the callbacks' buffers."""
        return self._dispatch.dropped

    @property
    def callback_errors(self) -> int:
        """Callbacks that raised (each is logged; the first ones with a traceback)."""
        return self._dispatch.callback_errors

    @property
    def read_rests(self) -> int:
        """How many times the pub/sub reading rested to coalesce reads (``read_coalesce``; 0
        when off), over every connection so far. A rest saves wake-ups only when more than one
        write arrives during it."""
        return self._reader.read_rests

    @property
    def reconnects(self) -> int:
        """Times the client lost Redis and came back (one :class:`Gap` each)."""
        return self._reader.reconnects

    @property
    def upstream_gaps(self) -> int:
        """Collector gap notices reported as a :class:`Gap` (``upstream_gaps=True``)."""
        return self._reader.upstream_gaps

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
            link = await self._reader.open_link()
        except REDIS_FAILURES as exc:
            self._state = "closed"
            await self._close_redis()
            raise wrap_redis_error(exc, f"connecting to {self._url}") from exc
        except BaseException:
            self._state = "closed"
            await self._close_redis()
            raise
        self._state = "open"
        self._reader.adopt(link)
        self._spawn("reader", self._reader.run(link))
        self._spawn("heartbeat", self._intents.heartbeat())
        self._spawn("dispatcher", self._dispatch.run())
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
        self._dispatch.close()
        current = asyncio.current_task()  # aclose() from a callback: not the dispatcher itself
        await stop_client_tasks(
            [task for task in self._tasks.values() if task is not current], self._close_timeout
        )
        self._tasks.clear()
        await self._reader.close()
        await self._intents.release()
        await self._close_redis()
        self._state = "closed"

    async def _detect_cluster(self) -> None:
        """A plain URL of a Redis Cluster node: switch to a cluster client (and cluster names)."""
        if cluster_of(self._redis) is not None or not self._owns_redis:
            return
        url = self._redis_url
        if url is None or is_sentinel_url(url) or url.startswith("unix:"):
            return
        redis = await open_redis(url)
        if cluster_of(redis) is None:
            await redis.aclose()
            return
        await self._redis.aclose()
        self._redis, self._keys = redis, self._keys.clustered()
        self._build_parts()

    async def _close_redis(self) -> None:
        if self._owns_redis:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()

    def _is_open(self) -> bool:
        return self._state == "open"

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
        intents, reader = self._intents, self._reader
        async with intents.lock:
            added = [topic for topic in wanted if str(topic) not in self._topics]
            if not added:
                return
            channels = [self._add_topic(topic) for topic in added]
            await reader.send("SUBSCRIBE", channels)
            try:
                await intents.write(replace=intents.dirty, control=True)
            except REDIS_FAILURES as exc:
                for topic in added:
                    self._remove_topic(str(topic))
                intents.dirty = True
                await reader.send("UNSUBSCRIBE", channels)
                raise wrap_redis_error(exc, "writing the subscription intent") from exc

    async def unsubscribe(self, *topics: TopicLike, codes: Iterable[str] | None = None) -> None:
        """Give up ``topics`` (same forms as :meth:`subscribe`); unknown ones are ignored.

        No event of these topics is delivered after this returns, even if already buffered.
        """
        wanted = _expand(topics, codes)
        self._check_open()
        intents = self._intents
        async with intents.lock:
            removed = [str(topic) for topic in wanted if str(topic) in self._topics]
            if not removed:
                return
            channels = [self._remove_topic(name) for name in removed]
            await self._reader.send("UNSUBSCRIBE", channels)
            try:
                await intents.write(replace=True, control=True)
            except REDIS_FAILURES as exc:
                intents.dirty = True  # the next heartbeat rewrites the set
                raise wrap_redis_error(exc, "writing the subscription intent") from exc

    def _add_topic(self, topic: Topic) -> str:
        name = str(topic)
        self._topics[name] = topic
        return self._reader.route(name, topic)

    def _remove_topic(self, name: str) -> str:
        self._topics.pop(name, None)
        return self._reader.unroute(name)

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
        self._dispatch.start_stream()
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
        self._dispatch.start_stream()
        return _Batches(self, max_items)

    async def _next_batch(self, limit: int, wait: float | None) -> list[Item] | None:
        """Up to ``limit`` items, waiting at most ``wait`` s for the first (BlockingClient).

        ``[]`` means the timeout passed, None that the client is closed.
        """
        self._dispatch.start_stream()
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
        return self._dispatch.on(pattern, callback)

    def on_gap(self, callback: GapCallback) -> Callable[[], None]:
        """Call ``callback(gap)`` for each :class:`Gap` (a Redis reconnect of this client, or a
        collector gap notice). Returns a remover."""
        return self._dispatch.on_gap(callback)

    def on_notice(self, callback: NoticeCallback) -> Callable[[], None]:
        """Call ``callback(notice)`` for each collector notice. Returns a remover."""
        return self._dispatch.on_notice(callback)

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
        except REDIS_FAILURES as exc:
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
        self._dispatch.close()


class _Events:
    """The async iterator returned by :meth:`FanoutClient.events`."""

    __slots__ = ("_client",)

    def __init__(self, client: FanoutClient) -> None:
        self._client = client

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Item:
        # Inlined: this runs once per event, every coroutine frame counts.
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
