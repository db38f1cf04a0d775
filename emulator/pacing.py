"""How many events the emulator generates now, and when the next are due: the pacer.

Both generators of the emulator (the simulated market and the replay of a recorded file) emit at
``rate`` events per second. :class:`Pacer` is that decision as a pure object with the time
passed in (tested from tables, no event loop): a token bucket that earns ``rate`` events per
second, holds at most one second's worth (``max(rate, 1)``: after a pause the generator catches
up with one burst, not with the whole pause), and hands out whole events. ``rate=0`` is the
firehose: ``batch`` events at every step, no wait (the generator waits for its readers instead).
"""

from __future__ import annotations

from typing import Final

__all__ = ["FIREHOSE_BATCH", "TICK", "Pacer"]

TICK: Final = 0.01
"""The shortest wait between two paced steps, seconds (events due sooner go in one batch)."""

FIREHOSE_BATCH: Final = 256
"""Events per step in firehose mode (``rate=0``)."""

_ROUNDING: Final = 1e-9  # 0.9999999 events earned over float time steps are one event


class Pacer:
    """``rate`` events per second on average (0: the firehose), at most ``max(rate, 1)`` at once."""

    __slots__ = ("_budget", "_last", "batch", "rate", "tick")

    def __init__(
        self, rate: float, now: float, *, tick: float = TICK, batch: int = FIREHOSE_BATCH
    ) -> None:
        if rate < 0 or tick <= 0 or batch < 1:
            raise ValueError("a pacer needs rate >= 0, tick > 0 and batch >= 1")
        self.rate = rate
        self.tick = tick
        self.batch = batch
        self._budget = 0.0
        self._last = now

    @property
    def firehose(self) -> bool:
        return self.rate == 0

    def restart(self, now: float) -> None:
        """Start earning from ``now`` with nothing saved (the generator had nothing to do)."""
        self._budget = 0.0
        self._last = now

    def take(self, now: float) -> int:
        """How many events to generate at ``now`` (they are counted as generated)."""
        if self.firehose:
            return self.batch
        self._earn(now)
        count = int(self._budget + _ROUNDING)
        self._budget -= count
        return count

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until :meth:`take` returns at least one event (at least
        ``tick``: a high rate is served in batches, not one wake-up per event); 0.0 for the
        firehose."""
        if self.firehose:
            return 0.0
        missing = 1.0 - self._earned(now)
        return max(self.tick, missing / self.rate)

    def _earned(self, now: float) -> float:
        return min(self._budget + max(0.0, now - self._last) * self.rate, max(self.rate, 1.0))

    def _earn(self, now: float) -> None:
        self._budget = self._earned(now)
        self._last = max(self._last, now)
