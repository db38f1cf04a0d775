"""Read coalescing: rest a busy socket's reading for a moment, so one wake-up reads many events.

At a few thousand events per second spread over time, every event arrives in a socket read of its
own, and every read costs a whole event-loop wake-up (the ``epoll`` return, the read, the
callbacks, the task it wakes): on a small VM that wake-up, not the event, is most of a process's
CPU (``bench/consumer_cost.py``, the ``floor`` rows). :class:`ReadCoalescer` trades a bounded
delay for fewer wake-ups, as a network card's interrupt moderation does:

- a **small** read (fewer than :data:`SMALL_READ` messages) that comes **less than half an
  interval** after the previous one means the stream is busy with small writes: reading is paused
  for one ``interval`` (``pause``), then resumed (``resume``) by a timer, and the next read takes
  whatever arrived meanwhile, in one go;
- the read that ends a rest rests again when it brought at least **twice as many messages** as
  the read that began the resting: the stream still writes more than once per interval, so the
  next rest saves wake-ups too; with fewer it stops resting (the stream slowed down, or writes
  many messages at once, which a rest does not merge);
- a read after a longer quiet is handed over at once and rests nothing: a lone event, or a
  stream whose reads come less often than twice per interval, never waits;
- a read that already brought many messages rests nothing either: its wake-up is spread thin.

Why half: a rest costs about one wake-up itself (the timer; and pausing and resuming the socket
are system calls), so it pays only when at least two reads would have happened during it. A
stream of one write per interval (5,000 events/s in writes of 5, with 1 ms) would only pay more.
Why not judge the read that ends a rest by the clock as well: it always comes an interval
after the one before it, so a busy stream would rest only after every other read, and each
cycle would pay two reads and a timer for what one read and a timer take (at 5,000 events/s one
per write with 1 ms: about a fifth more CPU per event, ``bench/consumer_cost.py``). Why not
after big reads: at 50,000 events/s in writes of 50, reads come about 1 ms apart but unevenly (a
writer catching up sends two at once); resting there doubled the messages per read and still
cost 10-15 % more CPU per event than not resting (``bench/consumer_cost.py``), the rests' own
timer and system calls outweighing the few wake-ups saved.

So no event waits longer than ``interval`` for being coalesced, and a quiet stream pays nothing.
``interval`` 0 turns it off (the default everywhere). The owner of the socket may pause reading
for reasons of its own (backpressure, a drain in chunks): ``held`` says so, and the timer then
leaves the socket paused, and the owner must not resume it while :attr:`ReadCoalescer.resting`.

The timer is the event loop's (``call_later``): uvloop's timers count whole milliseconds (a delay
is rounded), so there an interval below 0.5 ms rests for no time at all and 1.4 ms rests 1 ms.
This module only schedules that callback on the caller's loop; it opens nothing, runs no task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_READ_COALESCE", "SMALL_READ", "ReadCoalescer", "check_interval"]

MAX_READ_COALESCE: Final = 0.1
"""The longest rest allowed (s): coalescing is for wake-ups, not for batching by the second."""

SMALL_READ: Final = 16
"""A read of fewer messages than this may rest; a bigger one already spreads its wake-up thin."""


def check_interval(interval: float, name: str = "read_coalesce") -> float:
    """``interval`` as a float, or ``ValueError`` naming the setting when it is out of range."""
    value = float(interval)
    if not 0.0 <= value <= MAX_READ_COALESCE:  # NaN fails both comparisons
        raise ValueError(
            f"{name} must be between 0 (off) and {MAX_READ_COALESCE} s, not {interval!r}"
        )
    return value


class ReadCoalescer:
    """Decides, after every read of one socket, whether its reading rests (see the module)."""

    __slots__ = (
        "_began",
        "_held",
        "_last",
        "_loop",
        "_pause",
        "_resume",
        "_timer",
        "_window",
        "interval",
        "rests",
    )

    def __init__(
        self,
        interval: float,
        pause: Callable[[], object],
        resume: Callable[[], object],
        *,
        held: Callable[[], bool] = lambda: False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.interval = check_interval(interval)
        self._window = self.interval / 2
        self._pause = pause
        self._resume = resume
        self._held = held
        self._loop = loop
        self._last = -1e18  # monotonic time of the previous read
        self._began = 0  # messages of the read that began the resting; 0: not resting since
        self._timer: asyncio.Handle | None = None  # uvloop: a plain Handle for 0 ms
        self.rests = 0
        """How many times reading rested (for tests and metrics)."""

    @property
    def resting(self) -> bool:
        """True while reading is paused by this coalescer (the owner must not resume it)."""
        return self._timer is not None

    def after_read(self, messages: int = 1) -> None:
        """Call once per socket read, after its ``messages`` were handed over (a read that
        handed over none, a partial message or a pong, does not count)."""
        interval = self.interval
        if not interval or messages <= 0:
            return
        now = time.monotonic()
        began = self._began
        if began and self._timer is None:  # the read that ends a rest
            busy = messages >= 2 * began
            self._began = 0
        else:
            busy = now - self._last < self._window
            began = messages
        self._last = now
        if not busy or messages >= SMALL_READ or self._timer is not None or self._held():
            return
        self._began = began
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._pause()
        self._timer = loop.call_later(interval, self._wake)
        self.rests += 1

    def _wake(self) -> None:
        self._timer = None
        if not self._held():
            self._resume()

    def cancel(self) -> None:
        """Forget a pending rest without resuming (the socket is closing or closed)."""
        timer, self._timer = self._timer, None
        self._began = 0
        if timer is not None:
            timer.cancel()
