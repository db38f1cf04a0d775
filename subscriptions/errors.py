"""The exception tree of upbit-fanout. Every error the project raises on purpose derives from
:class:`UpbitFanoutError`, so ``except UpbitFanoutError`` catches them all::

    UpbitFanoutError
    ├── InvalidTopicError (ValueError)  a topic that is not TYPE:CODE as the contract says
    ├── CodecError        (ValueError)  a payload that is neither our JSON nor our msgpack
    ├── FrameError        (ValueError)  an upstream frame the decoder cannot read
    └── UpstreamError                   Upbit (or the emulator) refused or failed us
        └── UpbitErrorFrame             Upbit sent {"error": {"name", "message"}}

Dependency errors (redis, websockets, jwt, msgpack) are wrapped at the boundary with
``raise ... from exc`` so their cause stays visible. Messages never contain API keys.
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
