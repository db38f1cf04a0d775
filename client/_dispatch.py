"""The consumer side of the client: the two bounded buffers, the callbacks and their task.

::

    reader ──▶ stream buffer ───▶ ``async for item in client`` / ``client.batches()``
           └─▶ callback buffer ─▶ dispatcher task (:meth:`Dispatch.run`) ─▶ callbacks

Both buffers are bounded (``queue_size``) with the same ``overflow`` policy
(:mod:`client._buffer`). The reader (``client/_reader.py``) files live events itself, on its hot
path, reading :attr:`Dispatch.stream`, :attr:`~Dispatch.stream_idle`,
:attr:`~Dispatch.has_handlers`, :meth:`~Dispatch.handlers_for` and :attr:`~Dispatch.callbacks`
directly; everything else (a :class:`Gap`, a :class:`Notice`, a refreshed value, what it had to
hold back) goes through :meth:`Dispatch.deliver`, which waits for room under ``block``.

While the client has event callbacks and nobody has started iterating, the stream buffer only
keeps the latest ``queue_size`` items and never makes the reader wait (:attr:`stream_idle`): a
callbacks-only program cannot stall on a buffer nobody reads, and one that starts iterating
later still gets recent items.

The dispatcher runs the callbacks registered with ``on``, ``on_gap`` and ``on_notice`` one item
at a time, in order; one that raises is logged (the first ones with a traceback) and counted in
:attr:`Dispatch.callback_errors`, and the dispatcher goes on.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, TypeAlias

from upbit_fanout.client._buffer import Buffer, Overflow
from upbit_fanout.client._items import Event, Gap, Item, Notice
from upbit_fanout.client._log import log
from upbit_fanout.subscriptions.topics import Topic, parse_topic

__all__ = ["Dispatch", "EventCallback", "GapCallback", "NoticeCallback"]

EventCallback: TypeAlias = Callable[[Event], Awaitable[None] | None]
GapCallback: TypeAlias = Callable[[Gap], Awaitable[None] | None]
NoticeCallback: TypeAlias = Callable[[Notice], Awaitable[None] | None]

_GLOB_CHARS: Final = frozenset("*?[")
_LOGGED_CALLBACK_ERRORS: Final = 10


@dataclass(frozen=True, slots=True, eq=False)
class _Handler:
    pattern: str
    glob: bool
    callback: EventCallback


class Dispatch:
    """The buffers between the reader and the consumer, and the callbacks."""

    def __init__(
        self,
        queue_size: int,
        overflow: Overflow,
        topics: Mapping[str, Topic],
        *,
        notices: bool,
    ) -> None:
        self.stream: Buffer[Item] = Buffer(queue_size, overflow)  # validates both
        """What ``async for`` and ``batches()`` read."""
        self.callbacks: Buffer[Item] = Buffer(queue_size, overflow)
        """What the dispatcher task hands to the callbacks."""
        self.notices_wanted = notices
        """``notices=True``: notices go to the stream too."""
        self.stream_idle = False
        """Callbacks and no iteration yet: the stream keeps the latest items, never blocks."""
        self.has_handlers = False
        """At least one event callback."""
        self.waiting = False
        """:meth:`deliver` is waiting for room (the reader is busy, not dead)."""
        self.callback_errors = 0
        """Callbacks that raised (each is logged; the first ones with a traceback)."""
        self.gap_handlers: list[GapCallback] = []
        self.notice_handlers: list[NoticeCallback] = []
        self._topics = topics  # the client's: an event of a topic it gave up is not called back
        self._handlers: list[_Handler] = []
        self._handler_cache: dict[str, tuple[EventCallback, ...]] = {}
        self._stream_started = False

    @property
    def dropped(self) -> int:
        """Items discarded by ``drop_oldest``, summed over both buffers."""
        return self.stream.dropped + self.callbacks.dropped

    def close(self) -> None:
        """Wake every waiter of both buffers; nothing more is added."""
        self.stream.close()
        self.callbacks.close()

    def start_stream(self) -> None:
        """Somebody iterates: the stream buffer holds items for them under the policy."""
        self._stream_started = True
        self._update_feed()

    # -- registration -------------------------------------------------------------------------
    def on(self, pattern: str, callback: EventCallback) -> Callable[[], None]:
        """:meth:`client.FanoutClient.on`."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        glob = any(ch in _GLOB_CHARS for ch in pattern)
        if not glob:
            pattern = str(parse_topic(pattern))
        handler = _Handler(pattern, glob, callback)
        self._handlers.append(handler)
        self._handlers_changed()

        def remove() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)
                self._handlers_changed()

        return remove

    def on_gap(self, callback: GapCallback) -> Callable[[], None]:
        self.gap_handlers.append(callback)
        return lambda: _remove(self.gap_handlers, callback)

    def on_notice(self, callback: NoticeCallback) -> Callable[[], None]:
        self.notice_handlers.append(callback)
        return lambda: _remove(self.notice_handlers, callback)

    def _handlers_changed(self) -> None:
        self._handler_cache.clear()
        self.has_handlers = bool(self._handlers)
        self._update_feed()

    def _update_feed(self) -> None:
        self.stream_idle = bool(self._handlers) and not self._stream_started

    def handlers_for(self, topic: str) -> tuple[EventCallback, ...]:
        """The event callbacks whose pattern matches ``topic`` (cached per topic)."""
        found = self._handler_cache.get(topic)
        if found is None:
            found = tuple(
                handler.callback
                for handler in self._handlers
                if (
                    fnmatchcase(topic, handler.pattern)
                    if handler.glob
                    else topic == handler.pattern
                )
            )
            self._handler_cache[topic] = found
        return found

    # -- delivery (off the hot path) ----------------------------------------------------------
    async def deliver(self, item: Item) -> None:
        """Deliver a gap, a notice or a refreshed event to whoever wants it, waiting for room."""
        if isinstance(item, Notice):
            to_stream = self.notices_wanted
            to_callbacks = bool(self.notice_handlers)
        elif isinstance(item, Gap):
            to_stream = True
            to_callbacks = bool(self.gap_handlers)
        else:
            to_stream = True
            to_callbacks = bool(self.handlers_for(item.topic))
        if to_stream and not self._offer_stream(item):
            await self._put_waiting(self.stream, item)
        if to_callbacks and not self.callbacks.offer(item):
            await self._put_waiting(self.callbacks, item)

    async def deliver_event(self, event: Event, *, to_stream: bool) -> None:
        """A live event the reader held back (a full buffer): the stream (unless it went there
        already) and its callbacks, waiting for room."""
        if to_stream and not self._offer_stream(event):
            await self._put_waiting(self.stream, event)
        if self.has_handlers and self.handlers_for(event.topic) and not self.callbacks.offer(event):
            await self._put_waiting(self.callbacks, event)

    def _offer_stream(self, item: Item) -> bool:
        if self.stream_idle:
            self.stream.push_dropping(item)
            return True
        return self.stream.offer(item)

    async def _put_waiting(self, buffer: Buffer[Item], item: Item) -> None:
        waiting, self.waiting = self.waiting, True
        try:
            await buffer.put(item)
        finally:
            self.waiting = waiting

    # -- the dispatcher task ------------------------------------------------------------------
    async def run(self) -> None:
        """Run the callbacks, one item at a time, in order, until the buffer is closed."""
        buffer = self.callbacks
        while True:
            item = buffer.pop()
            if item is None:
                if buffer.closed:
                    return  # the client closed or failed
                await buffer.wait()
                continue
            if isinstance(item, Event):
                if item.topic in self._topics:
                    for callback in self.handlers_for(item.topic):
                        await self._call(callback, item)
            elif isinstance(item, Gap):
                for gap_callback in tuple(self.gap_handlers):
                    await self._call(gap_callback, item)
            else:
                for notice_callback in tuple(self.notice_handlers):
                    await self._call(notice_callback, item)

    async def _call(self, callback: Callable[[Any], Awaitable[None] | None], item: Item) -> None:
        try:
            result = callback(item)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.callback_errors += 1
            count = self.callback_errors
            name = getattr(callback, "__qualname__", repr(callback))
            if count <= _LOGGED_CALLBACK_ERRORS:
                log.exception("callback %s failed on %r", name, item)
            elif count % 1000 == 0:
                log.error("callback %s failed on %r (%d callback errors so far)", name, item, count)


def _remove(items: list[Any], item: Any) -> None:
    if item in items:
        items.remove(item)
