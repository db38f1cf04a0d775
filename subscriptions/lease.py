"""The lease model: an intent SET whose TTL is the client's lease.

The whole client contract is two Redis commands, so ``redis-cli`` is a valid client::

    SADD   upbit:intents:my-bot ticker:KRW-BTC trade:KRW-BTC
    EXPIRE upbit:intents:my-bot 30

A client that stops refreshing the TTL disappears when the key expires; the collector then drops
its topics from the union. The library's heartbeat is :func:`heartbeat_commands`: one idempotent
transaction that re-asserts the members and the TTL, so a Redis restart that lost every key is
repaired by the next beat. With ``replace=True`` (used after a reconnect, or when the client
removed topics) it first deletes the key, so the set is exactly what the client holds now;
``MULTI``/``EXEC`` makes the delete and re-add invisible to the collector's readers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["MIN_LEASE_SECONDS", "Command", "heartbeat_commands", "lease_ms", "release_commands"]

Command = tuple[str | int, ...]
MIN_LEASE_SECONDS = 1.0


def lease_ms(lease_seconds: float) -> int:
    """The lease in whole milliseconds (PEXPIRE); refuses leases under a second."""
    if not math.isfinite(lease_seconds) or lease_seconds < MIN_LEASE_SECONDS:
        raise ValueError(f"a lease must be at least {MIN_LEASE_SECONDS} s, got {lease_seconds!r}")
    return round(lease_seconds * 1000)


def heartbeat_commands(
    keys: Keys,
    client_id: str,
    topics: Iterable[Topic | str],
    lease_seconds: float,
    *,
    replace: bool = False,
) -> list[Command]:
    """Commands (to run in one MULTI/EXEC) that make the client's intent key hold ``topics``.

    With no topics the key is deleted: an empty set cannot exist in Redis, and a client that
    wants nothing should not hold a lease.
    """
    key = keys.intents(client_id)
    members = sorted({str(topic) for topic in topics})
    if not members:
        return [("DEL", key)]
    commands: list[Command] = []
    if replace:
        commands.append(("DEL", key))
    commands.append(("SADD", key, *members))
    commands.append(("PEXPIRE", key, lease_ms(lease_seconds)))
    return commands


def release_commands(keys: Keys, client_id: str) -> list[Command]:
    """Commands that give the lease back at once and tell the collector (client close)."""
    return [("DEL", keys.intents(client_id)), ("PUBLISH", keys.control, client_id)]
