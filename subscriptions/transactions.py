"""MULTI/EXEC in one place: :func:`transaction`, optionally fenced by a lease's value.

Every write of ours that must land whole or not at all goes through it:

- the client's intent key (``client/_intents.py``: ``EXISTS``, then ``DEL``/``SADD``/``PEXPIRE``
  from :func:`subscriptions.lease.heartbeat_commands`, and on a single Redis the ``PUBLISH`` on
  ``P:control``), for its own topics and for a snapshot's short-lived intent alike;
- the collector's status flush (``collector/status.py``) and the publisher's pipeline mode
  (``collector/publisher.py``), both **fenced** by the leader's value (``fence=(P:leader,
  value)``, :mod:`subscriptions.lease`): ``WATCH P:leader``, ``GET`` it and refuse with
  :class:`~subscriptions.lease.LeaseLost` unless it still holds exactly that value, then
  ``MULTI`` ... ``EXEC``, which Redis aborts when ``P:leader`` changed in between (a
  :class:`~subscriptions.lease.LeaseLost` too, the ``WatchError`` as its cause). A fenced
  collector therefore writes nothing once another one took over.

Not through it, on purpose: the Lua scripts (the publisher's batches, and on a Redis Cluster the
status flush and every fenced write: one script per node checks that node's fence copy), which
are atomic by themselves; the release of an intent on a Redis Cluster (``DEL`` and ``PUBLISH``
cannot share a transaction there: ``PUBLISH`` has no slot); and
:meth:`client.StreamGroup.ack_in`, which queues an ``XACK`` on the caller's own transaction.

A function of the Redis client it is handed: it opens no connection of its own beyond the
pipeline's, and starts no task.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from upbit_fanout.subscriptions.lease import LeaseLost

__all__ = ["Fence", "Queue", "transaction"]

Fence: TypeAlias = tuple[str | bytes, bytes]
"""``(key, value)``: the transaction runs only while ``key`` holds exactly ``value``."""

Queue: TypeAlias = Callable[[Pipeline], Awaitable[None] | None]
"""Puts the transaction's commands on the pipeline; may await other Redis calls first (on other
connections: the pipeline's own is inside ``MULTI``)."""


async def transaction(redis: Redis, queue: Queue, *, fence: Fence | None = None) -> list[Any]:
    """Run the commands ``queue(pipe)`` puts on a pipeline as one ``MULTI``/``EXEC``; returns
    ``EXEC``'s replies, one per queued command, in order.

    With ``fence=(key, value)``: ``WATCH key`` first and ``GET`` it; unless it holds ``value``
    nothing is queued and :class:`LeaseLost` is raised (``holder``: what the key held, None when
    nobody holds it). ``queue`` runs after that check, and an ``EXEC`` that Redis aborted
    because the key changed raises :class:`LeaseLost` too: nothing of the transaction was
    written.

    Redis errors propagate as redis-py raises them (``RedisError``, ``OSError``): a connection
    lost before ``EXEC`` wrote nothing, one lost after may have written everything; a command
    that fails inside ``EXEC`` raises its ``ResponseError`` while the others were applied
    (Redis has no rollback).
    """
    async with redis.pipeline(transaction=True) as pipe:
        if fence is not None:
            key, value = fence
            await pipe.watch(key)
            holder = await pipe.get(key)
            if holder != value:
                raise LeaseLost(holder if isinstance(holder, bytes) else None)
            pipe.multi()  # type: ignore[no-untyped-call, unused-ignore]
        queued = queue(pipe)
        if inspect.isawaitable(queued):
            await queued
        try:
            return list(await pipe.execute())
        except WatchError as exc:  # the fence changed after the GET: EXEC wrote nothing
            raise LeaseLost() from exc
