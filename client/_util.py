"""Pure helpers: client ids, reconnect delays, safe URLs for messages."""

from __future__ import annotations

import os
import re
import socket

__all__ = ["default_client_id", "sanitize_client_id", "transient_id"]

from upbit_fanout.subscriptions.keys import CLIENT_ID_CHARS, MAX_CLIENT_ID

_NOT_ALLOWED = re.compile(f"[^{CLIENT_ID_CHARS}]+")


def sanitize_client_id(text: str) -> str:
    """``text`` made fit for ``Keys.intents``: runs of other characters become ``-``, max 128."""
    cleaned = _NOT_ALLOWED.sub("-", text).strip("-") or "client"
    return cleaned[:MAX_CLIENT_ID]


def default_client_id(
    hostname: str | None = None, pid: int | None = None, token: str | None = None
) -> str:
    """``{hostname}-{pid}-{random}``: unique, and says in redis-cli where the client runs."""
    host = sanitize_client_id(hostname if hostname is not None else socket.gethostname())[:80]
    pid = os.getpid() if pid is None else pid
    token = token if token is not None else os.urandom(3).hex()
    return sanitize_client_id(f"{host}-{pid}-{token}")


def transient_id(client_id: str, sequence: int) -> str:
    """The id of a snapshot's short-lived intent key, e.g. ``bot-1.snap3``."""
    suffix = f".snap{sequence}"
    return client_id[: MAX_CLIENT_ID - len(suffix)] + suffix
