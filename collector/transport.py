"""The upstream WebSocket transport: the little :class:`collector.upstream.Upstream` needs from a
client library, and the choice between the implementations (``UPBIT_FANOUT_UPSTREAM_TRANSPORT``).

``websockets`` (:mod:`collector.transport_websockets`) is the default and the project's WebSocket
library. ``picows`` (:mod:`collector.transport_picows`, extra ``fast``) is a leaner client whose
frame parser is C: less CPU per event on the collector's read path (bench/collector_throughput.py
``--transports``). Both hand the frames of one socket read to the sink in one call, negotiate
permessage-deflate, ping the upstream and report a close the same way, so the upstream's
decisions (reconnects, backoff classes, logging) do not know which one runs. Both can rest a busy
socket's reading for ``read_coalesce`` seconds after a read (:mod:`subscriptions.coalesce`), so
that one wake-up reads the frames of several; off (0) by default.

A transport is the object :func:`load_transport` returns: ``connect()`` opens one socket and
returns an :class:`UpstreamSocket`. A failed handshake raises what
:func:`collector.upstream.classify_connect_error` reads: ``OSError``, ``TimeoutError``,
websockets' ``InvalidHandshake`` (the websockets transport) or :class:`HandshakeError` (others).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from upbit_fanout.subscriptions.errors import UpbitFanoutError, UpstreamError

__all__ = [
    "TRANSPORTS",
    "ConnectOptions",
    "FrameSink",
    "HandshakeError",
    "Transport",
    "TransportName",
    "TransportUnavailableError",
    "UpstreamSocket",
    "load_transport",
]

TransportName = Literal["websockets", "picows"]
TRANSPORTS: Final[tuple[TransportName, ...]] = ("websockets", "picows")

FrameSink = Callable[[list[bytes]], None]
"""Takes the complete data messages of one socket read, in order (text ones as UTF-8 bytes)."""


class HandshakeError(UpstreamError):
    """The WebSocket handshake failed (raised by transports other than websockets, which raises
    its own ``InvalidHandshake``). ``status``: the HTTP status of a refusal, None when the
    answer was not a refusal (a malformed answer, an extension we did not offer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportUnavailableError(UpbitFanoutError, RuntimeError):
    """The chosen upstream transport's package is not installed (picows: extra ``fast``)."""


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to open one upstream socket (the same for every transport)."""

    headers: Mapping[str, str] | None = None  # the private stream's Authorization, ...
    open_timeout: float = 10.0
    ping_interval: float = 15.0  # a protocol ping this often ...
    ping_timeout: float = 10.0  # ... and the socket is closed when its pong is this late
    close_timeout: float = 2.0
    max_size: int = 16 * 1024 * 1024  # largest message accepted (after inflating)
    compression: bool = True  # offer permessage-deflate
    user_agent: str = "upbit-fanout"
    read_coalesce: float = 0.0  # rest a busy socket's reading this long (s; 0: never)


class UpstreamSocket(Protocol):
    """One open upstream socket."""

    @property
    def close_code(self) -> int | None:
        """The close code received (1006: the socket was lost without one; None: open)."""
        ...

    @property
    def close_reason(self) -> str:
        """The close reason received ("" when none)."""
        ...

    async def send(self, text: str) -> bool:
        """Send one text message; False when the socket is already gone."""
        ...

    async def read(self) -> None:
        """Return once the socket is closed. Frames normally reach the sink as they are parsed;
        a transport that queues some (websockets' fragmented messages) delivers them here."""
        ...

    @property
    def read_rests(self) -> int:
        """How many times read coalescing rested this socket's reading (0 when it is off)."""
        ...

    def detach(self) -> None:
        """Hand nothing more to the sink (the socket's service is over)."""
        ...

    async def close(self) -> None:
        """Close the socket (code 1000) within the close timeout; never raises for a socket
        already gone."""
        ...


class Transport(Protocol):
    """Opens upstream sockets."""

    name: str

    async def connect(
        self,
        url: str,
        options: ConnectOptions,
        sink: FrameSink,
        on_pong: Callable[[], None],
    ) -> UpstreamSocket:
        """Open a socket to ``url`` (``ws://`` or ``wss://``, the system's trust store or
        ``SSL_CERT_FILE``); ``on_pong`` is called for every keep-alive pong."""
        ...


_MODULES: Final[dict[str, tuple[str, str]]] = {
    "websockets": ("upbit_fanout.collector.transport_websockets", "WebsocketsTransport"),
    "picows": ("upbit_fanout.collector.transport_picows", "PicowsTransport"),
}


def load_transport(name: str) -> Transport:
    """The transport called ``name`` (one of :data:`TRANSPORTS`).

    Raises ``ValueError`` for another name and :class:`TransportUnavailableError` when its
    package is not installed (the message says what to install)."""
    found = _MODULES.get(name)
    if found is None:
        raise ValueError(f"upstream transport must be one of {', '.join(TRANSPORTS)}, not {name!r}")
    module_name, class_name = found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransportUnavailableError(
            f"the {name} upstream transport needs the {name} package "
            f"(pip install 'upbit-fanout[fast]'), which is not installed"
        ) from exc
    transport: Transport = getattr(module, class_name)()
    return transport
