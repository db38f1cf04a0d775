"""The fast pub/sub link: a BufferedProtocol and hiredis' Reader on a socket redis-py connected.

Why: redis-py hands each pub/sub message up a chain of awaits (its parser, ``read_response``, a
push handler), builds an error-message string per call and wakes a task per message. At a few
thousand messages per second spread over time every message pays that on its own wake-up, and it
was most of a consumer's CPU (``bench/consumer_cost.py``, the ``fanout-redis-py`` rows).

How: redis-py still makes the connection, so everything its connection classes do stays true
(TCP, ``rediss://`` TLS, ``unix://``, AUTH with an ACL user or a credential provider, RESP2/RESP3
HELLO, a Sentinel-managed pool that connects to the current primary). Right after that handshake,
before anything is subscribed, :func:`_take_over` swaps the protocol of the connection's transport
for :class:`_Reader`: the event loop then reads the socket straight into a preallocated buffer
(``get_buffer``/``buffer_updated``, no StreamReader, no copy per message), hiredis parses every
complete reply of that read in one go, and the whole batch goes to the client's ``accept`` in one
synchronous call. A reply split across reads waits in hiredis' own buffer; one larger than our
buffer arrives over several reads and is returned whole.

A dropped connection is noticed at once: ``connection_lost`` ends :meth:`HiredisLink.run` with
``redis.ConnectionError``, and the client takes its usual path (reconnect, re-assert, Gap,
refresh). The StreamReaderProtocol that redis-py put on the transport is told of the loss too,
so redis-py's own ``disconnect()`` (our close, or ``follow_primary`` dropping the pool) never
waits for a close it would not hear of.

Commands (SUBSCRIBE, UNSUBSCRIBE, PING) are packed by the connection (``pack_command``, the
same encoder as redis-py) and written on the transport; their replies come back among the
messages. Backpressure is the transport's: :meth:`HiredisLink.pause` stops reading the socket.

``read_coalesce`` (``FanoutClient(read_coalesce=...)``, off by default): after a read that came
soon after the previous one, reading rests that long, so that one wake-up reads every message
that arrived meanwhile (:mod:`subscriptions.coalesce`). Three parties may pause the socket: the
owner (backpressure), the reader itself (replies that arrived before anyone runs) and the
coalescer; it reads again only when none of them holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from upbit_fanout.client._errors import ClientError
from upbit_fanout.client._link import Accept, PubSubConnection
from upbit_fanout.subscriptions.coalesce import ReadCoalescer
from upbit_fanout.subscriptions.takeover import NotTakeable, detach

try:
    import hiredis

    _HIREDIS = True
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency; see _link_class()
    _HIREDIS = False

__all__ = ["BUFFER_SIZE", "HiredisLink", "hiredis_available"]


BUFFER_SIZE: Final = 256 * 1024
"""Bytes read from the socket at most per read (larger messages take several reads)."""

_NEWLINE: Final = 10  # b"\n"
_NOT_ENOUGH: Final = object()  # hiredis' "no complete reply yet" (False is a RESP3 value)


def hiredis_available() -> bool:
    return _HIREDIS


class _Reader(asyncio.BufferedProtocol):
    """The protocol on the pub/sub socket once redis-py's handshake is done."""

    def __init__(
        self,
        transport: asyncio.Transport,
        stream_protocol: asyncio.BaseProtocol,
        buffer_size: int,
        read_coalesce: float = 0.0,
    ) -> None:
        self._transport = transport
        self._stream_protocol = stream_protocol
        self._view = memoryview(bytearray(buffer_size))
        self._parser = hiredis.Reader(notEnoughData=_NOT_ENOUGH)
        self._accept: Accept | None = None
        self._early: list[Any] = []
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error: BaseException | None = None
        self._paused = False  # by the owner (backpressure)
        self._parked = False  # by us: replies arrived while nobody runs
        self._lost = False
        self._coalescer: ReadCoalescer | None = None
        if read_coalesce:
            self._coalescer = ReadCoalescer(
                read_coalesce,
                transport.pause_reading,
                self._resume_reading,
                held=self._held,
            )

    # -- asyncio.BufferedProtocol -------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        parser = self._parser
        parser.feed(self._view, 0, nbytes)  # type: ignore[arg-type, unused-ignore]
        gets = parser.gets
        not_enough = _NOT_ENOUGH
        try:
            reply = gets()
            if reply is not_enough:
                return  # a partial reply: the rest comes with the next read
            replies = [reply]
            reply = gets()
            while reply is not not_enough:
                replies.append(reply)
                reply = gets()
        except hiredis.ProtocolError as exc:
            self._finish(RedisConnectionError(f"protocol error on the pub/sub connection: {exc}"))
            self._transport.abort()
            return
        accept = self._accept
        if accept is None:
            self._early.extend(replies)
            if not self._parked:
                self._parked = True
                self._transport.pause_reading()
            return
        try:
            accept(replies)
        except Exception as exc:  # a bug in accept: fail loudly, not a reconnect loop
            self._finish(exc)
            self._transport.abort()
            return
        if self._coalescer is not None and self._view[nbytes - 1] == _NEWLINE:
            # A read that ends inside a message is part of one write (a large write comes in
            # several reads, microseconds apart): only a read that ends where a message can end
            # (every RESP message ends with CRLF) counts for the rhythm. A cut right after an
            # inner CRLF passes for an end: then one rest too many, nothing worse.
            self._coalescer.after_read(len(replies))

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._coalescer is not None:
            self._coalescer.cancel()
        self._finish(
            RedisConnectionError(
                "Redis closed the pub/sub connection"
                if exc is None
                else f"pub/sub connection lost: {exc}"
            )
        )
        # redis-py's disconnect() waits on this protocol's close; always a clean one for it.
        self._stream_protocol.connection_lost(None)

    # -- who holds reading paused ----------------------------------------------------------------
    def _held(self) -> bool:
        """Reading stays paused for the owner, for early replies, or on a closing socket."""
        return self._paused or self._parked or self.closing

    def _resting(self) -> bool:
        return self._coalescer is not None and self._coalescer.resting

    def _resume_reading(self) -> None:
        if not self._held():
            self._transport.resume_reading()

    # -- for HiredisLink ----------------------------------------------------------------------
    def _finish(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if not self._done.done():
            self._done.set_result(None)

    @property
    def closing(self) -> bool:
        return self._lost or self._error is not None or self._transport.is_closing()

    def write(self, chunks: list[bytes]) -> None:
        if self.closing:
            raise RedisConnectionError("pub/sub connection is down")
        self._transport.write(b"".join(chunks))

    def feed(self, data: bytes) -> None:
        """Bytes redis-py had read ahead of the handshake's end (normally none)."""
        if data:
            self._view[: len(data)] = data
            self.buffer_updated(len(data))

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            if not self._parked and not self._resting():
                self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if not self._resting():
                self._resume_reading()

    async def run(self, accept: Accept) -> None:
        self._accept = accept
        try:
            if self._early:
                early, self._early = self._early, []
                accept(early)
            if self._parked:
                self._parked = False
                if not self._resting():
                    self._resume_reading()
            if not self._done.done():
                await asyncio.shield(self._done)
            error = self._error
            assert error is not None
            raise error
        finally:
            self._accept = None

    def abort(self) -> None:
        self._finish(RedisConnectionError("pub/sub connection closed"))
        if self._coalescer is not None:
            self._coalescer.cancel()
        self._transport.abort()

    @property
    def rests(self) -> int:
        """How many times reading rested to coalesce (0 with ``read_coalesce`` off)."""
        return self._coalescer.rests if self._coalescer is not None else 0


def _take_over(conn: AbstractConnection, buffer_size: int, read_coalesce: float) -> _Reader:
    """Put a :class:`_Reader` on ``conn``'s transport (connected and authenticated by redis-py)."""
    try:
        detached = detach(conn)
    except NotTakeable as exc:
        raise ClientError(
            f"the hiredis pub/sub reader cannot read {exc}; use FanoutClient(..., "
            "pubsub_reader='redis-py')"
        ) from None
    transport = detached.transport
    reader = _Reader(transport, detached.stream_protocol, buffer_size, read_coalesce)
    transport.set_protocol(reader)
    reader.feed(detached.leftover)
    return reader


class HiredisLink(PubSubConnection):
    """The default :class:`client._link.Link`: see the module docstring."""

    def __init__(
        self, redis: Redis, *, buffer_size: int = BUFFER_SIZE, read_coalesce: float = 0.0
    ) -> None:
        if not _HIREDIS:  # pragma: no cover - see _link_class()
            raise ClientError("the hiredis pub/sub reader needs the hiredis package")
        super().__init__(redis)
        self._buffer_size = buffer_size
        self._read_coalesce = read_coalesce  # checked by the client and by the coalescer
        self._reader: _Reader | None = None

    async def open(self, channels: Iterable[str]) -> None:
        conn, names = await self._connect(channels)
        self._reader = _take_over(conn, self._buffer_size, self._read_coalesce)
        self._reader.write(conn.pack_command("SUBSCRIBE", *names))
        self.channels = frozenset(names)

    async def send(self, *args: str | bytes | int) -> None:
        reader, conn = self._reader, self._conn
        if reader is None or conn is None or self.replaced:
            raise RedisConnectionError("pub/sub connection is down")
        reader.write(conn.pack_command(*args))

    async def run(self, accept: Accept) -> None:
        reader = self._reader
        if reader is None:
            raise RedisConnectionError("pub/sub connection is not open")
        await reader.run(accept)

    @property
    def rests(self) -> int:
        """How many times reading rested to coalesce (0 with ``read_coalesce`` off)."""
        return self._reader.rests if self._reader is not None else 0

    def pause(self) -> None:
        if self._reader is not None:
            self._reader.pause()

    def resume(self) -> None:
        if self._reader is not None:
            self._reader.resume()

    async def close(self) -> None:
        """Abort the socket (never waits on a dead peer) and give the connection back."""
        if self._reader is not None:
            self._reader.abort()
        await self._release()
