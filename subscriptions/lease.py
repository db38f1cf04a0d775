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

The collector's own lease, ``P:leader``, is a lease with a **fencing token**: its value is
``"{token} {collector_id}"``, where the token comes from ``INCR P:leader:token`` at every takeover
(:data:`TAKE_SCRIPT`). A collector remembers the value it wrote, and every write it makes later
(the publish script, the status transaction) first checks that ``P:leader`` still holds exactly
that value. A collector that was paused or cut off past its lease therefore cannot write anything
once another one took over, even with the same collector id: the token differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import Topic

__all__ = [
    "MIN_LEASE_SECONDS",
    "REFRESH_SCRIPT",
    "RELEASE_SCRIPT",
    "TAKE_SCRIPT",
    "Command",
    "LeaseLost",
    "heartbeat_commands",
    "leader_value",
    "lease_ms",
    "parse_leader",
    "release_commands",
]

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


# -- the collector's leadership lease (P:leader) -------------------------------------------------

TAKE_SCRIPT = """\
-- KEYS[1] P:leader, KEYS[2] P:leader:token; ARGV[1] collector id, ARGV[2] lease ms,
-- ARGV[3] '1' to reclaim a lease held under this same collector id (a restart).
-- Returns {1, new value, previous value or '', 1 if the token counter was (re)started} when
-- taken, else {0, holder, holder's PTTL}.
local holder = redis.call('GET', KEYS[1])
if holder then
  local space = string.find(holder, ' ', 1, true)
  local id = space and string.sub(holder, space + 1) or holder
  if ARGV[3] ~= '1' or id ~= ARGV[1] then
    return {0, holder, redis.call('PTTL', KEYS[1])}
  end
end
local token = redis.call('INCR', KEYS[2])
local seeded = 0
if token == 1 then
  seeded = 1
  -- The counter was lost (a Redis restart): restart it at the server's clock in ms, so no
  -- token is ever handed out twice.
  local now = redis.call('TIME')
  token = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('SET', KEYS[2], string.format('%d', token))
end
local value = string.format('%d', token) .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value, holder or '', seeded}
"""
"""Take ``P:leader`` when it is free (or reclaim it from a dead process of the same id)."""

REFRESH_SCRIPT = """\
-- KEYS[1] P:leader; ARGV[1] the value this collector wrote, ARGV[2] lease ms.
-- Returns 1 when refreshed, else the holder ('' when nobody holds it).
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return holder or ''
"""
"""Refresh the lease only while it still holds this collector's value (token and id)."""

RELEASE_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
"""Give the lease back (a clean stop) only if it is still this collector's."""


class LeaseLost(UpbitFanoutError):
    """A write was refused because ``P:leader`` no longer holds this collector's value."""

    def __init__(self, holder: bytes | None = None) -> None:
        super().__init__("this collector no longer holds the leader lease")
        self.holder = holder
        """What ``P:leader`` held instead, when known (None: nobody, or not read)."""


def leader_value(token: int, collector_id: str) -> str:
    """The value of ``P:leader``: ``"{token} {collector_id}"``."""
    return f"{token} {collector_id}"


def parse_leader(value: bytes | str) -> tuple[int | None, str]:
    """``(token, collector_id)`` of a ``P:leader`` value; token None for a value without one."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    head, space, rest = text.partition(" ")
    if space and head.isdigit():
        return int(head), rest
    return None, text
