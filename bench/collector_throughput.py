"""Collector data-path throughput: Upbit firehose -> decode -> route -> Redis -> a subscriber.

    .venv/bin/python bench/collector_throughput.py [--seconds 8] [--codes 50] [--source auto]
        [--rate 0] [--baseline main] [--rounds 1] [--modes ...] [--codecs json,msgpack]
        [--transports websockets,picows,picows+uvloop] [--read-coalesce 0,0.001]

Processes (on a 2-core machine): the collector worker is pinned to CPU 0; the upstream source,
a redis-server of the bench's own (loopback, no persistence) and a subscriber process that counts
what arrives are pinned to the other CPUs. Every mode runs in a fresh worker process:

``batched-lua`` / ``batched-pipeline``
    the collector data path (collector.decode -> collector.routing -> collector.publisher) driven
    by a minimal reader: a websockets client task decodes and routes every frame into a list, a
    publisher task sends whatever has arrived (at most ``--batch`` items) in one round trip;
``service``
    collector.service.Collector itself (intents in Redis, CC's upstream, outbox and publisher),
    when it can be imported and started;
``naive``
    the baseline: one ``await redis.publish(channel, payload)`` per event, no batching (the
    payload is Upbit's bytes for json, ``encode_event(loads_exact(frame))`` for msgpack).

Each mode runs for both codecs. Sources: ``emulator`` (``emulator.Emulator`` firehose,
``rate=0``, in a subprocess) or ``replay``: a minimal WebSocket server of this file that writes
pre-built DEFAULT frames (ticker, trade with a fresh ``sequential_id`` each, 30-unit orderbook,
built from tests/data/upbit-samples) as fast as the reader takes them, so that the collector, not
the source, is the bottleneck. ``auto`` runs the emulator when it starts, and always ``replay``.
``paced`` (never in ``auto``) writes the replay's frames at ``--rate`` per second, evenly spread,
one ``send`` (and so one read of an idle reader) per frame, where the emulator's pacer writes a
batch every 10 ms, which the collector takes in one read: the source for read coalescing.

``--rate N`` paces the emulator (or the ``paced`` source) at N events/s in all (0: firehose): the
figure that matters there is the worker's CPU per event at a realistic rate, where per-wake-up
costs dominate.
``cryptofeed`` (a mode for the emulator source) is the reference beside the collector: an
unmodified cryptofeed Upbit feed (a dev dependency; trades and order books, SIMPLE format, as it
subscribes) in a worker process of its own, pinned like the others, consuming the same emulator
at the same pacing, in the same run (with the ``service`` mode: one run of it after each round
of the service's variants); its figure is that process's CPU time per frame received
(its callbacks do nothing but count). cryptofeed refuses any address but ``wss://``, so with this
mode the emulator serves TLS (``--tls``, implied) and every worker, the collector's too, connects
over ``wss://`` trusting the emulator's authority (``SSL_CERT_FILE``): as they would to Upbit.
``--transports websockets,picows,picows+uvloop`` runs the ``service`` mode once per upstream
transport in every round (``UPBIT_FANOUT_UPSTREAM_TRANSPORT``, collector/transport.py;
``+uvloop``: that worker on uvloop), beside cryptofeed when it is a mode too, and prints each
variant's ratio to websockets (CPU per event, events/s; also under ``ratios`` in the JSON). The
transport figures of the README come from one such run::

    .venv/bin/python bench/collector_throughput.py --source auto --rate 5000 \
        --modes service,cryptofeed --codecs json --transports websockets,picows,picows+uvloop \
        --rounds 3 --seconds 8 --results bench/results/collector_transports.json

(the emulator paced at 5,000 events/s with permessage-deflate over TLS, cryptofeed beside; then
the replaying source, firehose, no compression).
``--read-coalesce 0,0.001`` runs the ``service`` mode once per value for each of those transports
(``Collector(read_coalesce=)``, ``UPBIT_FANOUT_READ_COALESCE``: a busy upstream socket's reading
rests that long after a read, subscriptions/coalesce.py); a variant with a rest is named
``TRANSPORT/SECONDS`` (``picows+uvloop/0.001``), its ratio is to the same transport without it
when that runs too, and its JSON rows say how often reading rested (``read_rests_per_s``)::

    .venv/bin/python bench/collector_throughput.py --source paced --rate 5000 \
        --modes service --codecs json --transports websockets,picows,picows+uvloop \
        --read-coalesce 0,0.001 --rounds 3 --seconds 8
``--no-msgspec`` adds a run of the current code with :mod:`msgspec` hidden (an ``ImportError`` put
first on ``PYTHONPATH``): the collector with its typed fast path off.
``--baseline REF`` runs every worker a second time with another git revision's code (``main``, a
commit; on websockets, once per ``--read-coalesce`` value: ``baseline REF/0.001``), laid out
from ``git archive`` and put first on ``PYTHONPATH`` (as bench/emulator_firehose.py does),
against the same source and Redis, alternating the two ``--rounds`` times; the report gives each
run and the medians.

Figures: events/s published by the collector in the measuring window (after a warm-up), the
worker process's CPU time per event (µs), and the rate the subscriber counted between two marks.
Results go to bench/results/collector_throughput.json. ``--profile MODE`` prints a cProfile of
one worker instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import datetime as dt
import hashlib
import inspect
import json
import os
import platform
import pstats
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis as sync_redis
import redis.asyncio as aioredis
import websockets
from websockets.asyncio.client import connect

from upbit_fanout.collector.decode import decode_frame
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.subscriptions.codec import encode_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import parse_topic

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("UPBIT_FANOUT_SAMPLES", ROOT / "tests" / "data" / "upbit-samples"))
RESULTS = ROOT / "bench" / "results" / "collector_throughput.json"

PREFIX = "bench"
MARK_CHANNEL = f"{PREFIX}:bench-mark"
MARK = b"BENCH-MARK-"
CODES = [
    "BTC", "ETH", "XRP", "SOL", "DOGE", "ADA", "TRX", "AVAX", "LINK", "DOT", "BCH", "NEAR",
    "ETC", "XLM", "SUI", "APT", "HBAR", "SHIB", "ATOM", "ARB", "OP", "SEI", "STX", "IMX",
    "SAND", "MANA", "AXS", "EOS", "AAVE", "ALGO", "POL", "1INCH", "ENS", "GRT", "ZRX", "BAT",
    "KAVA", "FLOW", "CHZ", "THETA", "QTUM", "ICX", "ONT", "ZIL", "IOST", "WAVES", "NEO",
    "GAS", "BORA", "MED", "SNT", "STORJ", "ANKR", "CRO", "HIVE", "STEEM", "ARDR", "SC",
]  # fmt: skip


def prefix_option(collector_class: Any, prefix: str) -> dict[str, Any]:
    """``Collector``'s key prefix argument: ``key_prefix=``, or ``keys=Keys(prefix)`` for a
    ``--baseline`` revision from before ``key_prefix`` existed (where ``keys=`` was required)."""
    if "key_prefix" in inspect.signature(collector_class).parameters:
        return {"key_prefix": prefix}
    from upbit_fanout.subscriptions.keys import Keys  # noqa: PLC0415

    return {"keys": Keys(prefix)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpus: set[int]) -> None:
    available = os.sched_getaffinity(0)
    chosen = cpus & available or available
    os.sched_setaffinity(0, chosen)


def other_cpus() -> set[int]:
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[1:]) or set(cpus)


# -- the replay source: a minimal WebSocket server writing pre-built frames ---------------------


def _sample(name: str, number: int) -> bytes:
    return (SAMPLES / name).read_text().splitlines()[number - 1].encode()


def build_frames(codes: list[str]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """(ticker and orderbook frames, (trade prefix, trade suffix) around sequential_id)."""
    ticker = _sample("ticker.jsonl", 2)
    book = _sample("orderbook.jsonl", 1).replace(b"SNAPSHOT", b"REALTIME")
    trade = _sample("trade.jsonl", 4).replace(b"SNAPSHOT", b"REALTIME")
    rng = random.Random(1)
    fixed: list[bytes] = []
    trades: list[tuple[bytes, bytes]] = []
    for code in codes:
        c = code.encode()
        price = str(rng.randint(100, 200_000_000)).encode()
        fixed.append(ticker.replace(b"KRW-BTC", c).replace(b"32287000", price))
        fixed.append(book.replace(b"KRW-BTC", c))
        head, _, tail = trade.replace(b"KRW-BTC", c).partition(b"17303368620470000")
        trades.append((head, tail))
    return fixed, trades


def _ws_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return bytes((0x82, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x82, 127)) + n.to_bytes(8, "big") + payload


def _upgrade_answer(head: bytes) -> bytes:
    """The server's answer to a WebSocket upgrade request (no extension: no compression)."""
    found = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head)
    assert found is not None
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    accept = base64.b64encode(hashlib.sha1(found.group(1) + guid).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


async def replay_server(port: int, codes: list[str]) -> None:
    fixed, trades = build_frames(codes)
    framed = [_ws_frame(frame) for frame in fixed]
    sid = 10**16

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sid
        writer.write(_upgrade_answer(await reader.readuntil(b"\r\n\r\n")))
        await reader.read(65536)  # the subscribe message: start the firehose

        async def discard() -> None:
            while await reader.read(65536):
                pass

        drain = asyncio.create_task(discard())
        try:
            while not drain.done():
                chunk: list[bytes] = []
                for index, (prefix, suffix) in enumerate(trades):
                    sid += 1
                    chunk.append(_ws_frame(prefix + str(sid).encode() + suffix))
                    chunk.append(framed[2 * index])
                    chunk.append(framed[2 * index + 1])
                writer.write(b"".join(chunk))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            drain.cancel()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        print("ready", flush=True)
        await server.serve_forever()


def paced_server(port: int, codes: list[str], rate: float) -> None:
    """The ``paced`` source: the replay's frames, ``rate`` per second, evenly spread, each in a
    ``send`` of its own (``TCP_NODELAY``); one thread per connection. An idle reader wakes for
    every frame, as with a feed whose events are spread over time (the emulator's pacer writes a
    batch every 10 ms instead, which a reader takes in one read)."""
    fixed, trades = build_frames(codes)
    framed = [_ws_frame(frame) for frame in fixed]
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(
            target=_paced_connection, args=(connection, framed, trades, rate), daemon=True
        ).start()


def _paced_connection(
    connection: socket.socket,
    framed: list[bytes],
    trades: list[tuple[bytes, bytes]],
    rate: float,
) -> None:
    with connection, contextlib.suppress(OSError):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            data = connection.recv(65536)
            if not data:
                return
            head += data
        connection.sendall(_upgrade_answer(head))
        connection.recv(65536)  # the subscribe message: start

        def discard() -> None:
            with contextlib.suppress(OSError):
                while connection.recv(65536):
                    pass

        threading.Thread(target=discard, daemon=True).start()
        interval = 1.0 / rate
        due = time.perf_counter()
        sid = 10**16
        while True:  # until the reader goes (a send fails)
            for index, (prefix, suffix) in enumerate(trades):
                sid += 1
                trade = _ws_frame(prefix + str(sid).encode() + suffix)
                for frame in (trade, framed[2 * index], framed[2 * index + 1]):
                    connection.sendall(frame)
                    due += interval
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -0.05:  # fell behind (the machine is busy): no catch-up burst
                        due = time.perf_counter()


EMULATOR_CODE = """
import asyncio, sys
port = int(sys.argv[1])
try:
    from upbit_fanout.emulator import Emulator
except ImportError:
    from upbit_fanout.emulator.server import Emulator
rate = float(sys.argv[2])
ca = sys.argv[3] if len(sys.argv) > 3 else ""
async def main():
    async with Emulator(port=port, seed=1, rate=rate, idle_timeout=3600, messages_per_s=100,
                        messages_per_min=10000, **({"tls": True} if ca else {})) as emu:
        if ca:
            emu.certificates.write_ca(ca)
        print("ready", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def start_source(
    kind: str, port: int, codes: list[str], rate: float = 0.0, ca: Path | None = None
) -> subprocess.Popen[bytes]:
    """The upstream; with ``ca`` (the emulator only) it serves TLS and writes its authority's
    certificate there."""
    if kind == "replay":
        args = [sys.executable, __file__, "--serve-replay", str(port), "--codes", str(len(codes))]
    elif kind == "paced":
        args = [
            sys.executable, __file__, "--serve-paced", str(port), "--codes", str(len(codes)),
            "--rate", str(rate),
        ]  # fmt: skip
    else:
        args = [sys.executable, "-c", EMULATOR_CODE, str(port), str(rate), str(ca or "")]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _pin_others(process.pid)
    assert process.stdout is not None
    line = process.stdout.readline()
    if b"ready" not in line:
        process.kill()
        _, err = process.communicate()
        raise RuntimeError(f"{kind} source did not start: {err.decode()[-400:]}")
    return process


def _pin_others(pid: int) -> None:
    os.sched_setaffinity(pid, other_cpus())


# -- redis-server and the subscriber ---------------------------------------------------------


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _pin_others(process.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def subscriber(port: int, channels: list[str]) -> None:
    """Count pub/sub messages between the two marks; print the count and the seconds."""
    pin(other_cpus())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_resp("SUBSCRIBE", MARK_CHANNEL, *channels))
    needle = b"$7\r\nmessage\r\n"
    tail = b""
    count = 0
    started = 0.0
    counting = False
    print("ready", flush=True)
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        data = tail + data
        while True:
            at = data.find(MARK)
            if at < 0:
                break
            before = data[:at]
            if counting:
                count += before.count(needle) - 1  # the mark is a message too
                print(json.dumps({"count": count, "seconds": time.monotonic() - started}))
                sys.stdout.flush()
                return
            counting = True
            started = time.monotonic()
            data = data[at + len(MARK) :]
        cut = max(0, len(data) - len(needle) - len(MARK))
        if counting:
            count += data[:cut].count(needle)
        tail = data[cut:]


# -- the worker ----------------------------------------------------------------------------------


class Meter:
    """Samples the worker's published-event counter and CPU time at the window's edges (and,
    for the service, how often its upstream socket's reading rested: ``read_rests_per_s``)."""

    def __init__(
        self,
        published: Callable[[], int],
        frames: Callable[[], int],
        rests: Callable[[], int] | None = None,
    ) -> None:
        self.published = published
        self.frames = frames
        self.rests = rests
        self.samples: list[tuple[float, float, int, int]] = []
        self.rest_samples: list[int] = []

    def sample(self) -> None:
        self.samples.append(
            (time.monotonic(), time.process_time(), self.published(), self.frames())
        )
        if self.rests is not None:
            self.rest_samples.append(self.rests())

    def result(self) -> dict[str, float]:
        (t0, c0, e0, f0), (t1, c1, e1, f1) = self.samples[0], self.samples[-1]
        events = max(e1 - e0, 1)
        result: dict[str, float] = {
            "events_per_s": round(events / (t1 - t0)),
            "frames_per_s": round((f1 - f0) / (t1 - t0)),
            "cpu_us_per_event": round((c1 - c0) / events * 1e6, 2),
            "cpu_share": round((c1 - c0) / (t1 - t0), 3),
            "events": events,
        }
        if self.rest_samples:
            rests = self.rest_samples[-1] - self.rest_samples[0]
            result["read_rests_per_s"] = round(rests / (t1 - t0))
        return result


async def run_worker(opts: argparse.Namespace) -> dict[str, Any]:
    pin({sorted(os.sched_getaffinity(0))[0]})
    keys = Keys(PREFIX)
    codes = [f"KRW-{c}" for c in CODES[: opts.codes]]
    topics = [f"{t}:{c}" for c in codes for t in ("ticker", "trade", "orderbook")]
    scheme = "wss" if os.environ.get("SSL_CERT_FILE") and opts.tls else "ws"
    url = f"{scheme}://127.0.0.1:{opts.upstream_port}/websocket/v1"
    redis = aioredis.Redis(port=opts.redis_port)
    marks = aioredis.Redis(port=opts.redis_port)
    message = [
        {"ticket": "bench"},
        {"type": "ticker", "codes": codes},
        {"type": "trade", "codes": codes},
        {"type": "orderbook", "codes": codes},
        {"format": "DEFAULT"},
    ]
    mode, codec = opts.worker, opts.codec
    tasks: list[asyncio.Task[None]] = []
    frames = 0
    published = 0
    collector: Any = None

    if mode == "service":
        # Imported here: the service is written in parallel and may not import yet.
        from upbit_fanout.collector.service import Collector  # noqa: PLC0415

        read_coalesce = float(opts.read_coalesce)  # the orchestrator passes one value

        collector = Collector(
            redis=redis,
            **prefix_option(Collector, keys.prefix),
            upstream_url=url,
            codec=codec,
            ping_interval=600,
            ping_timeout=600,
            sweep_interval=600,
            queue_size=100_000,
            # only when asked: a baseline revision may not know the options
            **({"upstream_transport": opts.transport} if opts.transport != "websockets" else {}),
            **({"read_coalesce": read_coalesce} if read_coalesce else {}),
        )
        await redis.sadd(keys.intents("bench"), *topics)
        await redis.pexpire(keys.intents("bench"), 3_600_000)
        await collector.start()

        def read_rests() -> int:
            socket = getattr(collector.public, "socket", None)  # None in a baseline revision
            return 0 if socket is None else int(socket.read_rests)

        meter = Meter(
            lambda: collector.publisher.events_published,
            lambda: collector.public.router.events,
            read_rests,
        )
    else:
        ws = await connect(
            url,
            max_size=2**24,
            ping_interval=None,
            close_timeout=0.5,
            compression=opts.compression,
        )
        await ws.send(orjson.dumps(message).decode())
        if mode == "naive":
            channels = {
                (t.split(":")[0], t.split(":")[1]): keys.channel(t).encode() for t in topics
            }

            async def naive() -> None:
                nonlocal frames, published
                async for data in ws:
                    frames += 1
                    head = orjson.loads(data)
                    channel = channels.get((head.get("type"), head.get("code")))
                    if channel is None:
                        continue
                    payload = data
                    if codec == "msgpack":
                        payload = encode_event(loads_exact(data), "msgpack")
                    await redis.publish(channel, payload)
                    published += 1

            tasks.append(asyncio.create_task(naive()))
            meter = Meter(lambda: published, lambda: frames)
        else:
            router = Router(codec=codec)
            router.set_topics([parse_topic(t) for t in topics], fresh_connection=True)
            publisher = Publisher(redis, keys, mode=mode.removeprefix("batched-"))
            pending: list[Outgoing] = []
            ready = asyncio.Event()
            limit = opts.batch

            async def reader() -> None:
                nonlocal frames
                route = router.route
                async for data in ws:
                    frames += 1
                    for frame in decode_frame(data):
                        pending.extend(route(frame))
                    ready.set()

            async def publish() -> None:
                nonlocal pending
                while True:
                    await ready.wait()
                    ready.clear()
                    while pending:
                        batch = pending[:limit]
                        del pending[:limit]
                        await publisher.publish(batch)

            tasks += [asyncio.create_task(reader()), asyncio.create_task(publish())]
            meter = Meter(lambda: publisher.events_published, lambda: frames)

    profiler = cProfile.Profile() if opts.profile_out else None
    try:
        await asyncio.sleep(opts.warmup)
        meter.sample()
        await marks.publish(MARK_CHANNEL, MARK + b"0")
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(opts.seconds)
        if profiler is not None:
            profiler.disable()
        meter.sample()
        _debug("sampled")
        await marks.publish(MARK_CHANNEL, MARK + b"1")
        _debug("marked")
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"worker task failed: {task.exception()!r}")
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        _debug("cancelled")
        if collector is not None:
            await collector.aclose()
        else:
            with contextlib.suppress(Exception):
                await ws.close()
        await redis.aclose()
        await marks.aclose()
    if profiler is not None:
        profiler.dump_stats(opts.profile_out)
    return meter.result()


def _debug(text: str) -> None:
    if os.environ.get("BENCH_DEBUG"):
        print(text, file=sys.stderr, flush=True)


def cryptofeed_worker(opts: argparse.Namespace) -> None:
    """cryptofeed's Upbit feed on the same codes (trades and order books: all it offers), for
    ``--warmup`` then ``--seconds``; prints RESULT with its CPU time per frame received.

    Its code is not modified: the endpoint lists are pointed at the emulator (as
    tests/emulator/cryptofeed_upbit.py does) and a subclass counts frames before handing each
    to cryptofeed's own ``message_handler``; the callbacks only count."""
    pin({sorted(os.sched_getaffinity(0))[0]})
    from cryptofeed import FeedHandler  # noqa: PLC0415 - a dev dependency, this mode only
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint  # noqa: PLC0415
    from cryptofeed.defines import L2_BOOK, TRADES  # noqa: PLC0415
    from cryptofeed.exchanges import Upbit  # noqa: PLC0415

    base = f"127.0.0.1:{opts.upstream_port}"
    Upbit.websocket_endpoints = [WebsocketEndpoint(f"wss://{base}/websocket/v1")]
    Upbit.rest_endpoints = [RestEndpoint(f"https://{base}", routes=Routes("/v1/market/all"))]
    counts = {"frames": 0, "callbacks": 0}

    class CountingUpbit(Upbit):  # type: ignore[misc, unused-ignore]
        async def message_handler(self, msg: Any, conn: Any, timestamp: float) -> None:
            counts["frames"] += 1
            await super().message_handler(msg, conn, timestamp)

    async def counted(item: Any, receipt: float) -> None:
        counts["callbacks"] += 1

    known = set(Upbit.symbols())  # the emulator's market list, through cryptofeed's REST call
    symbols = [f"{c}-KRW" for c in CODES[: opts.codes] if f"{c}-KRW" in known]
    handler = FeedHandler()
    handler.add_feed(
        CountingUpbit(
            symbols=symbols,
            channels=[TRADES, L2_BOOK],
            callbacks={TRADES: counted, L2_BOOK: counted},
        )
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler.run(start_loop=False)
    meter = Meter(lambda: counts["frames"], lambda: counts["frames"])

    async def measure() -> dict[str, Any]:
        await asyncio.sleep(opts.warmup)
        meter.sample()
        before = counts["callbacks"]
        await asyncio.sleep(opts.seconds)
        meter.sample()
        result: dict[str, Any] = dict(meter.result())
        result["callbacks_per_s"] = round((counts["callbacks"] - before) / opts.seconds)
        result["codes_subscribed"] = len(symbols)
        return result

    result = loop.run_until_complete(measure())
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # cryptofeed's own shutdown is slow and chatty; the figures are out


def worker_main(opts: argparse.Namespace) -> None:
    if opts.uvloop:
        import uvloop  # noqa: PLC0415 - extra fast, this variant only

        result = uvloop.run(run_worker(opts))
    else:
        result = asyncio.run(run_worker(opts))
    print("RESULT " + json.dumps(result), flush=True)


# -- the orchestrator ------------------------------------------------------------------------


def run_mode(
    opts: argparse.Namespace,
    mode: str,
    codec: str,
    *,
    upstream_port: int,
    redis_port: int,
    compression: str | None,
    profile_out: str | None = None,
    python_path: Path | None = None,
    transport: str = "websockets",
    read_coalesce: float = 0.0,
) -> dict[str, Any]:
    env = dict(os.environ)
    if opts.ca is not None:
        env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = str(opts.ca)
    if mode == "cryptofeed":
        return run_cryptofeed(opts, upstream_port=upstream_port, env=env)
    codes = [f"KRW-{c}" for c in CODES[: opts.codes]]
    channels = [f"{PREFIX}:{t}:{c}" for c in codes for t in ("ticker", "trade", "orderbook")]
    sub = subprocess.Popen(
        [sys.executable, __file__, "--subscriber", str(redis_port), *channels],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert sub.stdout is not None
    sub.stdout.readline()
    args = [
        sys.executable, __file__, "--worker", mode, "--codec", codec,
        "--upstream-port", str(upstream_port), "--redis-port", str(redis_port),
        "--seconds", str(opts.seconds), "--warmup", str(opts.warmup),
        "--codes", str(opts.codes), "--batch", str(opts.batch),
        "--compression", compression or "none",
        "--transport", transport.removesuffix("+uvloop"),
        "--read-coalesce", repr(read_coalesce),
    ]  # fmt: skip
    if transport.endswith("+uvloop"):
        args.append("--uvloop")
    if opts.ca is not None:
        args.append("--tls")
    if profile_out:
        args += ["--profile-out", profile_out]
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(python_path), *filter(None, [env.get("PYTHONPATH")])]
        )
    done = subprocess.run(args, capture_output=True, cwd=ROOT, timeout=120, check=False, env=env)
    result: dict[str, Any] = {
        "mode": mode,
        "codec": codec,
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sub.kill()
        sub.wait()
        result["error"] = done.stderr.decode().strip().splitlines()[-1:] or ["failed"]
        return result
    result.update(json.loads(lines[-1][len("RESULT ") :]))
    try:
        out, _ = sub.communicate(timeout=10)
        counted = json.loads(out.decode().strip().splitlines()[-1])
        result["subscriber_events_per_s"] = round(counted["count"] / counted["seconds"])
    except (subprocess.TimeoutExpired, IndexError, ValueError):
        sub.kill()
        sub.wait()
        result["subscriber_events_per_s"] = None
    return result


def run_cryptofeed(
    opts: argparse.Namespace, *, upstream_port: int, env: dict[str, str]
) -> dict[str, Any]:
    args = [
        sys.executable, str(Path(__file__).resolve()), "--cryptofeed-worker",
        "--upstream-port", str(upstream_port), "--seconds", str(opts.seconds),
        "--warmup", str(opts.warmup), "--codes", str(opts.codes),
    ]  # fmt: skip
    result: dict[str, Any] = {
        "mode": "cryptofeed",
        "codec": "simple",
        "loadavg_1min_after": 0.0,
    }
    with tempfile.TemporaryDirectory(prefix="cryptofeed-") as cwd:  # its feedhandler.log
        done = subprocess.run(args, capture_output=True, cwd=cwd, timeout=120, check=False, env=env)
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.startswith("RESULT ")]
    if not lines:
        result["error"] = done.stderr.decode().strip().splitlines()[-1:] or ["failed"]
        return result
    result.update(json.loads(lines[-1][len("RESULT ") :]))
    result["subscriber_events_per_s"] = None  # it publishes nothing
    return result


def baseline_path(ref: str, into: Path) -> Path:
    """``ref``'s code importable as ``upbit_fanout`` (checked: the baseline must not import the
    checkout's own package)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from emulator_firehose import baseline_tree  # noqa: PLC0415

    path = baseline_tree(ref, into)
    env = {**os.environ, "PYTHONPATH": str(path)}
    where = subprocess.run(
        [sys.executable, "-c", "import upbit_fanout.collector as c; print(c.__file__)"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not where.startswith(str(path)):
        raise SystemExit(f"the baseline would import {where}, not the baseline tree")
    return path


def orchestrate(opts: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="collector-baseline-") as tmp:
        base = baseline_path(opts.baseline, Path(tmp)) if opts.baseline else None
        no_msgspec = None
        if opts.no_msgspec:  # the current code with its typed fast path off
            no_msgspec = Path(tmp) / "no-msgspec"
            (no_msgspec / "msgspec").mkdir(parents=True)
            (no_msgspec / "msgspec" / "__init__.py").write_text(
                "raise ImportError('hidden by bench/collector_throughput.py --no-msgspec')\n"
            )
        _orchestrate(opts, base, no_msgspec, tmp)


def _orchestrate(
    opts: argparse.Namespace, base: Path | None, no_msgspec: Path | None, tmp: str
) -> None:
    codes = [f"KRW-{c}" for c in CODES[: opts.codes]]
    sources = ["emulator", "replay"] if opts.source == "auto" else [opts.source]
    modes = opts.modes.split(",")
    transports = opts.transports.split(",")
    coalesces = read_coalesce_values(opts.read_coalesce)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "picows": _version("picows"),
        "transports": transports,
        "read_coalesce": coalesces,
        "redis_py": sync_redis.__version__,
        "redis_server": None,
        "codes": len(codes),
        "topics": 3 * len(codes),
        "rate": opts.rate or "firehose",
        "baseline": opts.baseline,
        "rounds": opts.rounds,
        "seconds": opts.seconds,
        "warmup": opts.warmup,
        "batch_limit": opts.batch,
        "tls": opts.tls,
        "layout": "collector worker pinned to CPU 0; source, redis-server, subscriber on the rest",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other sessions' tests and benches may run at the same time; "
        "cpu_us_per_event (the worker's own CPU time) is the figure least affected by them",
        "runs": [],
    }
    redis_port = free_port()
    redis_proc = start_redis(redis_port)
    try:
        client = sync_redis.Redis(port=redis_port)
        report["redis_server"] = client.info("server")["redis_version"]
        client.close()
        for source in sources:
            port = free_port()
            opts.ca = Path(tmp) / "emulator-ca.pem" if source == "emulator" and opts.tls else None
            try:
                proc = start_source(
                    source, port, codes, opts.rate if source != "replay" else 0, opts.ca
                )
            except RuntimeError as exc:
                print(f"{source}: skipped ({str(exc).splitlines()[-1] if str(exc) else exc})")
                report["runs"].append({"source": source, "error": str(exc)[-300:]})
                continue
            compressions = ["deflate", None] if source == "emulator" else [None]
            try:
                for compression in compressions:
                    for mode in modes:
                        for codec in opts.codecs.split(","):
                            if mode == "batched-pipeline" and codec == "msgpack":
                                continue
                            if (
                                mode in ("service", "cryptofeed")
                                and compression is None
                                and source == "emulator"
                            ):
                                continue  # both offer deflate (websockets' default)
                            if mode == "cryptofeed" and (source != "emulator" or codec != "json"):
                                continue  # its own format (SIMPLE), over TLS, once per round
                            paired = "service" in modes and codec == opts.codecs.split(",")[0]
                            if mode == "cryptofeed" and "service" in modes:
                                continue  # alternates with the service's rounds (below)
                            if mode == "cryptofeed":
                                for _ in range(opts.rounds):
                                    result = run_mode(
                                        opts,
                                        mode,
                                        "simple",
                                        upstream_port=port,
                                        redis_port=redis_port,
                                        compression=compression,
                                    )
                                    result["code"] = "cryptofeed"
                                    result["source"] = source
                                    result["compression"] = compression
                                    report["runs"].append(result)
                                    _print(result)
                                continue
                            # (name, code path, transport, read_coalesce)
                            variants: list[tuple[str, Path | None, str, float]] = [
                                ("current", None, "websockets", 0.0)
                            ]
                            if mode == "service" and (
                                transports != ["websockets"] or coalesces != [0.0]
                            ):
                                variants = [
                                    (variant_name(spec, value), None, spec, value)
                                    for spec in transports
                                    for value in coalesces
                                ]
                            if base is not None:  # websockets, once per --read-coalesce
                                base_coalesces = coalesces if mode == "service" else [0.0]
                                variants[:0] = [
                                    (
                                        variant_name(f"baseline {opts.baseline}", value),
                                        base,
                                        "websockets",
                                        value,
                                    )
                                    for value in base_coalesces
                                ]
                            if no_msgspec is not None:
                                variants.insert(-1, ("no msgspec", no_msgspec, "websockets", 0.0))
                            if (
                                mode == "service"
                                and "cryptofeed" in modes
                                and source == "emulator"
                                and paired
                            ):
                                # each round, beside
                                variants.append(("cryptofeed", None, "", 0.0))
                            for _ in range(opts.rounds):
                                for code, path, transport, read_coalesce in variants:
                                    result = run_mode(
                                        opts,
                                        "cryptofeed" if code == "cryptofeed" else mode,
                                        "simple" if code == "cryptofeed" else codec,
                                        upstream_port=port,
                                        redis_port=redis_port,
                                        compression=compression,
                                        python_path=path,
                                        transport=transport or "websockets",
                                        read_coalesce=read_coalesce,
                                    )
                                    result["code"] = code
                                    result["source"] = source
                                    result["compression"] = compression or "none"
                                    report["runs"].append(result)
                                    _print(result)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        redis_proc.terminate()
        redis_proc.wait()
    report["medians"] = _medians(report["runs"])
    for row in report["medians"]:
        print("median  " + _line(row))
    report["ratios"] = _ratios(report["medians"])
    for ratio in report["ratios"]:
        print(
            f"ratio   {ratio['code']:>19} / {ratio['against']} ({ratio['source']}, "
            f"{ratio['compression']}, {ratio['codec']}): CPU/event x{ratio['cpu_us_per_event']}, "
            f"events/s x{ratio['events_per_s']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    opts.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {opts.results}")


def read_coalesce_values(text: str) -> list[float]:
    """``--read-coalesce``: comma-separated rests in seconds, each 0 (off) to 0.1."""
    from upbit_fanout.subscriptions.coalesce import check_interval  # noqa: PLC0415

    try:
        return [check_interval(float(value), "--read-coalesce") for value in text.split(",")]
    except ValueError as exc:
        raise SystemExit(f"collector_throughput: {exc}") from exc


def variant_name(transport: str, read_coalesce: float) -> str:
    """A service variant's name: the transport, and ``/SECONDS`` when reading rests."""
    return f"{transport}/{read_coalesce:g}" if read_coalesce else transport


def _medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (code, source, compression, mode, codec): the median of every figure over rounds."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run in runs:
        if "error" in run or "mode" not in run:
            continue
        key = (run["code"], run["source"], run["compression"], run["mode"], run["codec"])
        groups.setdefault(key, []).append(run)
    out: list[dict[str, Any]] = []
    for (code, source, compression, mode, codec), rows in groups.items():
        row: dict[str, Any] = {
            "code": code,
            "source": source,
            "compression": compression,
            "mode": mode,
            "codec": codec,
            "rounds": len(rows),
        }
        for name in ("events_per_s", "cpu_us_per_event", "cpu_share", "subscriber_events_per_s"):
            values = [r[name] for r in rows if r.get(name) is not None]
            row[name] = statistics.median(values) if values else None
        out.append(row)
    return out


def _ratios(medians: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each service variant against websockets (or ``current``) of the same source, compression
    and codec, a ``TRANSPORT/SECONDS`` one against its transport without the rest when it ran:
    the ratio of the medians (below 1: less CPU per event, more events/s above 1)."""
    out: list[dict[str, Any]] = []
    index = {(m["source"], m["compression"], m["codec"], m["code"]): m for m in medians}
    for row in medians:
        if row["code"] in ("websockets", "current") or row["mode"] not in ("service", "cryptofeed"):
            continue
        codec = "json" if row["code"] == "cryptofeed" else row["codec"]
        transport, rests, _ = row["code"].partition("/")  # TRANSPORT/SECONDS: reading rests
        references = ("websockets", "current")
        if rests:
            references = (transport, *references)
        for against in references:
            ref = index.get((row["source"], row["compression"], codec, against))
            if ref is not None and ref["mode"] == "service":
                break
        else:
            continue
        out.append(
            {
                "code": row["code"],
                "against": against,
                "source": row["source"],
                "compression": row["compression"],
                "codec": codec,
                "cpu_us_per_event": _ratio(row["cpu_us_per_event"], ref["cpu_us_per_event"]),
                "events_per_s": _ratio(row["events_per_s"], ref["events_per_s"]),
            }
        )
    return out


def _ratio(value: float | None, ref: float | None) -> float | None:
    return round(value / ref, 3) if value and ref else None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _line(r: dict[str, Any]) -> str:
    head = (
        f"{r.get('code', 'current'):>19} {r['source']:>8} {r['compression']:>7} "
        f"{r['mode']:>16} {r['codec']:>7}"
    )
    if "error" in r:
        return f"{head}  FAILED: {r['error']}"
    return (
        f"{head}  {r['events_per_s']:>8,.0f} ev/s  {r['cpu_us_per_event']:>6.2f} µs/ev  "
        f"cpu {r['cpu_share']:.0%}  subscriber {_rate(r['subscriber_events_per_s'])} ev/s"
    )


def _rate(value: float | None) -> str:
    return f"{value:>8,.0f}" if value is not None else "       -"


def _print(r: dict[str, Any]) -> None:
    print(_line(r), flush=True)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def profile(opts: argparse.Namespace) -> None:
    codes = [f"KRW-{c}" for c in CODES[: opts.codes]]
    redis_port = free_port()
    redis_proc = start_redis(redis_port)
    port = free_port()
    proc = start_source(opts.source if opts.source != "auto" else "replay", port, codes, opts.rate)
    out = "/tmp/collector_throughput.prof"
    try:
        mode, _, codec = opts.profile.partition(":")
        result = run_mode(
            opts,
            mode,
            codec or "json",
            upstream_port=port,
            redis_port=redis_port,
            compression=None,
            profile_out=out,
            transport=opts.transports.split(",")[-1],  # --transports picows: profile that one
            read_coalesce=read_coalesce_values(opts.read_coalesce)[-1],  # likewise
        )
        print(result)
    finally:
        proc.kill()
        proc.wait()
        redis_proc.terminate()
        redis_proc.wait()
    stats = pstats.Stats(out)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring window (s)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--codes", type=int, default=50, help="KRW codes (x3 topics)")
    parser.add_argument("--batch", type=int, default=1000, help="items per publish, at most")
    parser.add_argument("--source", choices=["auto", "emulator", "replay", "paced"], default="auto")
    parser.add_argument(
        "--modes", default="batched-lua,batched-pipeline,service,naive", help="comma-separated"
    )
    parser.add_argument("--codecs", default="json,msgpack")
    parser.add_argument("--profile", metavar="MODE[:CODEC]", help="cProfile one worker")
    parser.add_argument("--rate", type=float, default=0.0, help="emulator events/s (0: firehose)")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git revision")
    parser.add_argument("--rounds", type=int, default=1, help="alternations with --baseline")
    parser.add_argument(
        "--no-msgspec",
        action="store_true",
        help="also run the current code with msgspec hidden (the collector's typed fast path off)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the emulator serves TLS, workers use wss:// (implied by the cryptofeed mode)",
    )
    parser.add_argument(
        "--transports",
        default="websockets",
        help="the service's upstream transports, each a variant of the current code in every "
        "round: websockets, picows, picows+uvloop (the worker on uvloop)",
    )
    parser.add_argument(
        "--read-coalesce",
        default="0",
        metavar="SECONDS[,SECONDS...]",
        help="the service's read coalescing (Collector(read_coalesce=), 0: off, at most 0.1), "
        "each value a variant combined with every --transports one (picows+uvloop/0.001)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    # internal
    parser.add_argument("--cryptofeed-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--codec", default="json", help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--compression", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="websockets", help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--serve-replay", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-paced", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.source == "paced" and opts.rate <= 0:
        parser.error("--source paced needs --rate N (events per second)")
    if opts.compression == "none":
        opts.compression = None
    opts.ca = None
    if "cryptofeed" in opts.modes.split(","):
        opts.tls = True
    if opts.cryptofeed_worker:
        cryptofeed_worker(opts)
    elif opts.serve_paced is not None:
        paced_server(opts.serve_paced, [f"KRW-{c}" for c in CODES[: opts.codes]], opts.rate)
    elif opts.serve_replay is not None:
        codes = [f"KRW-{c}" for c in CODES[: opts.codes]]
        asyncio.run(replay_server(opts.serve_replay, codes))
    elif opts.subscriber:
        subscriber(int(opts.subscriber[0]), opts.subscriber[1:])
    elif opts.worker:
        worker_main(opts)
    elif opts.profile:
        profile(opts)
    else:
        orchestrate(opts)


if __name__ == "__main__":
    main()
