""":class:`BlockingClient`: the same client for scripts that do not use asyncio.

It owns a background thread running an event loop, and in it a :class:`FanoutClient`; every
method hands its work to that loop and waits for the answer. So the heartbeat, the reader and the
reconnects keep running while the script is busy or blocked: a slow script never loses its lease
(its buffer fills instead, under the chosen ``overflow`` policy).

Callbacks registered with :meth:`BlockingClient.on` (and ``on_gap``/``on_notice``) run one at a
time, in order, in one more thread owned by the wrapper (``upbit-fanout-callbacks``), never in the
event loop's thread: a slow callback delays only the callbacks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from redis.asyncio import Redis

from upbit_fanout.client._buffer import Overflow
from upbit_fanout.client._client import FanoutClient, PubSubReader
from upbit_fanout.client._errors import ClientError
from upbit_fanout.client._items import Event, Gap, Item, Notice
from upbit_fanout.client._log import log
from upbit_fanout.client._streams import PrivateStream, StreamGroup, StreamItem
from upbit_fanout.client._util import default_client_id
from upbit_fanout.subscriptions.coalesce import check_interval
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["BlockingClient", "BlockingStream"]

T = TypeVar("T")
_BATCH = 512
_MARGIN = 5.0
_CALLBACK_THREAD = "upbit-fanout-callbacks"


class BlockingClient:
    """A :class:`FanoutClient` for plain, blocking code::

        with BlockingClient("redis://localhost:6379/0") as client:
            client.subscribe("ticker:KRW-BTC")
            print(client.snapshot("orderbook:KRW-BTC.5").typed.best_bid)
            for item in client.events(timeout=10):   # ends after 10 s without items
                print(item)

    ``redis`` is a URL, or a function returning a ``redis.asyncio.Redis`` (called in the
    client's own thread, because an asyncio client belongs to one event loop; the client closes
    it). The keyword arguments are :class:`FanoutClient`'s, plus ``call_timeout``: how long a
    call (subscribe, unsubscribe) may take before :class:`ClientError` is raised.
    """

    def __init__(
        self,
        redis: str | Callable[[], Redis],
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
        call_timeout: float = 30.0,
    ) -> None:
        self._redis_arg = redis
        self._options: dict[str, Any] = {
            "client_id": client_id if client_id is not None else default_client_id(),
            "key_prefix": key_prefix,
            "lease_seconds": lease_seconds,
            "queue_size": queue_size,
            "overflow": overflow,
            "notices": notices,
            "upstream_gaps": upstream_gaps,
            "health_check_interval": health_check_interval,
            "max_reconnect_delay": max_reconnect_delay,
            "max_outage": max_outage,
            "close_timeout": close_timeout,
            "pubsub_reader": pubsub_reader,
            "read_coalesce": check_interval(read_coalesce),
        }
        Keys(key_prefix).intents(self._options["client_id"])  # a bad id or prefix fails here
        self._call_timeout = call_timeout
        self._close_timeout = close_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: FanoutClient | None = None
        self._factory_redis: Redis | None = None
        self._callback_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: deque[Item] = deque()
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> BlockingClient:
        if self._loop is not None or self._closed:
            raise ClientError("a BlockingClient can be opened only once; make a new one")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="upbit-fanout-client", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._open(), self._call_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _open(self) -> None:
        if isinstance(self._redis_arg, str):
            redis: Redis | str = self._redis_arg
        else:
            redis = self._factory_redis = self._redis_arg()
        client = FanoutClient(redis, **self._options)
        await client.__aenter__()
        self._client = client

    def close(self) -> None:
        """Release the lease, stop the client and join its threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown(), self._close_timeout + _MARGIN)
        except Exception as exc:  # closing must go on: log and finish the job
            log.warning("closing the BlockingClient: %s", exc)
        if self._callback_pool is not None:
            # close() called from a callback must not wait for its own thread
            in_callback = threading.current_thread().name.startswith(_CALLBACK_THREAD)
            self._callback_pool.shutdown(wait=not in_callback, cancel_futures=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._close_timeout + _MARGIN)
        if thread.is_alive():  # pragma: no cover - only with a loop blocked by user code
            log.error("the BlockingClient's event loop thread did not stop")

    async def _shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._factory_redis is not None:
            await self._factory_redis.aclose()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        loop = self._loop
        if loop is None or (self._closed and not loop.is_running()):
            coro.close()
            raise ClientError("this BlockingClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ClientError(f"the client did not answer within {timeout:g} s") from None
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the caller's thread: stop the work too
            raise

    @property
    def _inner(self) -> FanoutClient:
        if self._client is None or self._closed:
            raise ClientError(
                "this BlockingClient is closed"
                if self._closed
                else "use the BlockingClient inside 'with BlockingClient(...) as client:'"
            )
        return self._client

    # -- the FanoutClient's abilities ---------------------------------------------------------
    @property
    def client_id(self) -> str:
        return str(self._options["client_id"])

    @property
    def topics(self) -> frozenset[str]:
        return self._inner.topics

    @property
    def connected(self) -> bool:
        return self._inner.connected

    @property
    def dropped(self) -> int:
        return self._inner.dropped

    @property
    def callback_errors(self) -> int:
        return self._inner.callback_errors

    @property
    def reconnects(self) -> int:
        return self._inner.reconnects

    @property
    def upstream_gaps(self) -> int:
        return self._inner.upstream_gaps

    def subscribe(self, *topics: str | Topic, codes: Iterable[str] | None = None) -> None:
        """See :meth:`FanoutClient.subscribe`."""
        codes = list(codes) if codes is not None else None
        self._call(self._inner.subscribe(*topics, codes=codes), self._call_timeout)

    def unsubscribe(self, *topics: str | Topic, codes: Iterable[str] | None = None) -> None:
        """See :meth:`FanoutClient.unsubscribe`."""
        codes = list(codes) if codes is not None else None
        self._call(self._inner.unsubscribe(*topics, codes=codes), self._call_timeout)

    def snapshot(
        self, topic: str | Topic, *, timeout: float = 5.0, max_age: float | None = None
    ) -> Event:
        """See :meth:`FanoutClient.snapshot`."""
        coro = self._inner.snapshot(topic, timeout=timeout, max_age=max_age)
        return self._call(coro, timeout + _MARGIN)

    def snapshots(
        self,
        topics: Iterable[str | Topic],
        *,
        timeout: float = 5.0,
        max_age: float | None = None,
    ) -> dict[str, Event]:
        """See :meth:`FanoutClient.snapshots`."""
        coro = self._inner.snapshots(list(topics), timeout=timeout, max_age=max_age)
        return self._call(coro, timeout + _MARGIN)

    def private_stream(
        self, type_name: str = "myOrder", *, start: str = "$", block: float = 1.0
    ) -> BlockingStream:
        """See :meth:`FanoutClient.private_stream`: the same reader, with blocking methods."""
        return BlockingStream(self, self._inner.private_stream(type_name, start=start, block=block))

    def stream_group(
        self,
        type_name: str = "myOrder",
        *,
        group: str,
        consumer: str | None = None,
        start: str = "0",
        claim_idle: float = 30.0,
        block: float = 1.0,
    ) -> BlockingStream:
        """See :meth:`FanoutClient.stream_group`: the same consumer, with blocking methods."""
        inner = self._inner.stream_group(
            type_name,
            group=group,
            consumer=consumer,
            start=start,
            claim_idle=claim_idle,
            block=block,
        )
        return BlockingStream(self, inner)

    def events(self, timeout: float | None = None) -> Iterator[Item]:
        """Items as they arrive (see :meth:`FanoutClient.events`).

        With ``timeout``, the iteration ends after that many seconds without an item; without,
        it ends only when the client is closed. Raises :class:`RedisUnavailableError` when the
        client gave up on Redis.
        """
        inner = self._inner
        while True:
            while self._pending:
                yield self._pending.popleft()
            wait = None if timeout is None else timeout + _MARGIN
            batch = self._call(inner._next_batch(_BATCH, timeout), wait)
            if not batch:  # None: closed; []: timeout passed
                return
            self._pending.extend(batch)

    def __iter__(self) -> Iterator[Item]:
        return self.events()

    def on(self, pattern: str, callback: Callable[[Event], object]) -> Callable[[], None]:
        """Like :meth:`FanoutClient.on`; ``callback`` runs in the wrapper's callback thread."""
        return self._register(lambda run: self._inner.on(pattern, run), callback)

    def on_gap(self, callback: Callable[[Gap], object]) -> Callable[[], None]:
        """Like :meth:`FanoutClient.on_gap`; runs in the wrapper's callback thread."""
        return self._register(self._inner.on_gap, callback)

    def on_notice(self, callback: Callable[[Notice], object]) -> Callable[[], None]:
        """Like :meth:`FanoutClient.on_notice`; runs in the wrapper's callback thread."""
        return self._register(self._inner.on_notice, callback)

    def _register(
        self,
        add: Callable[[Callable[[Any], Any]], Callable[[], None]],
        callback: Callable[[Any], object],
    ) -> Callable[[], None]:
        if self._callback_pool is None:
            self._callback_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=_CALLBACK_THREAD
            )
        pool = self._callback_pool

        async def run(item: Any) -> None:
            await asyncio.get_running_loop().run_in_executor(pool, callback, item)

        async def register() -> Callable[[], None]:
            return add(run)

        remove_inner = self._call(register(), self._call_timeout)
        loop = self._loop
        assert loop is not None

        def remove() -> None:
            loop.call_soon_threadsafe(remove_inner)

        return remove


