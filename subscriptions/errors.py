"""The exception tree of upbit-fanout. Every error the project raises on purpose derives from
:class:`UpbitFanoutError`, so ``except UpbitFanoutError`` catches them all. The whole tree, with
the module each class lives in (the client's are also exported by ``upbit_fanout.client``)::

    UpbitFanoutError                          subscriptions.errors
    ├── InvalidTopicError (ValueError)        subscriptions.errors: a topic the contract refuses
    ├── CodecError        (ValueError)        subscriptions.errors: neither our JSON nor msgpack
    ├── FrameError        (ValueError)        subscriptions.errors: an upstream frame we cannot read
    │   ├── InvalidEvent                      collector.decode: a frame with a wrong field type
    │   └── InflateError                      collector.deflate: a message that does not inflate
    ├── UpstreamError                         subscriptions.errors: Upbit refused or failed us
    │   ├── UpbitErrorFrame                   subscriptions.errors: {"error": {"name", "message"}}
    │   │   └── ExchangeError                 collector.exchange: a REST request Upbit refused
    │   └── HandshakeError                    collector.transport: a failed WebSocket handshake
    ├── LeaseLost                             subscriptions.lease: the leader lease is not ours
    ├── EventParseError   (ValueError)        client.events: ``event.typed`` on a malformed event
    ├── ClientError                           client: the client could not do what was asked
    │   ├── RedisUnavailableError             client: Redis unreachable, refused us, or gave up
    │   └── SnapshotTimeoutError (TimeoutError)  client: no event for a topic in time
    ├── RequestError                          emulator.protocol: a subscribe request Upbit refuses
    ├── ReplayError       (ValueError)        emulator.replay: a replay file we cannot play
    ├── AuthError                             emulator.auth: a JWT Upbit would refuse
    ├── OrderRejected                         emulator.account: an order Upbit would refuse
    ├── EmulatorCrashError (RuntimeError)     emulator.server: a background task of it crashed
    ├── TLSUnavailableError (RuntimeError)    emulator.tls: ``--tls`` without trustme installed
    ├── TransportUnavailableError (RuntimeError)  collector.transport: picows not installed
    ├── NotTakeable                           subscriptions.takeover: a socket no lean link reads
    └── LocalRedisUnavailableError (RuntimeError)  upbit_fanout.localredis: no Redis to start

Dependency errors (redis, websockets, jwt, msgpack, httpx) are wrapped at the boundary with
``raise ... from exc`` so their cause stays visible. Messages never contain API keys or passwords.
``tests/test_errors.py`` holds this picture to the code: a new exception class fails it until
it is placed here.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "FrameError",
    "InvalidTopicError",
    "UpbitErrorFrame",
    "UpbitFanoutError",
    "UpstreamError",
]


class UpbitFanoutError(Exception):
    """Root of every exception upbit-fanout raises on purpose."""


class InvalidTopicError(UpbitFanoutError, ValueError):
    """A topic that the contract does not allow; the message says what would be right."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"invalid topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class CodecError(UpbitFanoutError, ValueError):
    """A payload that cannot be decoded as an upbit-fanout event."""


class FrameError(UpbitFanoutError, ValueError):
    """An upstream frame that is not valid Upbit JSON (garbage, truncated, unknown shape)."""


class UpstreamError(UpbitFanoutError):
    """Upbit, or the emulator standing in for it, refused or failed a request."""


class UpbitErrorFrame(UpstreamError):
    """Upbit answered with ``{"error": {"name": ..., "message": ...}}``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
