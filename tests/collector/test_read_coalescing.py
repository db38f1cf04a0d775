"""Read coalescing on the collector's upstream sockets (``read_coalesce``,
subscriptions/coalesce.py), with both transports: a fast stream rests reading and still arrives
whole and in order (over ``ws://`` and ``wss://``), a quiet stream never rests, reading never
rests when it is off, the picows hand-over of a big read and the coalescer leave each other's
pause alone, and the collector over the emulator and Redis publishes every trade in order with
its reading resting.

Only counts and order are asserted, never speed; quiet gaps are 25 times the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve

from tests.collector.service_support import Listener, running_collector
from tests.collector.test_transports import Sink
from tests.helpers import scaled, until
from upbit_fanout.collector import Collector
from upbit_fanout.collector.transport import (
    TRANSPORTS,
    ConnectOptions,
    UpstreamSocket,
    load_transport,
)
from upbit_fanout.collector.transport_picows import CHUNK, PicowsSocket
from upbit_fanout.commands.collector import collector_options
from upbit_fanout.emulator import Emulator
from upbit_fanout.emulator.tls import make_certificates
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.keys import Keys

transports = pytest.mark.parametrize("transport", TRANSPORTS)


@contextlib.asynccontextmanager
async def server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    *,
    tls: bool = False,
    monkeypatch: pytest.MonkeyPatch | None = None,
    tmp_path: Path | None = None,
) -> AsyncIterator[str]:
    """A websockets server on loopback running ``handler``; yields its URL. With ``tls``, it
    serves ``wss://`` and the client trusts its authority through ``SSL_CERT_FILE``, as the
    collector would trust Upbit's."""
    ssl_context = None
    if tls:
        assert monkeypatch is not None
        assert tmp_path is not None
        certificates = make_certificates()
        ca = certificates.write_ca(tmp_path / "ca.pem")
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        ssl_context = certificates.server_context
    async with serve(handler, "127.0.0.1", 0, compression=None, ssl=ssl_context) as running:
        port = running.sockets[0].getsockname()[1]
        yield f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/websocket/v1"


async def _open(transport: str, url: str, sink: Sink, read_coalesce: float) -> UpstreamSocket:
    options = ConnectOptions(read_coalesce=read_coalesce, ping_interval=60, ping_timeout=60)
    return await load_transport(transport).connect(url, options, sink, sink.pong)


@contextlib.asynccontextmanager
async def reading(socket: UpstreamSocket) -> AsyncIterator[None]:
    """The socket's read loop running, the socket closed on the way out."""
    task = asyncio.create_task(socket.read())
    try:
        yield
    finally:
        await socket.close()
        async with asyncio.timeout(scaled(5)):
            await task


