"""Taking over a socket that redis-py connected: the common part of the two lean links.

redis-py makes a connection with everything its connection classes do (TCP, ``rediss://`` TLS,
``unix://``, AUTH with an ACL user or a credential provider, RESP2/RESP3 HELLO, a Sentinel-managed
pool that connects to the current primary). A lean link then puts a protocol of its own on the
connection's transport, so the event loop hands the socket's bytes straight to hiredis' parser
instead of up redis-py's chain of awaits: the client's pub/sub reader (client/_fast_link.py) and
the collector's publishing link (collector/publink.py).

:func:`detach` checks that the connection can be taken over and says what the new protocol needs:
the transport, redis-py's own protocol (which must still be told when the socket goes, so that
redis-py's ``disconnect()`` never waits for a close it would not hear of) and any bytes redis-py
had already read ahead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, cast

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from upbit_fanout.subscriptions.errors import UpbitFanoutError

__all__ = ["Detached", "NotTakeable", "detach"]

_TRANSPORT_METHODS: Final = (
    "set_protocol",
    "pause_reading",
    "resume_reading",
    "write",
    "writelines",
    "abort",
    "is_closing",
)


class NotTakeable(UpbitFanoutError):
    """The connection is not one a lean link can read (not a socket the event loop reads with a
    StreamReaderProtocol: a test double, a proxy class); the caller keeps redis-py's way (the
    client says so with a ``ClientError``; the collector's publisher quietly uses redis-py)."""


@dataclass(frozen=True, slots=True)
class Detached:
    """What a new protocol on ``transport`` takes over from redis-py."""

    transport: asyncio.Transport
    stream_protocol: asyncio.BaseProtocol
    """redis-py's protocol: tell it ``connection_lost(None)`` when the socket goes."""
    leftover: bytes
    """Bytes redis-py had read beyond the handshake (normally none): feed them first."""


def detach(conn: AbstractConnection) -> Detached:
    """See the module; ``NotTakeable`` or ``redis.ConnectionError`` (the socket is not open)."""
    writer = getattr(conn, "_writer", None)
    stream = getattr(conn, "_reader", None)
    if writer is None or stream is None:
        raise RedisConnectionError("the connection is not open")
    transport = getattr(writer, "transport", None)
    get_protocol = getattr(transport, "get_protocol", None)
    protocol = get_protocol() if get_protocol is not None else None
    # uvloop's transports are not asyncio.Transport subclasses: ask for what is used instead.
    if not isinstance(protocol, asyncio.StreamReaderProtocol) or not all(
        hasattr(transport, name) for name in _TRANSPORT_METHODS
    ):
        raise NotTakeable(
            f"a {type(conn).__name__} connection (transport {type(transport).__name__})"
        )
    if stream.at_eof():
        raise RedisConnectionError("Redis closed the connection")
    leftover = bytes(getattr(stream, "_buffer", b""))
    return Detached(cast(asyncio.Transport, transport), protocol, leftover)
