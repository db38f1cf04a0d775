"""A bounded buffer between the Redis reader and a consumer, with a stated overflow policy.

``"block"``
    When full, :meth:`Buffer.put` waits for room: the reader stops reading Redis. Nothing is
    lost inside the client; if the consumer stays behind long enough, Redis's own output buffer
    for the subscriber fills (``client-output-buffer-limit pubsub``, 32 MB hard / 8 MB for 60 s
    by default) and Redis closes the connection: the client reconnects and reports a Gap.
``"drop_oldest"``
    When full, the oldest item is discarded to make room and counted in :attr:`Buffer.dropped`;
    the reader never waits.

Either way the buffer never holds more than ``maxsize`` items. It is a deque with at most one
waiting getter and a list of waiting putters, cheaper than :class:`asyncio.Queue` on the hot path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, Generic, Literal, TypeVar

__all__ = ["OVERFLOW_POLICIES", "Buffer", "Overflow"]

Overflow = Literal["block", "drop_oldest"]
OVERFLOW_POLICIES: Final[tuple[Overflow, ...]] = ("block", "drop_oldest")

T = TypeVar("T")


class Buffer(Generic[T]):
    """Bounded FIFO; one consumer (``pop``/``wait``), one producer (``offer``/``put``)."""

    __slots__ = ("_closed", "_drop", "_getter", "_items", "_maxsize", "_putters", "dropped")

    def __init__(self, maxsize: int, overflow: Overflow) -> None:
        if maxsize < 1:
            raise ValueError(f"queue_size must be at least 1, got {maxsize}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be 'block' or 'drop_oldest', not {overflow!r}")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._drop = overflow == "drop_oldest"
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def offer(self, item: T) -> bool:
        """Add ``item`` if there is room (always, under ``drop_oldest``); False if full."""
        items = self._items
        if len(items) >= self._maxsize:
            if not self._drop:
                return False
            items.popleft()
            self.dropped += 1
        items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    def push_dropping(self, item: T) -> None:
        """Add ``item``, discarding the oldest when full, whatever the policy; not counted
        (used for a stream nobody reads yet)."""
        items = self._items
        if len(items) >= self._maxsize:
            items.popleft()
        items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, item: T) -> None:
        """Add ``item``, waiting for room under ``block``. Dropped silently once closed."""
        while not self.offer(item):
            if self._closed:
                return
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            finally:
                if putter in self._putters:
                    self._putters.remove(putter)

    def pop(self) -> T | None:
        """The oldest item, or None when empty (items are never None)."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters:
            self._wake_putter()
        return item

    def pop_many(self, limit: int) -> list[T]:
        """Up to ``limit`` of the oldest items (possibly none)."""
        items = self._items
        count = min(limit, len(items))
        batch = [items.popleft() for _ in range(count)]
        if batch and self._putters:
            self._wake_putter()
        return batch

    async def wait(self) -> None:
        """Return when an item is available or the buffer is closed."""
        if self._items or self._closed:
            return
        getter = asyncio.get_running_loop().create_future()
        self._getter = getter
        try:
            await getter
        finally:
            if self._getter is getter:
                self._getter = None

    def waiter(self) -> asyncio.Future[None]:
        """A future done when an item is available or the buffer is closed (the consumer's hot
        path: one coroutine frame less than :meth:`wait`). Call only when :meth:`pop` returned
        None; cancelling it is fine (``offer`` skips a done getter)."""
        getter = asyncio.get_running_loop().create_future()
        if self._closed:
            getter.set_result(None)
        else:
            self._getter = getter
        return getter

    def close(self) -> None:
        """Wake every waiter; later ``put`` calls return at once without adding."""
        self._closed = True
        getter, self._getter = self._getter, None
        if getter is not None and not getter.done():
            getter.set_result(None)
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)

    def clear(self) -> None:
        self._items.clear()
        while self._putters:
            self._wake_putter()

    def _wake_putter(self) -> None:
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                return
