"""Keeping credentials out of logs.

At DEBUG, websockets logs every handshake header, one ``"%s: %s"`` record per header, and the
``Authorization`` header carries a JWT signed with the user's Upbit secret. Both ends of a private
connection (the collector's client and the emulator's server) hand websockets a
:func:`redacting_logger` instead of a plain one, so the token never reaches a log handler.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_url", "redacting_logger"]

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class _RedactingAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            args = (args[0], REDACTED)
        super().log(level, msg, *args, **kwargs)


def redacting_logger(name: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger for websockets' ``logger=`` argument that hides credential headers."""
    return _RedactingAdapter(logging.getLogger(name), {})


def redact_url(url: str) -> str:
    """``url`` without its passwords, for messages and logs.

    Works on every form :func:`subscriptions.connection.redis_from_url` accepts, including a
    Sentinel URL with several hosts (``redis+sentinel://:pw@h1:26379,h2:26379/mymaster``) and its
    ``sentinel_password`` query parameter.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    user, at, hosts = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.partition(':')[0]}:***@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any("password" in key.lower() for key, _ in pairs):
            query = "&".join(
                f"{key}=***" if "password" in key.lower() else f"{key}={value}"
                for key, value in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
