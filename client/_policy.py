"""The client's connection policy, as pure objects with the time passed in.

:class:`Liveness` decides, once per health interval, whether the pub/sub connection is alive:
anything received (or the reader busy handing items to a slow consumer) proves it; a quiet
interval earns a ``PING``; a second quiet interval after the ``PING`` means the connection is
dead (a silent network cut). Quiet channels are normal: silence alone never kills a connection,
only an unanswered ``PING`` does.

:class:`Outage` decides what a failed reconnect does: retry after a capped, jittered backoff
(:func:`upbit_fanout.subscriptions.backoff.backoff`), reported on the first attempt and every
tenth after it, or give up once the outage lasted longer than ``max_outage``.

The client's reader (``client/_reader.py``) performs what they answer; they are tested from tables
in ``tests/client/test_policy.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from upbit_fanout.subscriptions.backoff import backoff

__all__ = ["FIRST_DELAY", "GiveUp", "Liveness", "Outage", "Retry"]

FIRST_DELAY: Final = 0.05
"""The backoff's first bound, seconds: the first reconnect is almost immediate."""

_REPORT_EVERY: Final = 10  # a failing reconnect is logged on attempts 1, 10, 20 ...


class Liveness:
    """Whether the connection is alive, judged once per health interval."""

    __slots__ = ("_last", "_pinged")

    def __init__(self, received: int) -> None:
        self._last = received
        self._pinged = False

    def tick(self, received: int, *, busy: bool) -> Literal["alive", "ping", "dead"]:
        """One interval passed; ``received``: the count of replies so far; ``busy``: the reader
        waits for the consumer (it reads nothing, and that proves nothing about the link)."""
        if received != self._last or busy:
            self._last = received
            self._pinged = False
            return "alive"
        if self._pinged:
            return "dead"
        self._pinged = True
        return "ping"


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``delay`` s; ``report``: log this attempt (the ``attempt``-th)."""

    delay: float
    attempt: int
    report: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The outage lasted ``waited`` s, longer than ``max_outage``."""

    waited: float


class Outage:
    """Reconnect decisions from the moment a connection was lost."""

    __slots__ = ("_attempts", "_delays", "_rng", "_since", "max_delay", "max_outage")

    def __init__(
        self,
        now: float,
        *,
        max_outage: float | None,
        max_delay: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.max_outage = max_outage
        self.max_delay = max_delay
        self._rng = rng
        self.lost(now)

    def lost(self, now: float) -> None:
        """The connection was lost at ``now``: a new outage, a new backoff."""
        self._since = now
        self._delays = backoff(FIRST_DELAY, self.max_delay, rng=self._rng)
        self._attempts = 0

    def attempt_failed(self, now: float) -> Retry | GiveUp:
        """A reconnect attempt failed at ``now``."""
        self._attempts += 1
        waited = now - self._since
        if self.max_outage is not None and waited > self.max_outage:
            return GiveUp(waited)
        attempts = self._attempts
        report = attempts == 1 or attempts % _REPORT_EVERY == 0
        return Retry(next(self._delays), attempts, report)

    def recovery_failed(self) -> float:
        """Connected, but restoring the subscriptions failed: the delay before trying again."""
        return next(self._delays)
