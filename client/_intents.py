"""The intent side of the client: its key ``P:intents:{client_id}`` and the lease on it.

:class:`IntentKey` writes the key (:func:`write_intent`), renews its lease on a task of its own
(:meth:`IntentKey.heartbeat`, every third of the lease, independent of the consumer: a slow
consumer never loses the lease), re-asserts it after a reconnect and gives it back on close
(:func:`release_intent`). :class:`client.FanoutClient` decides what the key holds (its topics)
and calls it under :attr:`IntentKey.lock`; the reader (``client/_reader.py``) calls
:meth:`IntentKey.reassert` when it is back after an outage.

The commands come from :mod:`subscriptions.lease` (the contract: ``SADD`` + ``PEXPIRE``, with a
``DEL`` first to replace the set), the ``MULTI``/``EXEC`` from
:func:`subscriptions.transactions.transaction`. A snapshot's short-lived intent
(``client/_snapshot.py``) is written and released by the same two functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from upbit_fanout.client._log import log
from upbit_fanout.subscriptions.connection import REDIS_FAILURES, cluster_of
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import heartbeat_commands, release_commands
from upbit_fanout.subscriptions.topics import Topic
from upbit_fanout.subscriptions.transactions import transaction

__all__ = ["RELEASE_TIMEOUT", "IntentKey", "release_intent", "write_intent"]

RELEASE_TIMEOUT: Final = 2.0
"""Seconds a release may take on close; after that the key expires with its lease."""


async def write_intent(
    redis: Redis,
    keys: Keys,
    client_id: str,
    topics: Iterable[str],
    lease_seconds: float,
    *,
    replace: bool = False,
    control: bool = True,
) -> bool:
    """Make ``P:intents:{client_id}`` hold ``topics`` with a fresh lease, in one transaction
    (``EXISTS``, then :func:`subscriptions.lease.heartbeat_commands`), and with ``control`` tell
    the collector on ``P:control``: inside the transaction on a single Redis, right after it on
    a Redis Cluster (a cluster transaction stays in the key's slot). Returns whether the key
    existed before. Redis errors propagate."""
    key = keys.intents(client_id)
    commands = heartbeat_commands(keys, client_id, topics, lease_seconds, replace=replace)
    cluster = cluster_of(redis) is not None

    def queue(pipe: Pipeline) -> None:
        pipe.execute_command("EXISTS", key)
        for command in commands:
            pipe.execute_command(*command)
        if control and not cluster:
            pipe.execute_command("PUBLISH", keys.control, client_id)

    replies = await transaction(redis, queue)
    if control and cluster:
        await redis.publish(keys.control, client_id)
    return bool(replies[0])


async def release_intent(redis: Redis, keys: Keys, client_id: str) -> None:
    """Give the lease back at once (``DEL``) and tell the collector: one transaction on a single
    Redis; one round trip without ``MULTI`` on a Redis Cluster, where ``PUBLISH`` has no slot.
    Redis errors propagate."""
    commands = release_commands(keys, client_id)

    def queue(pipe: Pipeline) -> None:
        for command in commands:
            pipe.execute_command(*command)

    if cluster_of(redis) is None:
        await transaction(redis, queue)
        return
    async with redis.pipeline(transaction=False) as pipe:
        queue(pipe)
        await pipe.execute()


class IntentKey:
    """The client's intent key: written under :attr:`lock`, renewed by :meth:`heartbeat`.

    ``topics`` is the client's own mapping of the topics it holds (shared, read here: the client
    adds and removes under the lock); every write makes the key hold exactly those.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        client_id: str,
        lease_seconds: float,
        topics: Mapping[str, Topic],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._client_id = client_id
        self._lease = lease_seconds
        self._topics = topics
        self.lock = asyncio.Lock()
        """Held by whoever changes the topics and writes the key (subscribe, the heartbeat)."""
        self.dirty = False
        """A write failed: the next one replaces the whole set (``DEL`` first)."""
        self.ever_wrote = False
        self._asserted = False  # the last write left the key holding topics

    async def write(self, *, replace: bool, control: bool) -> tuple[bool, bool]:
        """Write the key (the caller holds :attr:`lock`). Returns ``(existed, expected)``: whether
        the key existed before, and whether the previous write left it holding topics."""
        names = list(self._topics)
        existed = await write_intent(
            self._redis,
            self._keys,
            self._client_id,
            names,
            self._lease,
            replace=replace,
            control=control,
        )
        expected = self._asserted
        self._asserted = bool(names)
        self.ever_wrote = True
        self.dirty = False
        return existed, expected

    async def reassert(self) -> None:
        """After a reconnect: the whole set again (``DEL`` first), and the collector told."""
        async with self.lock:
            await self.write(replace=True, control=True)

    async def heartbeat(self) -> None:
        """The heartbeat task: renew the lease every third of it, re-asserting every member (a
        Redis restart that lost the key is repaired by the next beat). A beat that finds the
        key gone tells the collector; failures are retried every second, logged once."""
        interval = self._lease / 3
        delay = interval
        failing = False
        while True:
            await asyncio.sleep(delay)
            if not self._topics and not self.dirty:
                delay = interval
                continue
            try:
                async with self.lock:
                    existed, expected = await self.write(replace=self.dirty, control=False)
                    if expected and not existed:
                        log.warning(
                            "the intent key of client %s had expired (Redis restarted, or this "
                            "process was stalled past its %.0f s lease); re-asserted it",
                            self._client_id,
                            self._lease,
                        )
                        await self._redis.publish(self._keys.control, self._client_id)
            except REDIS_FAILURES as exc:
                if not failing:
                    log.warning(
                        "heartbeat of client %s failed (%s); retrying", self._client_id, exc
                    )
                failing = True
                delay = min(interval, 1.0)
                continue
            if failing:
                log.info("heartbeat of client %s works again", self._client_id)
                failing = False
            delay = interval

    async def release(self) -> None:
        """On close: delete the key and tell the collector, within :data:`RELEASE_TIMEOUT`; a
        failure is logged (the key then expires with its lease)."""
        if not self.ever_wrote:
            return
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await release_intent(self._redis, self._keys, self._client_id)
        except (*REDIS_FAILURES, TimeoutError) as exc:
            log.warning(
                "could not release the intents of client %s (%s); they expire with the lease "
                "within %.0f s",
                self._client_id,
                exc,
                self._lease,
            )
