"""Keeping credentials out of logs.

At DEBUG, websockets logs every handshake header, one ``"%s: %s"`` record per header, and the
``Authorization`` header carries a JWT signed with the user's Upbit secret. Both ends of a private
connection (the collector's client and the emulator's server) hand websockets a
:func:`redacting_logger` instead of a plain one, so the token never reaches a log handler.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    """``url`` without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