# -- one socket -----------------------------------------------------------------------------------
@transports
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("read_coalesce", [0.0, 0.005], ids=["off", "5ms"])
async def test_a_fast_stream_arrives_whole_and_in_order_resting_only_when_on(
    transport: str,
    tls: bool,
    read_coalesce: float,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sent = [b'{"n":%d}' % i for i in range(400)]
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        for payload in sent:  # one frame per write, one write per event-loop turn
            await ws.send(payload)
            await asyncio.sleep(0)
        await ws.wait_closed()

    sink = Sink(len(sent))
    async with server(handler, tls=tls, monkeypatch=monkeypatch, tmp_path=tmp_path) as url:
        socket = await _open(transport, url, sink, read_coalesce)
        async with reading(socket):
            go.set()
            async with asyncio.timeout(scaled(20)):
                await sink.complete.wait()
            rests = socket.read_rests
    assert sink.got == sent  # nothing lost, nothing overtaken
    if read_coalesce:
        assert rests > 0  # reading rested ...
        assert len(sink.calls) < len(sent)  # ... and reads took several frames at once
    else:
        assert rests == 0


@transports
async def test_a_quiet_stream_never_rests_and_every_frame_is_handed_over_alone(
    transport: str,
) -> None:
    interval = 0.002
    sent = [b'{"n":%d}' % i for i in range(6)]

    async def handler(ws: ServerConnection) -> None:
        for payload in sent:
            await ws.send(payload)
            await asyncio.sleep(25 * interval)  # far beyond the busy window (half an interval)
        await ws.wait_closed()

    sink = Sink(len(sent))
    async with server(handler) as url:
        socket = await _open(transport, url, sink, interval)
        async with reading(socket):
            async with asyncio.timeout(scaled(10)):
                await sink.complete.wait()
            assert socket.read_rests == 0
    assert sink.got == sent
    assert sink.calls == [1] * len(sent)  # each one handed over as it came, never held back


# -- the picows hand-over of a big read and the coalescer -----------------------------------------
async def _idle_handler(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def _picows(sink: Sink, url: str, read_coalesce: float) -> PicowsSocket:
    socket = await _open("picows", url, sink, read_coalesce)
    assert isinstance(socket, PicowsSocket)
    return socket


class SlowSink(Sink):
    """Takes ``seconds`` per hand-over (a busy process), noting the state of reading at each:
    (the coalescer rests, reading is on)."""

    def __init__(self, expected: int, seconds: float) -> None:
        super().__init__(expected)
        self.seconds = seconds
        self.socket: PicowsSocket | None = None
        self.states: list[tuple[bool, bool]] = []

    def __call__(self, batch: list[bytes]) -> None:
        assert self.socket is not None
        listener = self.socket.listener
        assert listener.coalescer is not None
        assert listener.transport is not None
        reading_on = listener.transport.underlying_transport.is_reading()
        self.states.append((listener.coalescer.resting, reading_on))
        time.sleep(self.seconds)
        super().__call__(batch)


async def test_picows_a_hand_over_in_progress_keeps_reading_paused_after_a_rest_ends() -> None:
    interval = 0.002
    big = [b'{"n":%d}' % i for i in range(4 * CHUNK)]
    sink = SlowSink(len(big), 5 * interval)  # the rest ends while the chunks are handed over
    states = sink.states
    async with server(_idle_handler) as url:
        socket = sink.socket = await _picows(sink, url, interval)
        listener = socket.listener
        coalescer = listener.coalescer
        assert coalescer is not None
        assert listener.transport is not None
        reading_transport = listener.transport.underlying_transport
        async with reading(socket):
            coalescer.after_read()
            coalescer.after_read()  # two reads back to back: reading rests
            assert coalescer.resting
            assert not reading_transport.is_reading()
            listener.batch = list(big)  # a big read's messages, as the frames of one read leave
            listener.flush()  # them: the first chunk now, the others one per event-loop turn
            async with asyncio.timeout(scaled(10)):
                await sink.complete.wait()
            assert sink.got == big
            assert sink.calls == [CHUNK] * 4
            assert not all(resting for resting, _ in states)  # the rest ended mid-hand-over ...
            assert not any(on for _, on in states)  # ... and reading stayed paused throughout
            await until(lambda: not listener.draining, within=2)
            assert reading_transport.is_reading()  # resumed by the hand-over, once done
            assert not coalescer.resting


async def test_picows_a_hand_over_done_during_a_rest_leaves_reading_to_the_timer() -> None:
    interval = 0.1  # the longest rest: the hand-over of four chunks ends well within it
    big = [b'{"n":%d}' % i for i in range(4 * CHUNK)]
    sink = Sink(len(big))
    async with server(_idle_handler) as url:
        socket = await _picows(sink, url, interval)
        listener = socket.listener
        coalescer = listener.coalescer
        assert coalescer is not None
        assert listener.transport is not None
        reading_transport = listener.transport.underlying_transport
        async with reading(socket):
            coalescer.after_read()
            coalescer.after_read()
            assert coalescer.resting
            listener.batch = list(big)
            listener.flush()
            async with asyncio.timeout(scaled(10)):
                await sink.complete.wait()  # the last chunk: the hand-over is over
            assert not listener.draining
            assert coalescer.resting
            assert not reading_transport.is_reading()  # the hand-over left the rest alone
            await until(lambda: not coalescer.resting, within=2)
            assert reading_transport.is_reading()  # the coalescer's timer resumed it
    assert sink.got == big


# -- the collector --------------------------------------------------------------------------------
TRADES = "trade:KRW-BTC"


@pytest.fixture
async def wanting_trades(r: aioredis.Redis, keys: Keys) -> None:
    """A client "bot" wanting KRW-BTC's trades (in the shared real Redis)."""
    await r.sadd(keys.intents("bot"), TRADES)
    await r.expire(keys.intents("bot"), 60)


@transports
@pytest.mark.parametrize("read_coalesce", [0.0, 0.05], ids=["off", "50ms"])
@pytest.mark.emulator(seed=5, rate=1000, trading=("KRW-BTC",))
@pytest.mark.usefixtures("wanting_trades")
async def test_the_collector_publishes_every_trade_in_order_while_reading_rests(
    transport: str, read_coalesce: float, real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    """The emulator writes a batch every 10 ms: with 50 ms rests (busy: reads less than 25 ms
    apart), reading rests."""
    channel = keys.channel(TRADES)
    async with (
        Listener(real_redis_url, [channel]) as listener,
        running_collector(
            real_redis_url,
            keys,
            emu.public_url,
            upstream_transport=transport,
            read_coalesce=read_coalesce,
            rest_snapshots=False,
            backfill_max_trades=0,
        ) as c,
    ):
        await listener.wait(lambda: len(listener.messages[channel]) >= 300, within=20)
        socket = c.public.socket
        assert socket is not None
        rests = socket.read_rests
        assert c.counters["reconnects"] == 0
        assert c.counters["read_rests"] >= rests  # P:status and /metrics count them too
    ids = [event["sequential_id"] for event in listener.events(channel)]
    record = [trade["sequential_id"] for trade in emu.trade_record("KRW-BTC")]
    start = record.index(ids[0])
    assert ids == record[start : start + len(ids)]  # every trade, in the emulator's order
    assert (rests > 0) == bool(read_coalesce)


# -- the setting ----------------------------------------------------------------------------------
def test_the_setting_reaches_the_collector() -> None:
    settings = Settings(_env_file=None, read_coalesce=0.001)  # type: ignore[call-arg]
    assert collector_options(settings)["read_coalesce"] == 0.001
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert collector_options(defaults)["read_coalesce"] == 0.0  # off unless asked for


@pytest.mark.parametrize("bad", [-0.001, 0.5, float("nan")])
def test_the_collector_refuses_a_rest_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"read_coalesce must be between 0 \(off\) and 0.1 s"):
        Collector(
            redis=aioredis.Redis(),
            upstream_url="ws://127.0.0.1:9/websocket/v1",  # never connected
            validate_markets=False,
            read_coalesce=bad,
        )
