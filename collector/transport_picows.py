"""The picows upstream transport (extra ``fast``): :class:`PicowsTransport`.

picows parses frames in C and calls :meth:`_Listener.on_ws_frame` for each, saying which one is
the last of the bytes a socket read returned (``last_in_buffer``): the listener gathers the data
messages of one read and hands them to the sink in one call, as the websockets transport does.
What picows leaves to its user is done here:

- permessage-deflate (:mod:`collector.deflate`): offered in the handshake, the answer checked
  (an answer the client cannot accept fails the handshake), RSV1 messages inflated;
- fragmented messages: continuation frames joined, in order with the unfragmented ones;
- protocol violations close the socket with a reason (RSV1 with no compression negotiated,
  RSV2/RSV3, a continuation with no message to continue, a new message inside a fragmented one:
  1002; a message that does not inflate: 1007; a message beyond the size limit: 1009);
- a close frame from the server is answered and the socket closed;
- keep-alive: picows pings every ``ping_interval`` s and disconnects when a pong is
  ``ping_timeout`` s late (at most ``ping_interval``: picows wants it before the next ping);
  every pong is reported (``on_pong``);
- read coalescing (``read_coalesce``, :mod:`subscriptions.coalesce`): after a busy read, the
  socket's reading rests for a moment (``pause_reading`` of the transport under picows), so the
  next read takes several frames at once. The chunked hand-over of a big read pauses reading too:
  each leaves the other's pause alone (the coalescer's timer does not resume while a drain runs,
  the drain does not resume while the coalescer rests).

Its handshake request (with a private stream's ``Authorization`` header) is logged at picows'
debug level through an adapter that redacts credential headers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import picows
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
)

from upbit_fanout.collector._log import log
from upbit_fanout.collector.deflate import OFFER, InflateError, Inflater, accepted
from upbit_fanout.collector.transport import ConnectOptions, FrameSink, HandshakeError
from upbit_fanout.subscriptions.coalesce import ReadCoalescer
from upbit_fanout.subscriptions.redact import REDACTED

__all__ = ["PicowsSocket", "PicowsTransport"]


_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY
_CONTINUATION: Final = WSMsgType.CONTINUATION
_CLOSE: Final = WSMsgType.CLOSE
_PONG: Final = WSMsgType.PONG
_ABNORMAL: Final = 1006
CHUNK: Final = 512
"""Messages handed over in one call at most: a firehose read can hold megabytes (picows grows
its read buffer while reads fill it), and the publisher must run in between."""

_SECRET_LINE: Final = re.compile(
    rb"(?im)^((?:proxy-)?authorization|cookie):[^\r\n]*", re.IGNORECASE
)


class _RedactingAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows logs its whole upgrade request in one record: credential header lines go."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        args = tuple(
            _SECRET_LINE.sub(rb"\1: " + REDACTED.encode(), arg) if isinstance(arg, bytes) else arg
            for arg in args
        )
        super().log(level, msg, *args, **kwargs)


_LOGGER: Final = _RedactingAdapter(logging.getLogger("picows.client"), {})


class _Listener(WSListener):
    """Frames of one socket -> complete messages, one sink call per socket read."""

    def __init__(
        self,
        sink: FrameSink,
        on_pong: Callable[[], None],
        inflater: Inflater | None,
        max_size: int,
        read_coalesce: float = 0.0,
    ) -> None:
        super().__init__()
        self.sink: FrameSink | None = sink
        self.on_pong = on_pong
        self.inflater = inflater
        self.max_size = max_size
        self.batch: list[bytes] = []
        self.parts: list[bytes] | None = None  # a fragmented message being received
        self.compressed = False  # ... whose first frame had RSV1
        self.size = 0
        self.backlog: deque[list[bytes]] = deque()  # chunks of a big read, handed over in turn
        self.transport: WSTransport | None = None
        self.draining = False
        self._loop = asyncio.get_running_loop()
        self.read_coalesce = read_coalesce
        self.coalescer: ReadCoalescer | None = None
        """Rests reading after busy reads (None: ``read_coalesce`` 0)."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.read_coalesce:
            reading = transport.underlying_transport
            self.coalescer = ReadCoalescer(
                self.read_coalesce,
                reading.pause_reading,
                reading.resume_reading,
                held=self._reading_held,
                loop=self._loop,
            )

    def _reading_held(self) -> bool:
        """Reading is paused by the chunked hand-over (which resumes it when done), or the socket
        is gone: the coalescer's timer leaves it paused."""
        transport = self.transport
        return self.draining or transport is None or transport.is_disconnected

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _BINARY or kind is _TEXT:
            if frame.rsv2 or frame.rsv3:
                raise self._violation("a frame with RSV2 or RSV3 set (no extension defines them)")
            if self.parts is not None:
                raise self._violation("a new message began inside a fragmented one")
            if frame.fin:
                if frame.rsv1:
                    self.batch.append(self._inflate(frame.get_payload_as_bytes()))
                else:
                    self.batch.append(frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
                self.compressed = frame.rsv1
                self.size = frame.payload_size
        elif kind is _CONTINUATION:
            self._continue(frame)
        elif kind is _CLOSE:
            self.flush()
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        elif kind is _PONG:
            self.on_pong()
        if frame.last_in_buffer:
            messages = len(self.batch)
            self.flush()
            coalescer = self.coalescer
            if coalescer is not None:
                coalescer.after_read(messages)

    def _continue(self, frame: WSFrame) -> None:
        parts = self.parts
        if parts is None:
            raise self._violation("a continuation frame with no message to continue")
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            raise self._violation("a continuation frame with RSV bits set")
        self.size += frame.payload_size
        if self.size > self.max_size:
            raise self._violation(
                f"a fragmented message beyond {self.max_size} bytes", WSCloseCode.MESSAGE_TOO_BIG
            )
        parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            self.parts = None
            data = b"".join(parts)
            self.batch.append(self._inflate(data) if self.compressed else data)

    def _inflate(self, payload: bytes) -> bytes:
        inflater = self.inflater
        if inflater is None:
            raise self._violation("a compressed frame (RSV1) but no compression was negotiated")
        try:
            return inflater.inflate(payload)
        except InflateError as exc:
            raise self._violation(str(exc), WSCloseCode(exc.close_code)) from exc

    def _violation(
        self, reason: str, code: WSCloseCode = WSCloseCode.PROTOCOL_ERROR
    ) -> WSProtocolError:
        """The error to raise (picows then closes the socket with its code and reason). What
        came before in the same read is handed over; nothing after it ever is (picows goes on
        parsing the read's frames)."""
        self.flush()
        self.sink = None
        return WSProtocolError(code, reason)

    def is_user_specific_pong(self, frame: WSFrame) -> bool:
        if frame.msg_type is _PONG:
            self.on_pong()
            return True
        return False

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.coalescer is not None:
            self.coalescer.cancel()
        self.flush()
        while self.backlog and self.sink is not None:  # what was read is handed over
            self.sink(self.backlog.popleft())

    def flush(self) -> None:
        """Hand the read's messages over: at once when they are few; else in chunks of
        :data:`CHUNK`, one per event-loop turn, with reading paused until the last (the others
        tasks, the publisher first, run in between; the kernel's buffer holds the rest)."""
        batch = self.batch
        if not batch:
            return
        self.batch = []
        sink = self.sink
        if sink is None:
            return
        if len(batch) <= CHUNK and not self.backlog:
            sink(batch)
            return
        start = 0 if self.backlog else CHUNK
        if start:
            sink(batch[:CHUNK])
        self.backlog.extend(batch[i : i + CHUNK] for i in range(start, len(batch), CHUNK))
        if not self.draining:
            self.draining = True
            if self.transport is not None:
                self.transport.underlying_transport.pause_reading()
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        backlog = self.backlog
        if backlog and self.sink is not None:
            self.sink(backlog.popleft())
        if backlog and self.sink is not None:
            self._loop.call_soon(self._drain)
            return
        self.draining = False
        backlog.clear()
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        coalescer = self.coalescer
        if coalescer is None or not coalescer.resting:  # else its timer resumes reading
            transport.underlying_transport.resume_reading()


def _close_handshake(transport: WSTransport) -> Any:
    """picows' record of the close frames: None until one was sent or received (its type stub
    says it is never None)."""
    return transport.close_handshake


class PicowsSocket:
    """One upstream socket of picows (:class:`collector.transport.UpstreamSocket`)."""

    def __init__(self, transport: WSTransport, listener: _Listener, close_timeout: float) -> None:
        self.transport = transport
        self.listener = listener
        self._close_timeout = close_timeout

    @property
    def close_code(self) -> int | None:
        handshake = _close_handshake(self.transport)
        if handshake is not None and handshake.recv is not None:
            code: int = handshake.recv.code.value
            return code
        return _ABNORMAL if self.transport.is_disconnected else None

    @property
    def close_reason(self) -> str:
        handshake = _close_handshake(self.transport)
        if handshake is None:
            return ""
        if handshake.recv is not None:
            return str(handshake.recv.reason or "")
        return str(handshake.sent.reason or "") if handshake.sent is not None else ""

    async def send(self, text: str) -> bool:
        transport = self.transport
        if transport.is_disconnected or transport.is_close_frame_sent:
            return False
        transport.send(_TEXT, text.encode())
        return True

    async def read(self) -> None:
        try:
            await self.transport.wait_disconnected()
        except WSProtocolError as exc:  # a violation (by the server, or found by the listener)
            log.warning("upstream socket closed: protocol violation: %s", exc)

    @property
    def read_rests(self) -> int:
        coalescer = self.listener.coalescer
        return 0 if coalescer is None else coalescer.rests

    def detach(self) -> None:
        self.listener.sink = None

    async def close(self) -> None:
        transport = self.transport
        if transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        try:
            async with asyncio.timeout(self._close_timeout):
                await transport.wait_disconnected()
        except TimeoutError:
            transport.disconnect(False)
        except picows.WSError:
            pass  # reported by read()


class PicowsTransport:
    """Upstream sockets of picows (extra ``fast``)."""

    name = "picows"

    async def connect(
        self,
        url: str,
        options: ConnectOptions,
        sink: FrameSink,
        on_pong: Callable[[], None],
    ) -> PicowsSocket:
        headers = {"User-Agent": options.user_agent, **(options.headers or {})}
        if options.compression:
            headers["Sec-WebSocket-Extensions"] = OFFER

        def listener(_request: WSUpgradeRequest, response: WSUpgradeResponse) -> _Listener:
            params = accepted(response.headers.get("Sec-WebSocket-Extensions"))
            if params is not None and not options.compression:
                raise HandshakeError("the server compresses, but no compression was offered")
            inflater = None if params is None else Inflater(params, options.max_size)
            return _Listener(sink, on_pong, inflater, options.max_size, options.read_coalesce)

        try:
            async with asyncio.timeout(options.open_timeout):
                transport, handler = await picows.ws_connect(
                    listener,
                    url,
                    websocket_handshake_timeout=options.open_timeout,
                    logger_name=_LOGGER,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=options.ping_interval,
                    # picows wants the pong before the next ping is due
                    auto_ping_reply_timeout=min(options.ping_timeout, options.ping_interval),
                    auto_ping_strategy=WSAutoPingStrategy.PING_PERIODICALLY,
                    enable_auto_pong=True,
                    max_frame_size=options.max_size,
                    extra_headers=headers,
                    max_redirects=0,
                )
        except picows.WSHandshakeError as exc:
            status = None if exc.response is None else int(exc.response.status)
            if status is not None:
                raise HandshakeError(f"HTTP {status} on the WebSocket handshake", status) from exc
            raise HandshakeError(f"{type(exc).__name__}: {exc}") from exc
        except picows.WSError as exc:
            raise HandshakeError(f"{type(exc).__name__}: {exc}") from exc
        assert isinstance(handler, _Listener)
        return PicowsSocket(transport, handler, options.close_timeout)
