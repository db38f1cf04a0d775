"""One client connection of the emulator: the websockets socket and its outgoing queue.

:class:`Socket` is websockets' :class:`~websockets.asyncio.server.ServerConnection` with an
activity stamp (every byte in or out, pings included, for the idle timeout) and batched writes.
:class:`EmulatorConnection` is what the server and the tests see of a connection: its
subscription and format, counters, and :meth:`~EmulatorConnection.push` /
:meth:`~EmulatorConnection.flush`, which queue frames and write them with one
``transport.write`` per batch. The transport's buffer is the connection's outgoing queue; the
server decides what happens when it fills (docs/emulator.md, "Outgoing queue policy").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import OPEN

from upbit_fanout.emulator.protocol import (
    ConnectionSubscription,
    Format,
    SlidingWindow,
    frame_binary,
)

__all__ = ["EmulatorConnection", "Socket"]


class Socket(ServerConnection):
    """websockets' server connection plus an activity stamp and batched writes.

    ``send_data`` is overridden so that frames queued through websockets (connections with
    permessage-deflate) leave in one ``transport.write`` instead of one write per frame.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_activity = self.loop.time()
        self.private = False

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        super().data_received(data)

    def send_data(self) -> None:
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        self.last_activity = self.loop.time()
        pending: list[bytes] = []
        for chunk in chunks:
            if chunk:
                pending.append(chunk)
                continue
            # SEND_EOF: half-close after what came before it, as ServerConnection does.
            if pending:
                self.transport.write(b"".join(pending))
                pending = []
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):
                    self.transport.write_eof()
            else:  # pragma: no cover - TLS only
                self.transport.close()
        if pending:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class EmulatorConnection:
    """One open client connection, for tests to inspect (treat it as read-only)."""

    def __init__(self, id_: int, ws: Socket, *, messages: SlidingWindow) -> None:
        self.id = id_
        self.private = ws.private
        remote = ws.remote_address
        self.remote: str = str(remote[0]) if remote else "?"
        self.opened_at = time.time()
        self.subscription: ConnectionSubscription | None = None
        """The latest accepted subscribe request, compiled (None before the first one)."""
        self.status_up = False
        """True once the client sent a text ``PING`` (it then gets ``{"status":"UP"}``)."""
        self.frames_sent = 0
        self.snapshots_sent = 0
        """SNAPSHOT frames sent in answer to subscribe requests (simulated mode)."""
        self.replay_lines = 0
        """Replay mode: lines of the file this connection has been through."""
        self.replay_frames = 0
        """Replay mode: frames sent to this connection from the file."""
        self.replay_done = asyncio.Event()
        """Replay mode: set once every line of the file was offered to this connection."""
        self.ws = ws
        self.messages = messages
        """The connection's message rate limit (docs/upbit-protocol.md §6)."""
        self.closing = False
        """Set on an error or an abort: nothing more is sent."""
        self.dirty = False
        """Frames are queued and a flush is due (the server keeps the list)."""
        self.paused = False
        """Reading paused by a stall."""
        self.replay_task: asyncio.Task[None] | None = None
        self.raw = not ws.protocol.extensions
        """No extension negotiated: frames are built once and shared (see frame_binary)."""
        self._out: list[bytes] = []
        self.format = Format.DEFAULT

    @property
    def format(self) -> Format:
        """The connection-wide format (the latest request that named one, §2.5)."""
        return self._format

    @format.setter
    def format(self, value: Format) -> None:
        # plain attributes for the fan-out loop: enum properties cost a call each
        self._format = value
        self.format_key = value.value
        self.simple = value.simple
        self.listed = value.listed

    @property
    def open(self) -> bool:
        return self.ws.protocol.state is OPEN and not self.closing

    def push(self, data: bytes, framed: bytes | None = None) -> bool:
        """Queue one binary frame; False when the connection no longer takes frames.

        ``framed`` is ``frame_binary(data)`` when the caller has it (shared by every connection
        without compression); with permessage-deflate the frame goes through websockets, which
        compresses it for this connection.
        """
        if self.ws.protocol.state is not OPEN or self.closing:
            return False
        if self.raw:
            self._out.append(framed if framed is not None else frame_binary(data))
        else:
            self.ws.protocol.send_binary(data)
        self.frames_sent += 1
        return True

    def raw_queue(self) -> list[bytes] | None:
        """The list :meth:`push` appends ready-made frames to, while the connection takes them
        and negotiated no compression (else None). For a caller that pushes many frames in one
        synchronous run (nothing can close the connection in between), which then counts them
        in :attr:`frames_sent` itself; :meth:`flush` writes them."""
        if not self.raw or self.closing or self.ws.protocol.state is not OPEN:
            return None
        return self._out

    def flush(self) -> int:
        """Write what :meth:`push` queued in one write; returns the bytes now buffered.

        Errors of the transport propagate (the caller treats the connection as lost).
        """
        out, self._out = self._out, []
        ws = self.ws
        if ws.transport.is_closing() or ws.protocol.state is not OPEN:
            return 0
        if out:
            ws.transport.write(out[0] if len(out) == 1 else b"".join(out))
            ws.last_activity = ws.loop.time()
        ws.send_data()
        return ws.transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait until the transport's buffer is under its low-water mark (if it is paused)."""
        if self.ws.paused and not self.ws.transport.is_closing():
            await self.ws.drain()

    @property
    def backlogged(self) -> bool:
        """More is buffered than the write limit: the client is not keeping up right now."""
        return self.ws.paused and not self.ws.transport.is_closing()

    def abort(self) -> None:
        """Close abruptly: no close frame, the client sees 1006."""
        self.closing = True
        self.ws.transport.abort()

    def pause_reading(self) -> None:
        if not self.ws.transport.is_closing():
            self.ws.transport.pause_reading()
            self.paused = True

    def resume_reading(self) -> None:
        self.ws.last_activity = self.ws.loop.time()
        if self.paused and not self.ws.transport.is_closing():
            self.ws.transport.resume_reading()
        self.paused = False

    def __repr__(self) -> str:
        kind = "private" if self.private else "public"
        return f"<EmulatorConnection {self.id} {kind} {self.remote}>"
