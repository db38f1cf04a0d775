"""permessage-deflate (RFC 7692) for a transport that does not do it itself (picows).

Pure: header text in, parameters out; compressed payloads in, messages out. The client offers
:data:`OFFER` (the extension with ``client_max_window_bits``, which only says the server may
choose our window: the collector sends its few small messages uncompressed, as RFC 7692 allows);
:func:`accepted` reads the server's ``Sec-WebSocket-Extensions`` answer, and an :class:`Inflater`
undoes the compression of every message whose first frame has RSV1 set, honouring the server's
context takeover (one zlib stream for the connection) or ``server_no_context_takeover`` (a fresh
one per message).

A server answer the client cannot accept (an extension it did not offer, an unknown or repeated
parameter, a window outside 8..15) raises :class:`collector.transport.HandshakeError`: the client
must fail the connection (RFC 7692, section 5). No answer: the socket runs uncompressed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from upbit_fanout.collector.transport import HandshakeError
from upbit_fanout.subscriptions.errors import FrameError

__all__ = ["OFFER", "DeflateParams", "InflateError", "Inflater", "accepted"]

NAME: Final = "permessage-deflate"
OFFER: Final = f"{NAME}; client_max_window_bits"
"""The ``Sec-WebSocket-Extensions`` header the client sends."""

_TAIL: Final = b"\x00\x00\xff\xff"  # removed by the sender from every message (RFC 7692, 7.2.1)
_FLAGS: Final = frozenset({"server_no_context_takeover", "client_no_context_takeover"})
_BITS: Final = frozenset({"server_max_window_bits", "client_max_window_bits"})


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What the server accepted."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int | None = None


def accepted(header: str | None) -> DeflateParams | None:
    """The parameters of the server's ``Sec-WebSocket-Extensions`` answer (None: no compression).

    Raises :class:`HandshakeError` for an answer the client must refuse."""
    if header is None or not header.strip():
        return None
    found: DeflateParams | None = None
    for extension in _split(header, ","):
        name, *params = (part.strip() for part in _split(extension, ";"))
        if name.lower() != NAME:
            raise HandshakeError(f"the server accepted an extension that was not offered: {name}")
        if found is not None:
            raise HandshakeError(f"the server accepted {NAME} twice")
        found = _params(params)
    return found


def _params(params: list[str]) -> DeflateParams:
    seen: dict[str, str | None] = {}
    for param in params:
        key, eq, value = param.partition("=")
        key = key.strip().lower()
        if key in seen:
            raise HandshakeError(f"{NAME}: {key} given twice")
        if key in _FLAGS:
            if eq:
                raise HandshakeError(f"{NAME}: {key} takes no value")
        elif key in _BITS:
            value = value.strip().strip('"')
            if not (eq and value.isdigit() and 8 <= int(value) <= 15):
                raise HandshakeError(f"{NAME}: {key} must be 8..15, not {value or 'nothing'}")
        else:
            raise HandshakeError(f"{NAME}: unknown parameter {key or '(empty)'}")
        seen[key] = value if eq else None
    server_bits = seen.get("server_max_window_bits")
    client_bits = seen.get("client_max_window_bits")
    return DeflateParams(
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_no_context_takeover="client_no_context_takeover" in seen,
        server_max_window_bits=int(server_bits) if server_bits else 15,
        client_max_window_bits=int(client_bits) if client_bits else None,
    )


def _split(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside double quotes, empty pieces dropped."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return [piece for piece in out if piece.strip()]


class InflateError(FrameError):
    """A compressed message that cannot be inflated (``close_code`` 1007) or that inflates to
    more than the size limit (1009). The connection's compression context is lost with it."""

    def __init__(self, message: str, close_code: int) -> None:
        super().__init__(message)
        self.close_code = close_code


class Inflater:
    """Inflates the compressed messages of one connection, in order."""

    def __init__(self, params: DeflateParams, max_size: int) -> None:
        # A window of 8 is inflated with 9: zlib's deflate widens 8 to 9, and a wider window
        # reads everything a narrower one wrote.
        self._wbits = -max(params.server_max_window_bits, 9)
        self._takeover = not params.server_no_context_takeover
        self._max_size = max_size
        self._zlib = zlib.decompressobj(self._wbits)

    def inflate(self, payload: bytes) -> bytes:
        """One message's payload (the frames' payloads joined), inflated."""
        stream = self._zlib if self._takeover else zlib.decompressobj(self._wbits)
        try:
            data = stream.decompress(payload + _TAIL, self._max_size + 1)
        except zlib.error as exc:
            text = f"a compressed message is not valid deflate data ({exc})"
            raise InflateError(text, 1007) from exc
        if len(data) > self._max_size:
            raise InflateError(f"a compressed message inflates beyond {self._max_size} bytes", 1009)
        return data
