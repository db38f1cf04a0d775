"""The publisher's lean link: a connection of its own, its replies parsed by hiredis in a protocol.

Why: at the rates Upbit really sends (a few thousand frames a second, spread over time) the
publisher makes a round trip for every one or two events, and redis-py's way through a command
(the pool, the retry wrapper, a timeout context, a chain of awaits to its parser) cost about 110 us
of CPU per round trip on the project's machine, against 45 us for writing the command and waiting
on a future that a protocol resolves (``bench/collector_throughput.py --source paced``). That
round trip was most of the collector's CPU there.

How: the link checks a connection out of the client's own pool (so redis-py connects it: TLS,
AUTH, HELLO, the current Sentinel primary) and puts :class:`_Replies` on its transport
(:mod:`subscriptions.takeover`). A call packs the command with the connection's own packer,
writes it and waits for the next reply in order; hiredis turns error replies into redis-py's
exceptions (``NoScriptError``, ``ResponseError``...), so callers see what redis-py would raise.

Failures are redis-py's too: a dropped socket fails every waiting call with
``redis.ConnectionError`` and the link is closed; a reply that does not come within the
connection's ``socket_timeout`` (when one is set) is ``redis.TimeoutError`` and closes it as
well, since what the server did with the command is unknown. ``READONLY`` (the primary was demoted
under us) closes it and is raised as a ``ConnectionError``, as redis-py's Sentinel-managed
connections do, so that the next call checks out a connection to the current primary. A closed
link is never reused: the caller opens another.

The pool's own ``disconnect()`` (the collector's ``follow_primary`` after a failover, the client's
``aclose()``) closes the socket under the link, which then fails like any dropped socket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from upbit_fanout.subscriptions.takeover import NotTakeable, detach

try:
    import hiredis
    from redis._parsers.base import BaseParser

    _HIREDIS = True
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _HIREDIS = False

__all__ = ["NotTakeable", "PublishLink", "open_link"]

_NOT_ENOUGH: Final = object()  # hiredis' "no complete reply yet" (False is a RESP3 value)


class _Replies(asyncio.Protocol):
    """The protocol on the link's socket: each complete reply resolves the oldest waiting call."""

    def __init__(self, transport: asyncio.Transport, stream_protocol: asyncio.BaseProtocol) -> None:
        self.transport = transport
        self._stream_protocol = stream_protocol
        self._parser = hiredis.Reader(
            notEnoughData=_NOT_ENOUGH,
            replyError=BaseParser.parse_error,
            protocolError=RedisConnectionError,
        )
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.error: RedisError | None = None

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        waiting = self.waiting
        try:
            reply = parser.gets()
            while reply is not _NOT_ENOUGH:
                if not waiting:
                    raise RedisConnectionError("a reply came for no command on the publish link")
                future = waiting.popleft()
                if not future.done():  # a call that was cancelled meanwhile drops its reply
                    future.set_result(reply)
                reply = parser.gets()
        except RedisError as exc:  # a protocol error (hiredis') or a reply nobody asked for
            self.fail(exc)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            RedisConnectionError(
                "Redis closed the publish connection"
                if exc is None
                else f"publish connection lost: {exc}"
            )
        )
        self._stream_protocol.connection_lost(None)  # redis-py's disconnect() waits on it

    def fail(self, error: RedisError) -> None:
        """Fail every waiting call with ``error`` and abort the socket (idempotent)."""
        if self.error is None:
            self.error = error
            self.transport.abort()
        waiting = self.waiting
        while waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_exception(self.error)


class PublishLink:
    """A checked-out connection of ``redis``'s pool, read by :class:`_Replies` (see the module)."""

    def __init__(self, redis: Redis, conn: AbstractConnection, replies: _Replies) -> None:
        self._redis = redis
        self._conn = conn
        self._replies = replies
        self._timeout: float | None = getattr(conn, "socket_timeout", None)
        self.calls = 0

    @property
    def closed(self) -> bool:
        """True once the socket failed or was closed: open another link."""
        return self._replies.error is not None

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply, or what redis-py would raise for it."""
        replies = self._replies
        if replies.error is not None:
            raise replies.error
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        replies.waiting.append(future)
        replies.transport.writelines(self._conn.pack_command(*args))
        self.calls += 1
        timeout = self._timeout
        try:
            if timeout is None:
                reply = await future
            else:
                async with asyncio.timeout(timeout):
                    reply = await future
        except TimeoutError:
            error: RedisError = RedisTimeoutError(
                f"no reply on the publish connection in {timeout} s"
            )
            replies.fail(error)
            raise error from None
        if isinstance(reply, RedisError):
            if isinstance(reply, ReadOnlyError):
                error = RedisConnectionError(f"the server is a replica now: {reply}")
                replies.fail(error)
                raise error
            raise reply
        return reply

    async def aclose(self) -> None:
        """Close the socket and give the connection back to its pool (never waits on a peer)."""
        self._replies.fail(RedisConnectionError("the publish connection was closed"))
        conn = self._conn
        try:
            await conn.disconnect()
        finally:
            await self._redis.connection_pool.release(conn)


async def open_link(redis: Redis) -> PublishLink:
    """A link on a new connection of ``redis``'s pool.

    Raises :class:`NotTakeable` when the connection is not a socket the event loop reads (a test
    double): the caller keeps redis-py's way for good. Raises ``RedisError`` when connecting
    fails (Redis away): the caller retries later, as with any command.
    """
    if not _HIREDIS:  # pragma: no cover - redis[hiredis] is a dependency
        raise NotTakeable("hiredis is not installed")
    pool = redis.connection_pool
    try:
        conn = await pool.get_connection()  # type: ignore[no-untyped-call, unused-ignore]
    except TypeError:  # pragma: no cover - redis-py before 5.3 wants a command name
        conn = await pool.get_connection("EVALSHA")  # type: ignore[no-untyped-call, unused-ignore]
    try:
        detached = detach(conn)
    except BaseException:
        await pool.release(conn)
        raise
    transport = detached.transport
    replies = _Replies(transport, detached.stream_protocol)
    transport.set_protocol(replies)
    if detached.leftover:
        replies.data_received(detached.leftover)
    return PublishLink(redis, conn, replies)
