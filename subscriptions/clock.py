"""Wall-clock milliseconds, as Upbit stamps its frames and as ``P:status`` records times.

One definition for the collector, the client and the emulator (time is still passed into the
pure decisions; this is what the I/O edges read it from).
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Wall-clock time in whole milliseconds since the epoch."""
    return time.time_ns() // 1_000_000
