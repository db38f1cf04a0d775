"""The websockets upstream transport (the default): :class:`WebsocketsTransport`.

websockets parses every frame of the bytes one socket read returned (``data_received``, deflate
undone there); :class:`_KeepAliveConnection` hands the unfragmented data frames among them to the
sink as one list, in order, with no message queue, task wake-up or ``recv()`` per frame.
Anything else (a fragmented message, or a frame behind one still queued) takes websockets' own
path, ``recv()``, which :meth:`WebsocketsSocket.read` drains: frames never overtake each other.
With ``read_coalesce``, a busy socket's reading rests for a moment after a read
(:mod:`subscriptions.coalesce`), so that the next read takes several frames at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from upbit_fanout.collector.transport import ConnectOptions, FrameSink
from upbit_fanout.subscriptions.coalesce import ReadCoalescer
from upbit_fanout.subscriptions.redact import redacting_logger

__all__ = ["WebsocketsSocket", "WebsocketsTransport"]

_WS_LOGGER: Final = redacting_logger("websockets.client")


class _KeepAliveConnection(ClientConnection):
    """A client connection that says when a keep-alive pong arrived (``on_pong``): the proof
    that a quiet upstream is alive (``P:status`` ``upstream_alive_at``), and hands every
    complete data frame of one read to ``on_frames`` in one call (see the module docstring).

    Without ``on_frames`` the connection is an ordinary websockets one. Flow control: the sink
    is synchronous and the outbox drops its oldest items when full, so reading never has to
    pause for it; websockets pauses reading when its own queue (the fragmented path) is full,
    and :attr:`coalescer` (:meth:`coalesce_reads`) pauses it after busy reads. The coalescer's
    timer leaves websockets' pause alone; websockets may resume reading during a rest, which
    only makes that rest shorter.
    """

    on_pong: Callable[[], None] | None = None
    on_frames: Callable[[list[bytes]], None] | None = None
    coalescer: ReadCoalescer | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: list[bytes] = []
        self._fragmented = False  # a fragmented message is being received: websockets' path
        self._queued = 0  # messages handed to websockets' queue and not yet taken by recv()

    def acknowledge_pings(self, data: bytes) -> None:
        super().acknowledge_pings(data)
        if self.on_pong is not None:
            self.on_pong()

    def process_event(self, event: Event) -> None:
        if self.on_frames is not None and type(event) is Frame and self.response is not None:
            opcode = event.opcode
            if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
                if event.fin and not self._fragmented and not self._queued:
                    data = event.data
                    # a text frame too: the decoder checks UTF-8 itself, as for binary frames
                    self._batch.append(data if type(data) is bytes else bytes(data))
                    return
                if event.fin:
                    self._queued += 1
                else:
                    self._fragmented = True
            elif opcode is Opcode.CONT and event.fin:
                self._fragmented = False
                self._queued += 1
        super().process_event(event)

    def coalesce_reads(self, interval: float) -> None:
        """Rest reading for ``interval`` s after a busy read (0: never)."""
        if interval:
            transport = self.transport
            self.coalescer = ReadCoalescer(
                interval,
                transport.pause_reading,
                transport.resume_reading,
                held=self._reading_held,
                loop=self.loop,
            )

    def _reading_held(self) -> bool:
        """websockets paused reading itself (its message queue is full), or the socket is
        closing: the coalescer's timer leaves reading paused."""
        return self.recv_messages.paused or self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        messages = len(self._batch)
        self._flush()
        coalescer = self.coalescer
        if coalescer is not None:
            coalescer.after_read(messages)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.coalescer is not None:
            self.coalescer.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        super().eof_received()
        self._flush()

    def _flush(self) -> None:
        batch = self._batch
        if batch and self.on_frames is not None:
            self._batch = []
            self.on_frames(batch)

    def message_taken(self) -> None:
        """The reader took one message from websockets' queue (see the class docstring)."""
        if self._queued:
            self._queued -= 1


class WebsocketsSocket:
    """One upstream socket of websockets (:class:`collector.transport.UpstreamSocket`)."""

    def __init__(self, ws: _KeepAliveConnection, sink: FrameSink) -> None:
        self.ws = ws
        self._sink = sink

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str:
        return self.ws.close_reason or ""

    async def send(self, text: str) -> bool:
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            return False
        return True

    async def read(self) -> None:
        ws = self.ws
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                ws.message_taken()
                if ws.on_frames is not None:
                    self._sink([data.encode() if isinstance(data, str) else data])

    @property
    def read_rests(self) -> int:
        coalescer = self.ws.coalescer
        return 0 if coalescer is None else coalescer.rests

    def detach(self) -> None:
        self.ws.on_frames = None

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await self.ws.close()


class WebsocketsTransport:
    """Upstream sockets of websockets, the project's WebSocket library (the default)."""

    name = "websockets"

    async def connect(
        self,
        url: str,
        options: ConnectOptions,
        sink: FrameSink,
        on_pong: Callable[[], None],
    ) -> WebsocketsSocket:
        ws = await connect(
            url,
            additional_headers=dict(options.headers) if options.headers else None,
            origin=None,  # an Origin header cuts the limit to 1/10 s (docs/upbit-protocol.md §6)
            user_agent_header=options.user_agent,
            proxy=None,
            compression="deflate" if options.compression else None,
            open_timeout=options.open_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            close_timeout=options.close_timeout,
            max_size=options.max_size,
            logger=_WS_LOGGER,
            create_connection=_KeepAliveConnection,
        )
        assert isinstance(ws, _KeepAliveConnection)
        ws.on_pong = on_pong
        ws.on_frames = sink
        ws.coalesce_reads(options.read_coalesce)
        return WebsocketsSocket(ws, sink)
