"""subscriptions.coalesce on a real event loop with tiny intervals: a busy sequence of reads rests
(paused, then resumed by the timer), a quiet one never does, the owner's hold keeps a pause,
``cancel()`` forgets a rest, and ``check_interval`` refuses what is out of range.

Only counts and states are asserted; the quiet gaps are ten times the busy window and more.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.helpers import until
from upbit_fanout.subscriptions.coalesce import (
    MAX_READ_COALESCE,
    SMALL_READ,
    ReadCoalescer,
    check_interval,
)

INTERVAL = 0.005


class Reading:
    """A socket's reading switch as the coalescer sees it: pause, resume, and the owner's hold."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.held = False
        self.resumed = asyncio.Event()

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1
        self.resumed.clear()

    def resume(self) -> None:
        self.paused = False
        self.resumes += 1
        self.resumed.set()

    def coalescer(self, interval: float = INTERVAL) -> ReadCoalescer:
        return ReadCoalescer(interval, self.pause, self.resume, held=lambda: self.held)


async def test_a_read_right_after_another_rests_until_the_timer_resumes() -> None:
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read()
    assert (coalescer.rests, reading.pauses) == (0, 0)  # the first read: nothing came before
    coalescer.after_read()
    assert coalescer.resting
    assert reading.paused
    assert coalescer.rests == 1
    await until(lambda: not coalescer.resting, within=2)
    assert not reading.paused  # the timer resumed reading
    assert (reading.pauses, reading.resumes) == (1, 1)


async def test_a_busy_stream_rests_after_every_other_read_and_is_always_resumed() -> None:
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read()
    for _ in range(10):  # a socket that always has data: read as soon as reading resumes
        coalescer.after_read()
        if reading.paused:
            async with asyncio.timeout(2):
                await reading.resumed.wait()
    # the read right after a rest comes a whole interval after the one before: no rest; the
    # next comes at once: a rest
    assert coalescer.rests == 5
    assert reading.pauses == reading.resumes == coalescer.rests  # every rest ended
    assert not coalescer.resting


async def read_after_rest(reading: Reading, coalescer: ReadCoalescer, messages: int) -> None:
    """Wait for the rest to end, then read ``messages`` (what arrived during it)."""
    async with asyncio.timeout(2):
        await reading.resumed.wait()
    coalescer.after_read(messages)


async def test_a_stream_writing_more_than_once_per_interval_rests_after_every_read() -> None:
    """One event per write, many writes per interval: the read that ends a rest brings several
    of them, so reading rests again at once (one read and one timer per interval, not two reads
    and a timer)."""
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read(1)
    coalescer.after_read(1)  # a second single event at once: rest
    assert coalescer.rests == 1
    for rests in range(2, 7):
        await read_after_rest(reading, coalescer, 5)  # five single writes came meanwhile
        assert coalescer.resting
        assert coalescer.rests == rests
    await read_after_rest(reading, coalescer, 1)  # the stream slowed to one per interval
    assert not coalescer.resting  # so resting stops
    assert coalescer.rests == 6
    assert reading.pauses == reading.resumes == 6


async def test_a_stream_of_big_writes_stops_resting_after_one_rest() -> None:
    """Writes of five, about one per interval: a rest that a hurried pair of them began brings
    one write (five messages, not twice five): no second rest, which would merge nothing."""
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read(5)
    coalescer.after_read(5)
    assert coalescer.rests == 1
    await read_after_rest(reading, coalescer, 5)
    assert not coalescer.resting
    assert coalescer.rests == 1
    await asyncio.sleep(INTERVAL)  # the next write comes an interval later: still no rest
    coalescer.after_read(5)
    assert coalescer.rests == 1


async def test_a_rest_that_brings_many_messages_ends_the_resting() -> None:
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read(1)
    coalescer.after_read(1)
    await read_after_rest(reading, coalescer, SMALL_READ)  # many: the wake-up is spread thin
    assert not coalescer.resting
    assert coalescer.rests == 1


async def test_a_quiet_stream_never_rests() -> None:
    reading = Reading()
    coalescer = reading.coalescer()
    for _ in range(6):
        coalescer.after_read()
        assert not reading.paused  # handed over at once, reading goes on
        await asyncio.sleep(20 * INTERVAL)  # forty times the busy window (half an interval)
    assert coalescer.rests == 0
    assert reading.pauses == 0


async def test_big_reads_and_empty_reads_never_rest() -> None:
    """A read that brought many messages spreads its wake-up thin; one that brought none (a
    partial message, a pong) says nothing about the stream."""
    reading = Reading()
    coalescer = reading.coalescer()
    for _ in range(10):
        coalescer.after_read(SMALL_READ)
    coalescer.after_read(0)
    coalescer.after_read(0)
    assert coalescer.rests == 0
    assert reading.pauses == 0
    coalescer.after_read(SMALL_READ - 1)  # a small read right after a big one: busy
    assert coalescer.rests == 1


async def test_an_interval_of_zero_never_rests() -> None:
    reading = Reading()
    coalescer = reading.coalescer(0)
    for _ in range(100):
        coalescer.after_read()
    assert coalescer.rests == 0
    assert reading.pauses == 0


async def test_the_owners_hold_keeps_reading_paused_when_the_rest_ends() -> None:
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read()
    coalescer.after_read()
    assert coalescer.resting
    reading.held = True  # the owner paused reading for a reason of its own meanwhile
    await until(lambda: not coalescer.resting, within=2)
    assert reading.paused  # the timer left the owner's pause alone
    assert reading.resumes == 0
    coalescer.after_read()  # a busy read while the owner holds reading: no rest of its own
    assert coalescer.rests == 1
    assert not coalescer.resting


async def test_cancel_forgets_a_rest_without_resuming() -> None:
    reading = Reading()
    coalescer = reading.coalescer()
    coalescer.after_read()
    coalescer.after_read()
    coalescer.cancel()  # the socket closes
    assert not coalescer.resting
    await asyncio.sleep(10 * INTERVAL)
    assert reading.resumes == 0  # nothing touched the (closed) socket afterwards
    coalescer.cancel()  # twice, or with nothing pending: nothing happens
    assert reading.resumes == 0


@pytest.mark.parametrize("bad", [-1, math.nan, 0.2, math.inf])
def test_check_interval_refuses_what_is_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"UPBIT_FANOUT_READ_COALESCE must be between 0 \(off\)"):
        check_interval(bad, "UPBIT_FANOUT_READ_COALESCE")
    with pytest.raises(ValueError, match="read_coalesce must be"):
        ReadCoalescer(bad, lambda: None, lambda: None)


@pytest.mark.parametrize("good", [0, 0.0, 0.001, MAX_READ_COALESCE])
def test_check_interval_accepts_zero_up_to_the_maximum(good: float) -> None:
    assert check_interval(good) == good
    assert isinstance(check_interval(good), float)
    assert MAX_READ_COALESCE == 0.1
