"""The bounded queue between the WebSocket readers and the Redis publisher.

Policy (a bounded queue): the queue holds at most ``maxsize`` items. When it is full (Redis slow or
down) the OLDEST items are dropped to make room and counted: for live market data the newest
event is worth more than an old one, and the reader must never block (a blocked reader would stop
answering pings and lose the Upbit connection). The publisher takes everything available at once
(:meth:`Outbox.get_batch`) so one Redis round trip carries a whole batch. After a drop the
service publishes a ``gap`` notice as soon as Redis accepts again (see :meth:`take_dropped`).

One consumer (the publisher task); any number of producers on the same event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["Outbox"]

T = TypeVar("T")


class Outbox(Generic[T]):
    """A drop-oldest bounded FIFO with batch reads."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self.dropped_total = 0
        """Items dropped since creation (for the status hash)."""
        self._dropped_pending = 0
        self.dropping_since: float | None = None
        """``time.time()`` of the first drop not yet taken by :meth:`take_dropped`."""

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Iterable[T]) -> int:
        """Append ``items``; drop the oldest ones beyond ``maxsize``; return how many dropped."""
        self._items.extend(items)
        return self._trim()

    def put_front(self, items: list[T]) -> int:
        """Put a batch that could not be published back in front (still bounded: the oldest of
        everything goes first); return how many items were dropped."""
        self._items.extendleft(reversed(items))
        return self._trim()

    def _trim(self) -> int:
        """Drop the oldest items beyond ``maxsize`` (counted), wake the reader; return how many."""
        queue = self._items
        dropped = 0
        while len(queue) > self.maxsize:
            queue.popleft()
            dropped += 1
        if dropped:
            if not self._dropped_pending:
                self.dropping_since = time.time()
            self.dropped_total += dropped
            self._dropped_pending += dropped
        if queue:
            self._ready.set()
        return dropped

    async def get_batch(self, limit: int | None = None) -> list[T]:
        """Wait for at least one item, then take every available one (at most ``limit``)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        queue = self._items
        if limit is None or limit >= len(queue):
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(limit)]
        if not queue:
            self._ready.clear()
        return batch

    def discard(self) -> int:
        """Drop everything queued (the lease was lost: nothing queued may be published); return
        how many items went. Not counted in :attr:`dropped_total`: the caller counts them."""
        count = len(self._items)
        self._items.clear()
        self._ready.clear()
        return count

    def take_dropped(self) -> int:
        """Items dropped since the last call (the service reports them in a ``gap`` notice)."""
        dropped, self._dropped_pending = self._dropped_pending, 0
        return dropped
