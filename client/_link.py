"""One pub/sub connection, driven by hand.

The connection comes from ``redis.pubsub()`` of the client's own ``Redis`` (so TLS, ACL users
and Sentinel-managed pools work as configured), but commands are sent and replies read on the
connection directly, for three reasons:

- speed: ``PubSub.get_message(timeout=...)`` costs a timer and several layers per message;
  a blocking ``read_response`` keeps up with far more than 50,000 messages/s;
- bytes: replies are read with ``disable_decoding=True``, so payloads stay bytes even when the
  given client was made with ``decode_responses=True`` (msgpack payloads are not UTF-8);
- honesty: redis-py's retry layer would silently reconnect and resubscribe, losing messages
  without a word. Here a broken connection raises, and the owner reconnects and reports a Gap.
  A reconnect done underneath anyway (by redis-py code we call) is noticed through a connect
  callback and treated as a break (:attr:`PubSubLink.replaced`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["PubSubLink"]


async def _passthrough(response: Any) -> Any:
    return response


class PubSubLink:
    """A subscribed connection: :meth:`open`, :meth:`send`, :meth:`read`, :meth:`close`."""

    def __init__(self, redis: Redis) -> None:
        # A handler of our own for RESP3/hiredis push replies: redis-py's default one formats
        # every message into a debug log string, a measurable cost per message.
        self._pubsub: PubSub = redis.pubsub(push_handler_func=_passthrough)
        self._conn: AbstractConnection | None = None
        self._connects = 0
        self.channels: frozenset[str] = frozenset()
        """The channels subscribed by :meth:`open`."""

    @property
    def replaced(self) -> bool:
        """True once the connection was re-established underneath us (subscriptions lost)."""
        return self._connects > 0

    async def open(self, channels: Iterable[str]) -> None:
        """Connect and send SUBSCRIBE for ``channels`` (at least one)."""
        names = list(channels)
        if not names:
            raise ValueError("a pub/sub link needs at least one channel")
        await self._pubsub.connect()  # type: ignore[no-untyped-call, unused-ignore]
        # redis-py types PubSub.connection as None (its initial value); connect() set it.
        conn = cast(AbstractConnection, self._pubsub.connection)
        conn.register_connect_callback(self._on_connect)  # type: ignore[no-untyped-call, unused-ignore]
        self._conn = conn
        await conn.send_command("SUBSCRIBE", *names, check_health=False)
        self.channels = frozenset(names)

    def _on_connect(self, connection: AbstractConnection) -> None:
        # Registered after the first connect: any call means a reconnect behind our back.
        self._connects += 1

    async def send(self, *args: str | bytes | int) -> None:
        """Send a command (SUBSCRIBE, UNSUBSCRIBE, PING) without waiting for its reply."""
        conn = self._conn
        if conn is None or not conn.is_connected or self.replaced:
            raise RedisConnectionError("pub/sub connection is down")
        await conn.send_command(*args, check_health=False)

    async def read(self, wait: float | None = None) -> Any:
        """The next reply or message as a list of bytes (``[b"message", channel, data]``).

        Blocks until something arrives (``wait=None``), or returns None after ``wait``
        seconds. Raises redis-py's ConnectionError when the connection breaks.
        """
        conn = self._conn
        if conn is None:
            raise RedisConnectionError("pub/sub connection is not open")
        return await conn.read_response(
            disable_decoding=True,
            timeout=math.inf if wait is None else wait,
            disconnect_on_error=False,
            push_request=True,
        )

    @property
    def reader(self) -> Any:
        """The bound blocking read (hot path: one attribute lookup less per message)."""
        conn = self._conn
        if conn is None:
            raise RedisConnectionError("pub/sub connection is not open")
        return conn.read_response

    async def close(self) -> None:
        """Drop the connection (never waits on a dead peer) and give it back to the pool."""
        conn = self._conn
        if conn is not None:
            conn.deregister_connect_callback(self._on_connect)  # type: ignore[no-untyped-call, unused-ignore]
        await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
