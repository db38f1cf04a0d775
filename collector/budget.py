"""The send budget: sliding-window rate limits with a dynamic slow-down, as a pure object.

Upbit allows 5 subscribe messages per second and 100 per minute per connection, and 5 new
connections per second (docs/upbit-protocol.md §6). :class:`RateBudget` answers "how long until
I may send?" for any set of ``(count, seconds)`` limits, with the clock passed in, so it is tested
from tables with no event loop.

*Sliding* windows: at most ``count`` events in ANY ``seconds``-long interval, the strictest reading
of the limits (a sender that passes it passes a fixed-window server too). ``slack`` widens every
window a little so that network jitter cannot make two messages sent ``seconds`` apart arrive
closer together than that at the server.

Dynamic adjustment (the seeds' "rate limiter with dynamic adjustment"): :meth:`RateBudget.penalize`
is called when Upbit answers with a rate-limit error. Each call halves every count (never below
1), down to ``max_level`` halvings; every ``recovery`` seconds without a new penalty one halving
is undone, so the sender slows down at once and recovers step by step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

__all__ = ["RateBudget"]

_MIN_WAIT = 1e-6


class RateBudget:
    """At most ``count`` events in any ``seconds`` window, for each ``(count, seconds)`` limit."""

    __slots__ = (
        "_last_penalty",
        "_level",
        "_limits",
        "_longest",
        "_times",
        "max_level",
        "recovery",
        "slack",
    )

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        *,
        slack: float = 0.0,
        recovery: float = 60.0,
        max_level: int = 3,
    ) -> None:
        for count, seconds in limits:
            if count < 1 or seconds <= 0:
                raise ValueError(
                    f"a limit must have count >= 1 and seconds > 0, got {count}/{seconds}"
                )
        if slack < 0 or recovery <= 0 or max_level < 0:
            raise ValueError("slack must be >= 0, recovery > 0 and max_level >= 0")
        self._limits = tuple((int(count), float(seconds)) for count, seconds in limits)
        self.slack = float(slack)
        self.recovery = float(recovery)
        self.max_level = max_level
        self._longest = max((seconds for _, seconds in self._limits), default=0.0)
        self._times: deque[float] = deque()
        self._level = 0
        self._last_penalty = 0.0

    # -- the dynamic part ----------------------------------------------------------------------
    def level(self, now: float) -> int:
        """How many halvings apply at ``now`` (0: the configured limits)."""
        if self._level == 0:
            return 0
        recovered = int((now - self._last_penalty) // self.recovery)
        return max(0, self._level - recovered)

    def penalize(self, now: float) -> None:
        """The server said "too many requests": halve every limit (once more) from ``now``."""
        self._level = min(self.max_level, self.level(now) + 1)
        self._last_penalty = now

    def limits(self, now: float) -> tuple[tuple[int, float], ...]:
        """The limits in force at ``now`` (the configured ones, halved ``level`` times)."""
        level = self.level(now)
        return tuple((max(1, count >> level), seconds) for count, seconds in self._limits)

    # -- the window part -----------------------------------------------------------------------
    def delay(self, now: float, *, reserve: int = 0) -> float:
        """Seconds to wait from ``now`` before the next event is allowed (0.0: allowed now).

        ``reserve``: the event must leave that many more events allowed in every window (an
        optional message that must not take the place of a necessary one). ``math.inf`` when a
        limit is too small to ever leave them (a halved limit of 1 with ``reserve=1``).
        """
        self._forget(now)
        wait = 0.0
        times = self._times
        for limit, seconds in self.limits(now):
            count = limit - reserve
            if count < 1:
                return math.inf
            if len(times) >= count:
                # The count-th most recent event must have left the window.
                opens_at = times[-count] + seconds + self.slack
                wait = max(wait, opens_at - now)
        # Never a positive delay too small to move a float clock forward.
        return max(wait, _MIN_WAIT) if wait > 0 else 0.0

    def allowed(self, now: float) -> bool:
        return self.delay(now) == 0.0

    def record(self, now: float) -> None:
        """Count one event at ``now`` (call it when the message is actually sent)."""
        self._times.append(now)
        self._forget(now)

    def count_within(self, now: float, seconds: float) -> int:
        """Events recorded in the ``seconds`` before ``now`` (for status and tests)."""
        return sum(1 for t in self._times if t > now - seconds)

    def _forget(self, now: float) -> None:
        times = self._times
        # The very sum ``delay`` computes for the longest window (not ``now - horizon``, which
        # rounds differently): an event is forgotten exactly when it stops counting there.
        longest, slack = self._longest, self.slack
        while times and times[0] + longest + slack <= now:
            times.popleft()
