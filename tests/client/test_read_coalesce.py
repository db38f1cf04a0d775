"""``read_coalesce``: the client's pub/sub reading rests for a moment when the stream is busy.

The protocol-level tests drive :class:`client._fast_link._Reader` with the recording transport of
tests/client/test_fast_link.py and a real event loop (tiny intervals, generous quiet gaps); the
others run a real FanoutClient against the real Redis. Nothing here times speed: what a user
would notice is a lost, reordered or stuck event, a quiet stream that waits, or a pause that a
rest undid (backpressure) or never ended.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.client.support import client, wait_subscribed
from tests.client.test_fast_link import FakeStreamProtocol, FakeTransport, feed, resp_message
from tests.helpers import until
from upbit_fanout.client import BlockingClient, Event, FanoutClient
from upbit_fanout.client._fast_link import _Reader
from upbit_fanout.subscriptions.keys import Keys

INTERVAL = 0.02
QUIET = 0.25  # far more than half an interval: the next read is a quiet stream's
CHANNEL = b"upbit:ticker:KRW-BTC"


def coalescing_reader(interval: float = INTERVAL) -> tuple[_Reader, FakeTransport]:
    transport = FakeTransport()
    reader = _Reader(transport, FakeStreamProtocol(), 1024, interval)  # type: ignore[arg-type]
    return reader, transport


async def started(reader: _Reader) -> tuple[asyncio.Task[None], list[list[Any]]]:
    batches: list[list[Any]] = []
    task = asyncio.create_task(reader.run(batches.append))
    await asyncio.sleep(0)
    return task, batches


def message(number: int) -> bytes:
    return resp_message(CHANNEL, b"m%d" % number)


async def test_a_busy_stream_rests_while_writes_come_faster_than_rests_and_reading_comes_back() -> (
    None
):
    reader, transport = coalescing_reader()
    task, batches = await started(reader)
    feed(reader, message(1))  # the first read: nothing to tell yet, handed over, no rest
    assert transport.reading
    assert reader.rests == 0
    feed(reader, message(2))  # soon after: busy, so reading rests
    assert not transport.reading
    assert reader.rests == 1
    assert [batch[0][2] for batch in batches] == [b"m1", b"m2"]  # delivered before resting
    await until(lambda: transport.reading, within=5, what="reading resumed after the rest")
    feed(reader, message(3) + message(4))  # what arrived meanwhile, in one read
    assert [item[2] for item in batches[-1]] == [b"m3", b"m4"]
    assert reader.rests == 2  # two writes came during the rest: still busy, it rests again
    assert not transport.reading
    await until(lambda: transport.reading, within=5, what="reading resumed after the rest")
    feed(reader, message(5))  # one write in a whole interval: the stream slowed, no rest
    assert [item[2] for item in batches[-1]] == [b"m5"]
    assert reader.rests == 2
    assert transport.reading
    task.cancel()


async def test_one_write_split_over_two_reads_counts_as_one_read() -> None:
    """A large write reaches the reader in pieces, microseconds apart: that is no busy stream."""
    reader, transport = coalescing_reader()
    task, batches = await started(reader)
    write = message(1) + message(2) + message(3)
    cut = len(message(1)) + 5  # inside the second message
    feed(reader, write[:cut])
    feed(reader, write[cut:])
    assert reader.rests == 0
    assert transport.reading
    assert [item[2] for batch in batches for item in batch] == [b"m1", b"m2", b"m3"]
    feed(reader, message(4))  # a whole second write right after: busy
    assert reader.rests == 1
    task.cancel()


async def test_a_quiet_stream_never_rests() -> None:
    reader, transport = coalescing_reader()
    task, batches = await started(reader)
    for number in range(3):
        feed(reader, message(number))
        assert transport.reading
        await asyncio.sleep(QUIET)
    assert reader.rests == 0
    assert len(batches) == 3
    task.cancel()


async def test_off_by_default_never_rests() -> None:
    transport = FakeTransport()
    reader = _Reader(transport, FakeStreamProtocol(), 1024)  # type: ignore[arg-type]
    task, _ = await started(reader)
    for number in range(50):
        feed(reader, message(number))
    assert transport.reading
    assert reader.rests == 0
    task.cancel()


async def test_backpressure_outlives_a_rest() -> None:
    """The owner's pause (a full buffer) holds after the rest's timer fired; the owner's resume
    during a rest leaves reading paused until the rest ends."""
    reader, transport = coalescing_reader()
    task, _ = await started(reader)
    feed(reader, message(1))
    feed(reader, message(2))
    assert not transport.reading  # resting
    reader.pause()  # the consumer fell behind
    await asyncio.sleep(INTERVAL * 5)  # the timer fired meanwhile
    assert not transport.reading, "the rest's timer resumed a socket under backpressure"
    reader.resume()
    assert transport.reading

    feed(reader, message(3))
    feed(reader, message(4))  # busy again: a new rest
    assert not transport.reading
    reader.pause()
    reader.resume()  # the consumer caught up within the rest
    assert not transport.reading, "the owner's resume cut the rest short"
    await until(lambda: transport.reading, within=5, what="reading resumed after the rest")
    task.cancel()


async def test_an_aborted_connection_is_never_resumed() -> None:
    reader, transport = coalescing_reader()
    task, _ = await started(reader)
    feed(reader, message(1))
    feed(reader, message(2))
    assert not transport.reading
    reader.abort()
    await asyncio.sleep(INTERVAL * 5)
    assert not transport.reading
    with pytest.raises(Exception, match="closed"):
        await task


@pytest.mark.parametrize("bad", [-0.001, 0.5, math.nan, math.inf])
def test_out_of_range_values_are_refused_at_once(bad: float) -> None:
    with pytest.raises(ValueError, match="read_coalesce"):
        FanoutClient("redis://127.0.0.1:6379/0", read_coalesce=bad)
    with pytest.raises(ValueError, match="read_coalesce"):
        BlockingClient("redis://127.0.0.1:6379/0", read_coalesce=bad)


def test_the_redis_py_reader_refuses_it() -> None:
    with pytest.raises(ValueError, match="hiredis"):
        FanoutClient("redis://127.0.0.1:6379/0", pubsub_reader="redis-py", read_coalesce=0.001)


# -- a real client on the real Redis -------------------------------------------------------------


async def _publish_busy(redis: aioredis.Redis, channel: str, count: int) -> None:
    """``count`` messages in single writes about 0.2 ms apart: a busy stream, one per read."""
    for number in range(count):
        await redis.publish(channel, b'{"type":"ticker","code":"KRW-BTC","n":%d}' % number)
        if number % 5 == 4:
            await asyncio.sleep(0.001)


async def _receive(fanout: FanoutClient, count: int) -> list[int]:
    got: list[int] = []
    async for item in fanout:
        if isinstance(item, Event):
            got.append(int(item.data["n"]))
            if len(got) == count:
                break
    return got


@pytest.mark.parametrize("interval", [0.0, 0.002])
async def test_every_event_arrives_in_order_whether_reading_rests_or_not(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, interval: float
) -> None:
    count = 1_500
    async with client(real_redis_url, keys, read_coalesce=interval) as fanout:
        await fanout.subscribe("ticker:KRW-BTC")
        channel = keys.channel("ticker:KRW-BTC")
        await wait_subscribed(r, channel)
        receiving = asyncio.create_task(_receive(fanout, count))
        await _publish_busy(r, channel, count)
        got = await asyncio.wait_for(receiving, timeout=30)
        assert got == list(range(count))
        if interval:
            assert fanout.read_rests > 0, "a busy stream never rested"
        else:
            assert fanout.read_rests == 0


async def test_a_quiet_stream_is_never_held_back(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    """Events further apart than half an interval are handed over as they come: nothing rests."""
    async with client(real_redis_url, keys, read_coalesce=0.02) as fanout:
        await fanout.subscribe("ticker:KRW-BTC")
        channel = keys.channel("ticker:KRW-BTC")
        await wait_subscribed(r, channel)
        receiving = asyncio.create_task(_receive(fanout, 4))
        for number in range(4):
            await asyncio.sleep(QUIET)  # also after the SUBSCRIBE's own reply
            await r.publish(channel, b'{"type":"ticker","code":"KRW-BTC","n":%d}' % number)
        assert await asyncio.wait_for(receiving, timeout=30) == [0, 1, 2, 3]
        assert fanout.read_rests == 0
