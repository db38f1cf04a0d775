"""The pub/sub link: what the client's reader needs of a subscribed connection.

:class:`Link` is the interface (a Protocol): :class:`client._fast_link.HiredisLink` (the default:
a BufferedProtocol and hiredis' Reader on the socket redis-py connected) and :class:`PubSubLink`
below (redis-py's own reader, the fallback) implement it, and so can a link of another topology.
The client's reader uses a link like this::

    link = SomeLink(redis)
    await link.open(channels)          # connect, authenticate, SUBSCRIBE (at least one channel)
    await link.send("SUBSCRIBE", ...)  # any time while open; the reply arrives among the messages
    await link.run(accept)             # hands every reply to accept(replies) until the connection
                                       # breaks, then raises redis.ConnectionError
    link.pause(); link.resume()        # from inside accept too: stop / restart reading the socket
    await link.close()                 # never waits on a dead peer

``accept(replies)`` is called synchronously with a non-empty list of the replies parsed from one
read of the socket, in order, as lists of bytes: ``[b"message", channel, payload]`` (RESP2 and
RESP3 alike; ``[b"smessage", ...]`` from a sharded link), subscribe confirmations, PONGs, and error
replies as exception instances. It must not block: when it cannot take more, it calls
:meth:`Link.pause` and keeps the rest itself. An exception raised by ``accept`` is a bug: ``run``
raises it (not a ConnectionError), so the client fails loudly instead of reconnecting in a loop.

A link that reads one reply per await through redis-py's ``read_response`` (:class:`PubSubLink`,
or a link of sharded subscriptions on several nodes) gets ``run``, ``pause`` and ``resume`` from
:class:`ReadLoop` by exposing that call as its ``reader`` property.

:class:`PubSubLink` is one pub/sub connection driven by hand. The connection comes from
``redis.pubsub()`` of the client's own ``Redis`` (so TLS, ACL users and Sentinel-managed pools
work as configured), but commands are sent and replies read on the connection directly, for
three reasons:

- speed: ``PubSub.get_message(timeout=...)`` costs a timer and several layers per message;
  a blocking ``read_response`` keeps up with far more than 50,000 messages/s;
- bytes: replies are read with ``disable_decoding=True``, so payloads stay bytes even when the
  given client was made with ``decode_responses=True`` (msgpack payloads are not UTF-8);
- honesty: redis-py's retry layer would silently reconnect and resubscribe, losing messages
  without a word. Here a broken connection raises, and the owner reconnects and reports a Gap.
  A reconnect done underneath anyway (by redis-py code we call) is noticed through a connect
  callback and treated as a break (:attr:`PubSubLink.replaced`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeAlias, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["Accept", "Link", "PubSubLink", "ReadLoop"]

Accept: TypeAlias = Callable[[list[Any]], None]
"""Takes the replies of one read, synchronously (see the module docstring)."""


class Link(Protocol):
    """A pub/sub connection as the client's reader uses it (see the module docstring)."""

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed by :meth:`open`."""
        ...

    @property
    def replaced(self) -> bool:
        """True once the connection was re-established underneath (subscriptions lost)."""
        ...

    async def open(self, channels: Iterable[str]) -> None: ...

    async def send(self, *args: str | bytes | int) -> None:
        """Send a command (SUBSCRIBE, UNSUBSCRIBE, PING) without waiting for its reply; raises
        redis.ConnectionError when the connection is down."""
        ...

    async def run(self, accept: Accept) -> None:
        """Hand every reply to ``accept`` until the connection breaks; then raise."""
        ...

    def pause(self) -> None:
        """Stop reading the socket (backpressure) until :meth:`resume`."""
        ...

    def resume(self) -> None: ...

    @property
    def rests(self) -> int:
        """How many times reading rested to coalesce reads (``read_coalesce``; 0 when off)."""
        ...

    async def close(self) -> None: ...


async def _passthrough(response: Any) -> Any:
    return response


class ReadLoop:
    """:meth:`Link.run`, :meth:`Link.pause` and :meth:`Link.resume` for a link that reads one
    reply per await through its ``reader`` property (redis-py's ``read_response`` signature):
    :class:`PubSubLink`, and any link built the same way."""

    _gate: asyncio.Event | None = None  # set while reading may go on; None: never paused

    @property
    def reader(self) -> Any:
        raise NotImplementedError

    async def run(self, accept: Accept) -> None:
        """Read one reply at a time and hand it to ``accept`` (see :class:`Link`)."""
        read = self.reader
        inf = math.inf
        while True:
            gate = self._gate
            if gate is not None and not gate.is_set():
                await gate.wait()
            try:
                reply = await read(
                    disable_decoding=True, timeout=inf, disconnect_on_error=False, push_request=True
                )
            except ResponseError as exc:  # an error reply (a refused SUBSCRIBE): a reply too
                reply = exc
            accept([reply])

    def pause(self) -> None:
        if self._gate is None:
            self._gate = asyncio.Event()
        self._gate.clear()

    def resume(self) -> None:
        if self._gate is not None:
            self._gate.set()

    @property
    def rests(self) -> int:
        """Always 0: a link that awaits one reply at a time does not coalesce its reads."""
        return 0


class PubSubConnection:
    """What both links do with redis-py's pub/sub connection: make it (logged in, the current
    Sentinel primary, ...) and notice when redis-py re-established it underneath us."""

    def __init__(self, redis: Redis) -> None:
        # A handler of our own for RESP3/hiredis push replies: redis-py's default one formats
        # every message into a debug log string, a measurable cost per message.
        self._pubsub: PubSub = redis.pubsub(push_handler_func=_passthrough)
        self._conn: AbstractConnection | None = None
        self._connects = 0
        self.channels: frozenset[str] = frozenset()
        """The channels subscribed by ``open``."""

    @property
    def replaced(self) -> bool:
        """True once the connection was re-established underneath us (subscriptions lost)."""
        return self._connects > 0

    async def _connect(self, channels: Iterable[str]) -> tuple[AbstractConnection, list[str]]:
        """Connect and watch for reconnects; ``channels`` (at least one) as a list."""
        names = list(channels)
        if not names:
            raise ValueError("a pub/sub link needs at least one channel")
        await self._pubsub.connect()  # type: ignore[no-untyped-call, unused-ignore]
        # redis-py types PubSub.connection as None (its initial value); connect() set it.
        conn = cast(AbstractConnection, self._pubsub.connection)
        conn.register_connect_callback(self._on_connect)  # type: ignore[no-untyped-call, unused-ignore]
        self._conn = conn
        return conn, names

    def _on_connect(self, connection: AbstractConnection) -> None:
        # Registered after the first connect: any call means a reconnect behind our back.
        self._connects += 1

    async def _release(self) -> None:
        """Stop watching and give the connection back to the pool."""
        conn = self._conn
        if conn is not None:
            conn.deregister_connect_callback(self._on_connect)  # type: ignore[no-untyped-call, unused-ignore]
        await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]


class PubSubLink(PubSubConnection, ReadLoop):
    """A subscribed connection: :meth:`open`, :meth:`send`, :meth:`read`, :meth:`close`."""

    async def open(self, channels: Iterable[str]) -> None:
        """Connect and send SUBSCRIBE for ``channels`` (at least one)."""
        conn, names = await self._connect(channels)
        await conn.send_command("SUBSCRIBE", *names, check_health=False)
        self.channels = frozenset(names)

    async def send(self, *args: str | bytes | int) -> None:
        """Send a command (SUBSCRIBE, UNSUBSCRIBE, PING) without waiting for its reply."""
        conn = self._conn
        if conn is None or not conn.is_connected or self.replaced:
            raise RedisConnectionError("pub/sub connection is down")
        await conn.send_command(*args, check_health=False)

    async def read(self, wait: float | None = None) -> Any:
        """The next reply or message as a list of bytes (``[b"message", channel, data]``).

        Blocks until something arrives (``wait=None``), or returns None after ``wait``
        seconds. Raises redis-py's ConnectionError when the connection breaks.
        """
        conn = self._conn
        if conn is None:
            raise RedisConnectionError("pub/sub connection is not open")
        return await conn.read_response(
            disable_decoding=True,
            timeout=math.inf if wait is None else wait,
            disconnect_on_error=False,
            push_request=True,
        )

    @property
    def reader(self) -> Any:
        """The bound blocking read (hot path: one attribute lookup less per message)."""
        conn = self._conn
        if conn is None:
            raise RedisConnectionError("pub/sub connection is not open")
        return conn.read_response

    async def close(self) -> None:
        """Drop the connection (never waits on a dead peer) and give it back to the pool."""
        await self._release()
