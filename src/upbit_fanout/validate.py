"""Checks of settings and command-line values, shared by :mod:`upbit_fanout.settings` (pydantic
validators) and the commands' argparse types.

Each check takes the text (or number) and returns the value to use, or raises :class:`ValueError`
whose message says what would be right. Messages never repeat the value given: it may hold a
password (a Redis URL) or be a key pasted into the wrong variable.

This module is imported by ``upbit-fanout --help``: it imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

__all__ = [
    "LOG_LEVELS",
    "arg",
    "at_least",
    "client_id",
    "key_prefix",
    "log_level",
    "port",
    "redis_url",
    "ws_url",
]

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url(text: str) -> str:
    """A URL redis-py can connect to: ``redis://[[user]:password@]host[:port][/db]``,
    ``rediss://...`` (TLS) or ``unix:///path/to/socket``; or a Sentinel URL,
    ``redis+sentinel://host:port[,host:port]/service_name[/db]``; or a Redis Cluster URL,
    ``redis+cluster://host:port[,host:port]/`` (docs/operations.md)."""
    expected = (
        "a Redis URL such as redis://localhost:6379/0 (or rediss://, unix:///path, "
        "redis+sentinel://host:26379/service, redis+cluster://host:7000,host:7001/)"
    )
    scheme = text.strip().partition("://")[0].lower()
    if scheme in ("redis+cluster", "rediss+cluster"):
        from upbit_fanout.subscriptions.connection import parse_cluster_url  # noqa: PLC0415

        parse_cluster_url(text.strip())  # its ValueError says what would be right
        return text.strip()
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        # Imported here: only a Sentinel URL pays for redis-py's import.
        from upbit_fanout.subscriptions.connection import parse_sentinel_url  # noqa: PLC0415

        parse_sentinel_url(text.strip())  # its ValueError says what would be right
        return text.strip()
    parts = _network_parts(text, _REDIS_SCHEMES, expected)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs the socket path: unix:///run/redis.sock")
        return text.strip()
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"must be {expected}: the database after the host is a number (/0)")
    return text.strip()


def _network_url(text: str, schemes: tuple[str, ...], expected: str) -> str:
    _network_parts(text, schemes, expected)
    return text.strip()


def _network_parts(text: str, schemes: tuple[str, ...], expected: str) -> SplitResult:
    """``text`` split, once its port (if any) is 1-65535, its scheme one of ``schemes`` and,
    unless it is ``unix://`` (a socket path), it names a host."""
    try:
        parts = urlsplit(text.strip())
        the_port = parts.port
    except ValueError:
        raise ValueError(f"must be {expected}; its port must be 1-65535") from None
    if parts.scheme not in schemes:
        raise ValueError(f"must be {expected}; the scheme given was {parts.scheme or 'none'!r}")
    if parts.scheme == "unix":
        return parts
    if not parts.hostname:
        raise ValueError(f"must be {expected}: the host is missing")
    if the_port == 0:
        raise ValueError(f"must be {expected}; its port must be 1-65535")
    return parts


def ws_url(text: str) -> str:
    """A WebSocket URL: ``ws://host[:port]/path`` or ``wss://...``."""
    expected = "a WebSocket URL such as wss://api.upbit.com/websocket/v1 (ws:// or wss://)"
    return _network_url(text, ("ws", "wss"), expected)


def http_url(text: str) -> str:
    """An HTTP URL: ``https://host[:port]/path`` or ``http://...``."""
    expected = "an HTTP URL such as https://api.upbit.com/v1/market/all (http:// or https://)"
    return _network_url(text, ("http", "https"), expected)


def host(text: str) -> str:
    """An address to bind to: a host name or an IP address, e.g. ``127.0.0.1`` or ``::1``."""
    value = text.strip()
    if not value or any(ch.isspace() or ch in "/?#@" for ch in value):
        raise ValueError("must be a host name or an IP address to bind to, such as 127.0.0.1")
    return value


def port(text: str | int) -> int:
    """A TCP port to listen on: 0 (a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a port number from 0 (a free one) to 65535") from None
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 (a free one) to 65535")
    return value


def key_prefix(text: str) -> str:
    """A key prefix: non-empty, no ``:`` (it separates the parts of a key), no spaces."""
    if not text or ":" in text or any(ch.isspace() for ch in text):
        raise ValueError("must be a non-empty word without ':' or spaces, such as upbit")
    return text


def client_id(text: str) -> str:
    """A client id (the last part of ``P:intents:{client_id}``)."""
    # Imported here: this module must stay light (``--help`` imports it).
    from upbit_fanout.subscriptions.keys import Keys  # noqa: PLC0415

    try:
        Keys().intents(text)
    except ValueError:
        raise ValueError("must be 1-128 characters of letters, digits and _.-@") from None
    return text


def log_level(text: str) -> str:
    """A logging level name, any case; returned upper case."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def at_least(
    minimum: float, *, kind: type[int] | type[float] = float, unit: str = ""
) -> Callable[[str], float]:
    """A number ``>= minimum`` (``kind`` int or float), for argparse."""
    noun = "a whole number" if kind is int else "a number"
    suffix = f" {unit}" if unit else ""

    def check(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"must be {noun} of at least {minimum:g}{suffix}") from None
        if not math.isfinite(value) or value < minimum:
            raise ValueError(f"must be {noun} of at least {minimum:g}{suffix}")
        return value

    return check


def arg(check: Callable[[str], T]) -> Callable[[str], T]:
    """``check`` as an argparse ``type=``: its message becomes argparse's error message."""

    def convert(text: str) -> T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__
    return convert