class BlockingStream:
    """A :class:`PrivateStream` or :class:`StreamGroup` of a :class:`BlockingClient`, with
    blocking methods: ``read()``, ``ack(*items)`` (groups), ``pending()`` (groups), iteration
    (for ever, or until ``events(timeout)`` saw nothing for that long), and ``last_id``
    (plain readers: where to resume)."""

    def __init__(self, client: BlockingClient, inner: PrivateStream | StreamGroup) -> None:
        self._client = client
        self.inner = inner

    @property
    def last_id(self) -> str | None:
        return self.inner.last_id if isinstance(self.inner, PrivateStream) else None

    def read(self, count: int | None = None) -> list[StreamItem]:
        return self._client._call(self.inner.read(count), self._client._call_timeout)

    def ack(self, *items: StreamItem | str) -> int:
        if not isinstance(self.inner, StreamGroup):
            raise ClientError("ack needs a consumer group (BlockingClient.stream_group)")
        return self._client._call(self.inner.ack(*items), self._client._call_timeout)

    def pending(self) -> int:
        if not isinstance(self.inner, StreamGroup):
            raise ClientError("pending needs a consumer group (BlockingClient.stream_group)")
        return self._client._call(self.inner.pending(), self._client._call_timeout)

    def events(self, timeout: float | None = None) -> Iterator[StreamItem]:
        """Items in order; with ``timeout``, ends after that many seconds without one."""
        idle_since = time.monotonic()
        while True:
            batch = self.read()
            if batch:
                idle_since = time.monotonic()
                yield from batch
            elif timeout is not None and time.monotonic() - idle_since >= timeout:
                return

    def __iter__(self) -> Iterator[StreamItem]:
        return self.events()
