"""The client's pub/sub link on a Redis Cluster: SSUBSCRIBE on the node owning each channel.

The same interface as every link (:class:`client._link.Link`: ``open``, ``send``, ``replaced``,
``channels``, ``close``; ``run``, ``pause`` and ``resume`` come from :class:`client._link.ReadLoop`
over its ``reader``), so :class:`client.FanoutClient` does not care which it holds. Underneath:

- event channels are sharded channels (the collector ``SPUBLISH``\\ es them,
  docs/contract.md "Redis Cluster"): each is ``SSUBSCRIBE``\\ d, one command per channel (one
  command's channels must share a slot), on a connection to the primary owning its slot, from the
  cluster client's slot map (refreshed when the link opens);
- ``P:notices`` stays a classic channel (a cluster delivers it on every node): it is
  ``SUBSCRIBE``\\ d on the first node's connection;
- one reader task per node feeds one bounded queue (1,000 messages; a full queue blocks the
  readers, so back pressure reaches the sockets as on a single connection); ``smessage``
  becomes ``message``, so the client's reader sees the same shapes;
- a broken node connection, or a ``sunsubscribe`` the server sends by itself (the slot moved to
  another node: a resharding or a failover), raises ``ConnectionError`` from the reader, and the
  client reconnects, re-reads the slot map and reports a Gap, as after any Redis outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from upbit_fanout.client._link import ReadLoop
from upbit_fanout.subscriptions.connection import (
    REDIS_FAILURES,
    channel_node,
    node_client,
    refresh_slots,
)
from upbit_fanout.subscriptions.tasks import stop_tasks

__all__ = ["ClusterLink"]

_QUEUE_SIZE = 1000
_STOP_WITHIN = 5.0  # seconds a closing node reader is given
_SMESSAGE = b"smessage"
_MESSAGE = b"message"
_SUNSUBSCRIBE = b"sunsubscribe"


class _Node:
    """One plain connection to one primary."""

    def __init__(self, redis: Redis, address: tuple[str, int]) -> None:
        self.address = address
        self.client = node_client(redis, *address)
        self.pubsub = self.client.pubsub()
        self.conn: AbstractConnection | None = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> AbstractConnection:
        await self.pubsub.connect()  # type: ignore[no-untyped-call, unused-ignore]
        self.conn = cast(AbstractConnection, self.pubsub.connection)
        return self.conn

    async def send(self, *args: str | bytes | int) -> None:
        conn = self.conn
        if conn is None or not conn.is_connected:
            raise RedisConnectionError(f"connection to {self.address[0]}:{self.address[1]} is down")
        await conn.send_command(*args, check_health=False)

    async def close(self) -> None:
        if self.task is not None:
            await stop_tasks([self.task], within=_STOP_WITHIN)
            if self.task.done() and not self.task.cancelled():
                self.task.exception()  # a reader that died of a Redis error: already reported
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


class ClusterLink(ReadLoop):
    """Subscribed connections to the primaries that own the client's channels."""

    def __init__(self, redis: Redis, classic: Iterable[str]) -> None:
        self._redis = redis
        self._classic = frozenset(classic)
        """Channels that stay classic (``P:notices``): subscribed on one node."""
        self._nodes: dict[tuple[str, int], _Node] = {}
        self._home: tuple[str, int] | None = None
        self._queue: asyncio.Queue[list[Any] | BaseException] = asyncio.Queue(_QUEUE_SIZE)
        self._lock = asyncio.Lock()  # one (un)subscription at a time: a node connects once
        self.channels: frozenset[str] = frozenset()
        self.replaced = False  # connections are our own; a break raises instead

    async def open(self, channels: Iterable[str]) -> None:
        names = list(channels)
        if not names:
            raise ValueError("a pub/sub link needs at least one channel")
        await refresh_slots(self._redis)
        async with self._lock:
            await self._subscribe(names)
        self.channels = frozenset(names)

    async def _node(self, address: tuple[str, int]) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            node = _Node(self._redis, address)
            try:
                await node.connect()
            except BaseException:
                await node.close()
                raise
            node.task = asyncio.create_task(self._read(node))
            self._nodes[address] = node
        return node

    async def _subscribe(self, names: list[str], *, undo: bool = False) -> None:
        for name in names:
            if name in self._classic:
                if self._home is None:
                    self._home = channel_node(self._redis, name)
                node = await self._node(self._home)
                await node.send("UNSUBSCRIBE" if undo else "SUBSCRIBE", name)
            else:
                node = await self._node(channel_node(self._redis, name))
                await node.send("SUNSUBSCRIBE" if undo else "SSUBSCRIBE", name)

    async def send(self, *args: str | bytes | int) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (of any channels) or PING (every node)."""
        command = str(args[0]).upper()
        names = [a.decode() if isinstance(a, bytes) else str(a) for a in args[1:]]
        async with self._lock:
            if command == "PING":
                for node in list(self._nodes.values()):
                    await node.send("PING")
            elif command == "SUBSCRIBE":
                await self._subscribe(names)
                self.channels |= frozenset(names)
            elif command == "UNSUBSCRIBE":
                self.channels -= frozenset(names)  # first: the confirmation is no slot move
                await self._subscribe(names, undo=True)
            else:
                raise ValueError(
                    f"a cluster link sends SUBSCRIBE, UNSUBSCRIBE or PING, not {command}"
                )

    async def _read(self, node: _Node) -> None:
        conn = node.conn
        assert conn is not None
        put = self._queue.put
        try:
            while True:
                msg = await conn.read_response(
                    disable_decoding=True,
                    timeout=math.inf,
                    disconnect_on_error=False,
                    push_request=True,
                )
                if isinstance(msg, list) and msg:
                    kind = msg[0]
                    if kind == _SMESSAGE:
                        msg[0] = _MESSAGE
                    elif kind == _SUNSUBSCRIBE and msg[1].decode() in self.channels:
                        # Sent by the server itself: the channel's slot moved elsewhere.
                        raise RedisConnectionError(
                            f"the cluster moved the slot of {msg[1].decode()}; resubscribing"
                        )
                await put(msg)
        except REDIS_FAILURES as exc:
            await put(exc)

    async def read(self, wait: float | None = None) -> Any:
        return await self._next(timeout=math.inf if wait is None else wait)

    async def _next(self, **options: Any) -> Any:
        """A message from any node (the signature of ``read_response``, for the pump)."""
        timeout = options.get("timeout", math.inf)
        if timeout is None or math.isinf(timeout):
            item = await self._queue.get()
        else:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
        if isinstance(item, BaseException):
            raise item
        return item

    @property
    def reader(self) -> Any:
        return self._next

    async def close(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()
