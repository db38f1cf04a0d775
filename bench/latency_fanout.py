"""End-to-end latency and fan-out: emulator -> collector -> Redis -> N client processes.

    .venv/bin/python bench/latency_fanout.py            # full matrix, ~3-4 min, writes
                                                        # bench/results/latency_fanout.json
    .venv/bin/python bench/latency_fanout.py --quick    # smoke run (~1 min), prints only
    .venv/bin/python bench/latency_fanout.py --consumers 10 --modes payload --rate 2000
    .venv/bin/python bench/latency_fanout.py --consumers 10,50 --readers hiredis,redis-py \
        --firehose-consumers '' --direct-rate 0 --max-seconds 0   # readers compared

Processes, one session per (kind, consumers, consumer mode):

- **emulator** (this file, ``--role emulator``): ``emulator.Emulator`` in replay mode with an
  empty file, so nothing but the bench's own frames is sent, plus a pacing loop that calls
  ``await emu.inject(frame_bytes)`` at the target rate. Each frame is a DEFAULT ``trade`` of
  KRW-BTC in the current shape of tests/data/upbit-samples/trade.jsonl (``stream_type``
  REALTIME, a fresh ``sequential_id`` = ``sid_base + seq``, current ``timestamp``) with one
  extra field, ``"bench_sent_ns"``, written just before ``stream_type``;
- **collector**: ``python -m upbit_fanout.cli collector --redis-url ... --upstream
  ws://127.0.0.1:PORT/websocket/v1`` (the real command; json codec; ``UPBIT_FANOUT_*`` set by
  the bench: a unique ``KEY_PREFIX`` per session, log level WARNING);
- **N consumers** (``--role consumer``): ``client.FanoutClient`` (defaults: queue 10,000,
  ``overflow="block"``) subscribed to ``trade:KRW-BTC``, iterating ``async for item in
  client``. Mode ``data`` reads ``item.data`` (the decoded mapping with exact Decimals: the
  normal path); mode ``payload`` reads ``item.payload`` (the documented raw bytes, "a recorder
  that writes payload as it is pays neither") and finds the two integers with ``bytes.find``;
  ``--readers`` repeats every inject session per pub/sub reader of the consumers: ``hiredis``
  (the default reader), ``redis-py`` (``pubsub_reader="redis-py"``, the previous one: the
  baseline in the same run), ``hiredis+uvloop`` (the default reader on uvloop's event loop);
- **tap** (``--role tap``, unless ``--no-tap``): a minimal blocking RESP subscriber on the same
  channel, stamping receipt per ``recv``. It splits the latency at Redis (sender -> Redis ->
  a bare socket vs. -> the client library) and tells the collector's drops (``up``) from a
  consumer's own losses (``own``);
- Redis: the shared server on 127.0.0.1:6379 (neither started nor pinned by the bench); keys
  under the session's prefix are deleted at the end.

Clock. ``time.clock_gettime_ns(time.CLOCK_MONOTONIC)`` everywhere: one clock for every process
on a Linux machine. The SEND stamp is taken in the emulator's pacing loop immediately before the
frame bytes are built and ``emu.inject`` is called; inject then parses the frame, matches it,
compresses it for the collector's connection (permessage-deflate, which the collector offers and
Upbit accepts) and ``transport.write``s it before returning, synchronously, so the stamp
precedes the socket write by the inject cost, which is measured (``inject_us``) and included.
The RECEIPT stamp is taken in the consumer right when ``async for`` yields the event, before any
decoding. Latency = receipt - send, per event, per consumer.

Phases of an inject session: ``paced`` (``--rate`` events/s, in bursts: asyncio sleeps have 1 ms
granularity, so the frames due in each ms go back to back, each with its own stamp) and ``max``
(no pacing: batches of 64 injects, waiting only when the collector's socket is backlogged).
Measurement windows follow a warm-up; losses are counted per consumer over the window's
sequence range. CPU per event comes from /proc/PID/stat (utime + stime) of the collector and
of every consumer, sampled when the sender marks the window's edges; /proc/stat gives the
machine's busy time, so CPU used by processes that are not ours is reported too.

Extra sessions: ``firehose`` (the emulator's own ``rate=0`` simulation, for the per-consumer
throughput when inject is the bottleneck; no latency: its frames carry only ms timestamps; no
tap, which would cost the others CPU at that rate) and ``direct`` (a raw RESP publisher in place
of emulator + collector: 1 consumer at ``--direct-rate``, the client's own ceiling against the
50,000 events/s target, and 10 consumers at ``--rate``, the Redis + client share of the latency).

Pinning (2 cores): collector on the first CPU, emulator (or publisher) on the last, consumers,
tap and Redis left to the scheduler; ``--no-pin`` disables it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeAlias
from urllib.parse import urlsplit

import redis as sync_redis
import websockets

from upbit_fanout.subscriptions.jsontext import dumps_exact, loads_exact
from upbit_fanout.subscriptions.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "upbit-samples"
RESULTS = ROOT / "bench" / "results" / "latency_fanout.json"

CODE = "KRW-BTC"
TOPIC = f"trade:{CODE}"
SENT_KEY = b'"bench_sent_ns":'
SID_KEY = b'"sequential_id":'
MAX_BATCH = 64
TARGET_P99_MS = 2.0  # consumers reading payload
TARGET_P99_DATA_MS = 5.0  # consumers decoding every event (item.data)
READERS = ("hiredis", "redis-py", "hiredis+uvloop")
TARGET_CONSUMER_RATE = 50_000
MONO = time.CLOCK_MONOTONIC

# sids, sent stamps, receipt stamps (a string: array is subscriptable only from Python 3.12)
Columns: TypeAlias = "tuple[array[int], array[int], array[int]]"


def now_ns() -> int:
    return time.clock_gettime_ns(MONO)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- the frames ----------------------------------------------------------------------------------

_MARKS = {
    "timestamp": 9_111_111_111_111,
    "trade_timestamp": 9_222_222_222_222,
    "sequential_id": 9_333_333_333_333_333_333,
    "bench_sent_ns": 9_444_444_444_444_444_444,
}


class TradeFrames:
    """DEFAULT trade frames of KRW-BTC built from a sample line, with per-frame fields."""

    def __init__(self) -> None:
        line = next(
            raw
            for raw in (SAMPLES / "trade.jsonl").read_bytes().splitlines()
            if raw.startswith(b'{"type":"trade"') and b'"code":"KRW-BTC"' in raw
        )
        sample = loads_exact(line)
        now = dt.datetime.now(dt.UTC)
        obj: dict[str, Any] = {}
        for key, value in sample.items():
            if key == "stream_type":
                obj["bench_sent_ns"] = _MARKS["bench_sent_ns"]
            obj[key] = _MARKS.get(key, value)
        obj["trade_date"] = now.strftime("%Y-%m-%d")
        obj["trade_time"] = now.strftime("%H:%M:%S")
        obj["stream_type"] = "REALTIME"
        raw = dumps_exact(obj)
        by_text = {str(mark).encode(): name for name, mark in _MARKS.items()}
        pattern = b"|".join(re.escape(text) for text in by_text)
        pieces = re.split(b"(" + pattern + b")", raw)
        self.pieces: list[bytes] = pieces[0::2]
        self.fields: list[str] = [by_text[p] for p in pieces[1::2]]
        assert self.fields == ["timestamp", "trade_timestamp", "sequential_id", "bench_sent_ns"]

    def build(self, sid: int, sent_ns: int) -> bytes:
        p = self.pieces
        ms = b"%d" % (time.time_ns() // 1_000_000)
        return b"".join((p[0], ms, p[1], ms, p[2], b"%d" % sid, p[3], b"%d" % sent_ns, p[4]))


# -- role: emulator --------------------------------------------------------------------------------


async def emulator_role(opts: argparse.Namespace) -> None:
    from upbit_fanout.emulator import Emulator  # noqa: PLC0415 - the consumers never import it

    frames = TradeFrames()
    kwargs: dict[str, Any] = {
        "port": 0,
        "seed": 1,
        "idle_timeout": 3600.0,
        "admin": False,
        "compression": None if opts.compression == "none" else "deflate",
    }
    if opts.kind == "firehose":
        kwargs["rate"] = 0
    else:  # replay mode with an empty file: no simulated event, no invented snapshot
        kwargs.update(rate=1, replay=os.devnull)
    async with Emulator(**kwargs) as emu:
        watch_gc()
        state = {"seq": 0, "sid_base": (time.time_ns() // 1_000_000) * 10_000}

        async def inject(seq: int, sent: int) -> int:
            return await emu.inject(frames.build(state["sid_base"] + seq, sent))

        async def drain() -> None:  # the firehose's own back-pressure rule
            for conn in emu.connections:
                if conn.backlogged:
                    await conn.drain()

        emit({"port": emu.port, "sid_base": state["sid_base"]})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["cmd"] == "wait":
                # the emulator has no event for "a subscription changed": poll it
                while not any(  # noqa: ASYNC110
                    sub is not None and ("trade", CODE) in sub.realtime
                    for sub in emu.subscriptions().values()
                ):
                    await asyncio.sleep(0.01)
                emit({"subscribed": True})
            elif cmd["cmd"] == "phase" and opts.kind == "firehose":
                emit(await firehose_phase(emu, cmd))
            elif cmd["cmd"] == "phase":
                result, state["seq"] = await paced_phase(inject, drain, state["seq"], cmd)
                result["unmatched"] = result.pop("zero")
                emit(result)
            elif cmd["cmd"] == "end":
                for _ in range(3):  # bench_sent_ns = 0 ends the consumers
                    await inject(state["seq"], 0)
                    state["seq"] += 1
                    await asyncio.sleep(0.02)
                emit({"ended": True, "counters": dict(emu.counters)})
            else:
                return


_GC: dict[str, Any] = {"started": 0, "pauses": []}


def watch_gc() -> None:
    """Record the sender's garbage-collection pauses (they delay sends: reported, not hidden)."""

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _GC["started"] = time.perf_counter_ns()
        elif info.get("generation") == 2:
            _GC["pauses"].append(time.perf_counter_ns() - _GC["started"])

    gc.callbacks.append(callback)


async def paced_phase(
    send: Callable[[int, int], Awaitable[int]],
    after_burst: Callable[[], Awaitable[None]],
    seq: int,
    cmd: dict[str, Any],
) -> tuple[dict[str, Any], int]:
    """Send ``rate`` frames per second (0: as fast as possible) for warmup + seconds.

    ``send(seq, sent_ns)`` is called with the SEND stamp taken just before; ``after_burst`` after
    each burst (the frames due since the last one; ``MAX_BATCH`` frames at rate 0). Emits a mark
    line at each edge of the measuring window (the orchestrator samples CPU times there).
    Returns the phase's figures and the next sequence number.
    """
    rate = float(cmd["rate"])
    clock = now_ns
    t0 = clock()
    t_start = t0 + int(cmd["warmup"] * 1e9)
    t_end = t_start + int(cmd["seconds"] * 1e9)
    interval = 1e9 / rate if rate > 0 else 0.0
    first = seq
    start_seq = -1
    tw0 = cpu0 = 0
    costs = array("q")
    zero = 0
    _GC["pauses"].clear()
    while True:
        now = clock()
        if start_seq < 0 and now >= t_start:
            start_seq, tw0, cpu0 = seq, now, time.process_time_ns()
            emit({"mark": "start", "t": now, "seq": seq})
        if now >= t_end:
            break
        count = first + int((now - t0) / interval) + 1 - seq if rate > 0 else MAX_BATCH
        measuring = start_seq >= 0
        for _ in range(count):
            sent = clock()
            if not await send(seq, sent):
                zero += 1
            if measuring:
                costs.append(clock() - sent)
            seq += 1
        await after_burst()
        if rate > 0:
            # asyncio sleeps have 1 ms granularity (epoll): the frames due meanwhile form a burst
            await asyncio.sleep(max(0.0, (t0 + (seq - first) * interval - clock()) / 1e9))
        else:
            await asyncio.sleep(0)
    tw1, cpu1 = clock(), time.process_time_ns()
    emit({"mark": "end", "t": tw1, "seq": seq})
    sent_count = seq - start_seq
    ordered = sorted(costs)
    return {
        "phase": cmd["name"],
        "offered_rate": rate or None,
        "start_seq": start_seq,
        "end_seq": seq,
        "t_start": tw0,
        "t_end": tw1,
        "sent": sent_count,
        "sent_per_s": round(sent_count / ((tw1 - tw0) / 1e9)),
        "inject_us": _summary_us(ordered),
        "sender_cpu_us_per_event": round((cpu1 - cpu0) / 1e3 / max(sent_count, 1), 2),
        "sender_cpu_share": round((cpu1 - cpu0) / (tw1 - tw0), 3),
        "sender_gc2_pauses_ms": [round(x / 1e6, 1) for x in _GC["pauses"]][:20],
        "zero": zero,
    }, seq


async def firehose_phase(emu: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(cmd["warmup"])
    g0, t0, c0 = emu.counters["events_generated"], now_ns(), time.process_time_ns()
    emit({"mark": "start", "t": t0})
    await asyncio.sleep(cmd["seconds"])
    g1, t1, c1 = emu.counters["events_generated"], now_ns(), time.process_time_ns()
    emit({"mark": "end", "t": t1})
    sent = g1 - g0
    return {
        "phase": cmd["name"],
        "offered_rate": None,
        "t_start": t0,
        "t_end": t1,
        "sent": sent,
        "sent_per_s": round(sent / ((t1 - t0) / 1e9)),
        "sender_cpu_us_per_event": round((c1 - c0) / 1e3 / max(sent, 1), 2),
        "sender_cpu_share": round((c1 - c0) / (t1 - t0), 3),
        "firehose_waits": emu.counters["firehose_waits"],
    }


# -- role: direct publisher (no emulator, no collector) -----------------------------------------


async def publisher_role(opts: argparse.Namespace) -> None:
    """Publish stamped trade payloads on the topic's channel with raw RESP (no collector)."""
    frames = TradeFrames()
    url = urlsplit(opts.redis_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    channel = Keys(opts.prefix).channel(TOPIC).encode()
    head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel)
    pending: list[bytes] = []
    state = {"seq": 0, "sid_base": (time.time_ns() // 1_000_000) * 10_000}

    async def send(seq: int, sent: int) -> int:
        payload = frames.build(state["sid_base"] + seq, sent)
        pending.append(b"%s$%d\r\n%s\r\n" % (head, len(payload), payload))
        if len(pending) >= MAX_BATCH:
            await flush()
        return 1

    async def flush() -> None:
        if pending:
            sock.sendall(b"".join(pending))
            pending.clear()
        with contextlib.suppress(BlockingIOError):
            while sock.recv(1 << 16, socket.MSG_DONTWAIT):  # the ":N" replies
                pass

    emit({"port": 0, "sid_base": state["sid_base"]})
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        if cmd["cmd"] == "wait":
            emit({"subscribed": True})
        elif cmd["cmd"] == "phase":
            result, state["seq"] = await paced_phase(send, flush, state["seq"], cmd)
            result.pop("zero")
            emit(result)
        elif cmd["cmd"] == "end":
            for _ in range(3):
                await send(state["seq"], 0)
                state["seq"] += 1
            await flush()
            emit({"ended": True})
        else:
            break
    sock.close()


# -- role: consumer -------------------------------------------------------------------------------


async def consumer_role(opts: argparse.Namespace) -> tuple[dict[str, Any], list[array[int]]]:
    from upbit_fanout.client import FanoutClient  # noqa: PLC0415 - only the consumers need it

    sids, sents, recvs = array("q"), array("q"), array("q")
    info: dict[str, Any] = {"gaps": 0, "cached": 0, "ended": False, "no_stamp": 0}
    data_mode = opts.mode == "data"
    clock, mono = time.clock_gettime_ns, MONO
    sent_len, sid_len = len(SENT_KEY), len(SID_KEY)
    closers: list[asyncio.Task[None]] = []
    async with FanoutClient(
        opts.redis_url,
        key_prefix=opts.prefix,
        client_id=f"bench-{opts.index}",
        pubsub_reader="redis-py" if opts.reader == "redis-py" else "hiredis",
        read_coalesce=opts.read_coalesce,
    ) as client:
        await client.subscribe(TOPIC)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(
            signal.SIGTERM, lambda: closers.append(asyncio.ensure_future(client.aclose()))
        )
        print("ready", flush=True)
        async for item in client:
            t = clock(mono)
            if item.kind != "event":
                if item.kind == "gap":
                    info["gaps"] += 1
                continue
            if item.cached:
                info["cached"] += 1
                continue
            if data_mode:
                data = item.data
                sent = data.get("bench_sent_ns", -1)
                sid = data["sequential_id"]
            else:
                payload = item.payload
                at = payload.find(SENT_KEY)
                sent = int(payload[at + sent_len : payload.index(b",", at)]) if at >= 0 else -1
                at = payload.find(SID_KEY)
                sid = int(payload[at + sid_len : payload.index(b",", at)])
            if sent == 0:
                info["ended"] = True
                break
            sids.append(sid)
            sents.append(sent)
            recvs.append(t)
        info["dropped"] = client.dropped
        info["reconnects"] = client.reconnects
    for task in closers:
        await task
    info["count"] = len(sids)
    return info, [sids, sents, recvs]


def consumer_main(opts: argparse.Namespace) -> None:
    if opts.reader.endswith("+uvloop"):
        import uvloop  # noqa: PLC0415 - optional

        info, columns = uvloop.run(consumer_role(opts))
    else:
        info, columns = asyncio.run(consumer_role(opts))
    with open(opts.out, "wb") as handle:
        for values in columns:
            values.tofile(handle)
    print(json.dumps(info), flush=True)


def tap_main(opts: argparse.Namespace) -> None:
    """A minimal blocking RESP subscriber: where the Redis hop ends, without the client library.

    Stamps every message with the time its bytes were read (one stamp per ``recv``), finds the
    two integers like the ``payload`` consumers, and stops at the end marker.
    """
    url = urlsplit(opts.redis_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    channel = Keys(opts.prefix).channel(TOPIC).encode()
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
    sids, sents, recvs = array("q"), array("q"), array("q")
    buffer = b""
    ready = False
    ended = False
    clock, mono = time.clock_gettime_ns, MONO
    sent_len, sid_len = len(SENT_KEY), len(SID_KEY)
    while not ended:
        chunk = sock.recv(1 << 20)
        t = clock(mono)
        if not chunk:
            break
        buffer += chunk
        pos = 0
        while True:  # *3 $7 message $n channel $m payload (RESP2)
            head = buffer.find(b"\r\n", pos)
            if head < 0:
                break
            count = int(buffer[pos + 1 : head])
            fields: list[bytes] = []
            at = head + 2
            for _ in range(count):
                end = buffer.find(b"\r\n", at)
                if end < 0 or buffer[at : at + 1] != b"$":
                    fields = []
                    break
                size = int(buffer[at + 1 : end])
                if end + 2 + size + 2 > len(buffer):
                    fields = []
                    break
                fields.append(buffer[end + 2 : end + 2 + size])
                at = end + 2 + size + 2
            if len(fields) != count:
                if count and buffer[at : at + 1] == b":":  # subscribe confirmation's integer
                    end = buffer.find(b"\r\n", at)
                    if end < 0:
                        break
                    pos = end + 2
                    if not ready:
                        ready = True
                        print("ready", flush=True)
                    continue
                break
            pos = at
            if fields[0] != b"message":
                continue
            payload = fields[2]
            found = payload.find(SENT_KEY)
            sent = int(payload[found + sent_len : payload.index(b",", found)]) if found >= 0 else -1
            if sent == 0:
                ended = True
                break
            found = payload.find(SID_KEY)
            sids.append(int(payload[found + sid_len : payload.index(b",", found)]))
            sents.append(sent)
            recvs.append(t)
        buffer = buffer[pos:]
    sock.close()
    with open(opts.out, "wb") as handle:
        for values in (sids, sents, recvs):
            values.tofile(handle)
    print(json.dumps({"count": len(sids), "ended": ended}), flush=True)


# -- the orchestrator ------------------------------------------------------------------------------


class LineReader:
    """Lines from a child's stdout with a timeout (select + os.read, no buffered file)."""

    def __init__(self, stream: IO[bytes] | None, name: str) -> None:
        assert stream is not None
        self.fd = stream.fileno()
        self.name = name
        self.buffer = b""

    def line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no output within {timeout:g} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def json(self, timeout: float) -> dict[str, Any]:
        return dict(json.loads(self.line(timeout)))


def cpu_ns(pid: int) -> int | None:
    """utime + stime of a process (all threads), in ns (10 ms resolution)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cpu: int, enabled: bool) -> None:
    if enabled and cpu in os.sched_getaffinity(0):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


class Session:
    """One emulator (or publisher), one collector (unless direct), N consumers."""

    def __init__(
        self,
        opts: argparse.Namespace,
        kind: str,
        consumers: int,
        mode: str,
        rate: float,
        *,
        reader: str = "hiredis",
    ) -> None:
        self.opts = opts
        self.reader = reader
        self.rate = rate
        self.kind = kind
        self.n = consumers
        self.mode = mode
        self.prefix = f"bench-lf-{os.getpid()}-{secrets.token_hex(4)}"
        self.keys = Keys(self.prefix)
        self.tmp = Path(tempfile.mkdtemp(prefix="latency_fanout-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sender: subprocess.Popen[bytes] | None = None
        self.collector: subprocess.Popen[bytes] | None = None
        self.consumers: list[subprocess.Popen[bytes]] = []
        self.tap: subprocess.Popen[bytes] | None = None
        self.logs: list[IO[bytes]] = []
        self.redis = sync_redis.Redis.from_url(opts.redis_url)
        self.redis_pid: int | None = opts.redis_pid

    def _spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, cwd=ROOT, **kwargs)
        self.procs.append(proc)
        return proc

    def _log(self, name: str) -> IO[bytes]:
        handle = (self.tmp / f"{name}.log").open("wb")
        self.logs.append(handle)
        return handle

    def run(self) -> dict[str, Any]:
        opts = self.opts
        first, last = cpus()[0], cpus()[-1]
        role = "publisher" if self.kind == "direct" else "emulator"
        me = [sys.executable, __file__, "--redis-url", opts.redis_url, "--prefix", self.prefix]
        self.sender = self._spawn(
            [*me, "--role", role, "--kind", self.kind, "--compression", opts.compression],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log(role),
        )
        pin(self.sender.pid, last, opts.pin)
        sender = LineReader(self.sender.stdout, role)
        hello = sender.json(30)
        if self.kind != "direct":
            env = {k: v for k, v in os.environ.items() if not k.startswith("UPBIT_FANOUT_")}
            env.update(
                UPBIT_FANOUT_KEY_PREFIX=self.prefix,
                UPBIT_FANOUT_LOG_LEVEL="WARNING",
                UPBIT_FANOUT_UPSTREAM_TRANSPORT=opts.collector_transport,
                UPBIT_FANOUT_EVENT_LOOP=opts.collector_loop,
                UPBIT_FANOUT_READ_COALESCE=str(opts.collector_coalesce),
            )
            cli = [sys.executable, "-m", "upbit_fanout.cli"]
            if opts.profile_collector:
                cli = [sys.executable, "-m", "cProfile", "-o", opts.profile_collector, *cli[1:]]
            self.collector = self._spawn(
                [
                    *cli,
                    "collector",
                    "--redis-url",
                    opts.redis_url,
                    "--upstream",
                    f"ws://127.0.0.1:{hello['port']}/websocket/v1",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=self._log("collector"),
            )
            pin(self.collector.pid, first, opts.pin)
        tap_reader = None
        if opts.tap and self.kind != "firehose":  # at 60,000/s it would cost the others CPU
            self.tap = self._spawn(
                [*me, "--role", "tap", "--out", str(self.tmp / "tap.bin")],
                stdout=subprocess.PIPE,
                stderr=self._log("tap"),
            )
            tap_reader = LineReader(self.tap.stdout, "tap")
            if tap_reader.line(30) != b"ready":
                raise RuntimeError("the tap subscriber did not start")
        for index in range(self.n):
            args = [*me, "--role", "consumer", "--mode", self.mode, "--index", str(index)]
            args += ["--reader", self.reader, "--read-coalesce", str(opts.consumer_coalesce)]
            args += ["--out", str(self.tmp / f"c{index}.bin")]
            if index == 0 and opts.profile_consumer:
                args = [sys.executable, "-m", "cProfile", "-o", opts.profile_consumer, *args[1:]]
            consumer = self._spawn(args, stdout=subprocess.PIPE, stderr=self._log(f"c{index}"))
            if opts.consumer_nice:
                os.setpriority(os.PRIO_PROCESS, consumer.pid, opts.consumer_nice)
            self.consumers.append(consumer)
        readers = [LineReader(p.stdout, f"consumer {i}") for i, p in enumerate(self.consumers)]
        for reader in readers:
            if reader.line(120) != b"ready":
                raise RuntimeError(f"{reader.name} did not start")
        if self.kind != "direct":
            self._wait(lambda: TOPIC.encode() in self.redis.smembers(self.keys.union), 30)
        else:
            channel = self.keys.channel(TOPIC)
            wanted = self.n + (self.tap is not None)
            self._wait(lambda: self.redis.pubsub_numsub(channel)[0][1] >= wanted, 30)
        assert self.sender.stdin is not None
        self._command({"cmd": "wait"})
        sender.json(30)

        pids = {
            "collector": self.collector.pid if self.collector else None,
            "sender": self.sender.pid,
            "tap": self.tap.pid if self.tap else None,
            "redis": self.redis_pid,
        }
        pids.update({f"c{i}": p.pid for i, p in enumerate(self.consumers)})
        phases: list[dict[str, Any]] = []
        for cmd in self._phases():
            self._command(cmd)
            samples: list[dict[str, Any]] = []
            while True:
                reply = sender.json(cmd["warmup"] + cmd["seconds"] + 60)
                if "mark" in reply:
                    samples.append(
                        {
                            "t": now_ns(),
                            "busy": machine_busy_ns(),
                            "cpu": {name: cpu_ns(p) for name, p in pids.items() if p},
                        }
                    )
                    continue
                reply["samples"] = samples
                phases.append(reply)
                break
            time.sleep(0.3)  # let the pipeline drain between phases
        self._command({"cmd": "end"})
        ended = sender.json(30)

        infos: list[dict[str, Any]] = []
        deadline = time.monotonic() + opts.drain_timeout
        for proc in self.consumers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        for index, (proc, reader) in enumerate(zip(self.consumers, readers, strict=True)):
            try:
                proc.wait(15)
                infos.append(json.loads(reader.line(5)))
            except (subprocess.TimeoutExpired, TimeoutError, RuntimeError, ValueError) as exc:
                infos.append({"error": f"consumer {index}: {exc!r}", "count": 0})
        tap_info: dict[str, Any] = {"count": 0}
        if self.tap is not None and tap_reader is not None:
            try:
                self.tap.wait(max(0.1, deadline - time.monotonic()))
                tap_info = json.loads(tap_reader.line(5))
            except (subprocess.TimeoutExpired, TimeoutError, RuntimeError, ValueError):
                self.tap.kill()
                self.tap.wait()
        status: dict[str, str] = {}
        if self.collector is not None:
            time.sleep(1.2)  # P:status is written at most once a second
            raw = self.redis.hgetall(self.keys.status)
            status = {k.decode(): v.decode() for k, v in raw.items()}
        tap = self._load("tap", tap_info.get("count", 0)) if self.tap is not None else None
        runs = self._analyse(hello["sid_base"], phases, infos, tap)
        if self.kind == "firehose":
            for phase in runs:
                phase["upstream_lost_approx"] = int(status.get("dropped_events") or 0)
        return {
            "kind": self.kind,
            "consumers": self.n,
            "mode": self.mode,
            "reader": self.reader,
            "key_prefix": self.prefix,
            "phases": runs,
            "collector_status": {
                k: status.get(k)
                for k in ("events_total", "dropped_events", "malformed_frames", "reconnects")
            },
            "emulator_counters": {
                k: v
                for k, v in ended.get("counters", {}).items()
                if k in ("injected", "slow_consumer_drops", "firehose_waits", "events_generated")
            },
            "consumer_gaps": sum(info.get("gaps", 0) for info in infos),
            "consumer_reconnects": sum(info.get("reconnects", 0) for info in infos),
            "consumers_ended_normally": sum(bool(info.get("ended")) for info in infos),
            "errors": [info["error"] for info in infos if "error" in info],
        }

    def _phases(self) -> list[dict[str, Any]]:
        opts = self.opts
        if self.kind == "firehose":
            return [
                {
                    "cmd": "phase",
                    "name": "firehose",
                    "warmup": opts.warmup,
                    "seconds": opts.firehose_seconds,
                }
            ]
        if self.kind == "direct":
            return [
                {
                    "cmd": "phase",
                    "name": f"direct {self.rate:g}/s",
                    "rate": self.rate,
                    "warmup": 1.0,
                    "seconds": opts.direct_seconds,
                }
            ]
        phases = [
            {
                "cmd": "phase",
                "name": f"paced {opts.rate:g}/s",
                "rate": opts.rate,
                "warmup": opts.warmup,
                "seconds": opts.seconds,
            }
        ]
        if opts.max_seconds > 0:
            phases.append(
                {
                    "cmd": "phase",
                    "name": "max",
                    "rate": 0,
                    "warmup": 1.0,
                    "seconds": opts.max_seconds,
                }
            )
        return phases

    def _command(self, cmd: dict[str, Any]) -> None:
        assert self.sender is not None
        assert self.sender.stdin is not None
        self.sender.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.sender.stdin.flush()

    @staticmethod
    def _wait(predicate: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the collector did not subscribe trade:KRW-BTC in time")
            time.sleep(0.02)

    def _load(self, index: int | str, count: int) -> Columns:
        values = (array("q"), array("q"), array("q"))
        path = self.tmp / (f"c{index}.bin" if isinstance(index, int) else f"{index}.bin")
        if count and path.exists():
            with path.open("rb") as handle:
                for target in values:
                    target.fromfile(handle, count)
        return values

    def _analyse(
        self,
        sid_base: int,
        phases: list[dict[str, Any]],
        infos: list[dict[str, Any]],
        tap: Columns | None,
    ) -> list[dict[str, Any]]:
        """Per phase: latency percentiles over every consumer's window events, per-consumer
        rates, losses (upstream = not even the tap got it; own = the tap got it, the consumer
        did not), CPU per event and CPU shares."""
        data = [self._load(i, info.get("count", 0)) for i, info in enumerate(infos)]
        out = []
        for phase in phases:
            samples = phase.pop("samples")
            result = dict(phase)
            window = (phase["t_end"] - phase["t_start"]) / 1e9
            firehose = self.kind == "firehose"
            # the window's events as a sid range [lo, hi)
            if not firehose:
                lo, hi = sid_base + phase["start_seq"], sid_base + phase["end_seq"]
                expected = phase["end_seq"] - phase["start_seq"]
            else:
                # no stamps, no tap: the sid range any consumer received during the emulator's
                # window; a consumer's own losses are what others got in that range and it did
                # not (the collector's drops, for the whole session, are added by run())
                firsts, lasts = [], []
                for sids, _, recvs in data:
                    i = bisect_left(recvs, phase["t_start"])
                    j = bisect_right(recvs, phase["t_end"])
                    if j > i:
                        firsts.append(sids[i])
                        lasts.append(sids[j - 1])
                lo, hi = (min(firsts), max(lasts) + 1) if firsts else (0, 0)
                union: set[int] = set()
                for sids, _, _ in data:
                    union.update(sids[bisect_left(sids, lo) : bisect_left(sids, hi)])
                expected = len(union)
            delivered: int | None = None  # what Redis delivered (the tap's count in the range)
            if tap is not None:
                delivered = bisect_left(tap[0], hi) - bisect_left(tap[0], lo)
                result["upstream_lost"] = expected - delivered
                stamps = _window_latencies(tap, lo, hi)
                if stamps:
                    result["tap_latency_ms"] = _latency_summary(sorted(stamps))
            per: list[dict[str, Any]] = []
            latencies: list[int] = []
            for index, columns in enumerate(data):
                sids, _, recvs = columns
                got = bisect_left(sids, hi) - bisect_left(sids, lo)
                entry: dict[str, Any] = {"consumer": index, "received": got}
                entry["lost"] = max(0, expected - got)
                entry["own_lost"] = max(0, (delivered if delivered is not None else expected) - got)
                if firehose:  # throughput over the window itself
                    count = bisect_right(recvs, phase["t_end"]) - bisect_left(
                        recvs, phase["t_start"]
                    )
                    entry["recv_per_s"] = round(count / window)
                elif got > 1:  # over the consumer's own receiving span of the window's events:
                    i = bisect_left(sids, lo)  # a lagging consumer shows its real rate
                    span = (recvs[i + got - 1] - recvs[i]) / 1e9
                    entry["recv_per_s"] = round(got / span) if span > 0 else None
                if not firehose and got:
                    own = sorted(_window_latencies(columns, lo, hi))
                    latencies.extend(own)
                    entry["p50_ms"] = _pct_ms(own, 0.5)
                    entry["p99_ms"] = _pct_ms(own, 0.99)
                    entry["max_ms"] = round(own[-1] / 1e6, 3)
                if len(samples) == 2:
                    a, b = samples
                    name = f"c{index}"
                    if a["cpu"].get(name) is not None and b["cpu"].get(name) is not None:
                        events = bisect_right(recvs, b["t"]) - bisect_right(recvs, a["t"])
                        used = b["cpu"][name] - a["cpu"][name]
                        entry["cpu_us_per_event"] = (
                            round(used / 1e3 / events, 2) if events > 0 else None
                        )
                        entry["cpu_share"] = round(used / (b["t"] - a["t"]), 3)
                per.append(entry)
            result["expected_per_consumer"] = expected
            if latencies:
                latencies.sort()
                result["latency_ms"] = _latency_summary(latencies)
                result["worst_consumer_p99_ms"] = max(e.get("p99_ms", 0) for e in per)
            rates = [e["recv_per_s"] for e in per if e.get("recv_per_s")]
            result["recv_per_s_per_consumer"] = {
                "min": min(rates, default=None),
                "mean": round(sum(rates) / len(rates)) if rates else None,
                "max": max(rates, default=None),
            }
            result["lost_total"] = sum(e["lost"] for e in per)
            result["own_lost_total"] = sum(e["own_lost"] for e in per)
            result["consumers_with_losses"] = sum(1 for e in per if e["lost"])
            cpu_events = [e["cpu_us_per_event"] for e in per if e.get("cpu_us_per_event")]
            result["client_cpu_us_per_event"] = (
                round(sum(cpu_events) / len(cpu_events), 2) if cpu_events else None
            )
            result["client_cpu_share_total"] = round(sum(e.get("cpu_share", 0) for e in per), 2)
            if len(samples) == 2:
                result.update(_shares(samples, phase["sent"], self.collector is not None))
            if len(per) > 10:  # keep the file small: the three slowest consumers
                per = sorted(per, key=lambda e: -(e.get("p99_ms") or -e.get("recv_per_s", 0)))
                result["consumers_detail_note"] = f"the 3 slowest of {len(per)} consumers"
                per = per[:3]
            result["consumers_detail"] = per
            out.append(result)
        return out

    def close(self) -> None:
        if self.collector is not None and self.collector.poll() is None:
            self.collector.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.collector.wait(10)
        if self.sender is not None and self.sender.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._command({"cmd": "quit"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sender.wait(10)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with contextlib.suppress(sync_redis.RedisError):
            stale = list(self.redis.scan_iter(match=f"{self.prefix}*", count=1000))
            if stale:
                self.redis.delete(*stale)
        self.redis.close()
        for handle in self.logs:
            handle.close()
        if self.opts.keep_logs:
            print(f"  logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _window_latencies(columns: Columns, lo: int, hi: int) -> list[int]:
    sids, sents, recvs = columns
    i, j = bisect_left(sids, lo), bisect_left(sids, hi)
    return [recvs[k] - sents[k] for k in range(i, j)]


def _shares(samples: list[dict[str, Any]], sent: int, collector: bool) -> dict[str, Any]:
    """CPU shares over the window (1.0 = one core): ours, Redis's, the machine's, the rest."""
    a, b = samples
    wall = b["t"] - a["t"]

    def used(name: str) -> int:
        x, y = a["cpu"].get(name), b["cpu"].get(name)
        return y - x if x is not None and y is not None else 0

    ours = sum(used(name) for name in b["cpu"] if name != "redis")
    machine = (b["busy"] - a["busy"]) if a.get("busy") is not None else None
    result: dict[str, Any] = {
        "cpu_share": {
            "ours": round(ours / wall, 2),
            "redis": round(used("redis") / wall, 2) if "redis" in b["cpu"] else None,
            "machine": round(machine / wall, 2) if machine is not None else None,
            "other_processes": round((machine - ours - used("redis")) / wall, 2)
            if machine is not None
            else None,
        }
    }
    if collector:
        result["collector_cpu_us_per_event"] = round(used("collector") / 1e3 / max(sent, 1), 2)
        result["collector_cpu_share"] = round(used("collector") / wall, 3)
    return result


def machine_busy_ns() -> int | None:
    """CPU time spent not idle, all CPUs together, from /proc/stat (ns)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _latency_summary(ordered: list[int]) -> dict[str, float]:
    return {
        "p50": _pct_ms(ordered, 0.5),
        "p99": _pct_ms(ordered, 0.99),
        "p99.9": _pct_ms(ordered, 0.999),
        "max": round(ordered[-1] / 1e6, 3),
        "mean": round(sum(ordered) / len(ordered) / 1e6, 3),
        "events": len(ordered),
    }


def _pct_ms(ordered: list[int], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return round(ordered[index] / 1e6, 3)


def _summary_us(ordered: Iterable[int]) -> dict[str, float] | None:
    values = list(ordered)
    if not values:
        return None
    return {
        "p50": round(values[len(values) // 2] / 1e3, 1),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))] / 1e3, 1),
        "max": round(values[-1] / 1e3, 1),
    }


def _print_header() -> None:
    print(
        f"{'session':<8} {'N':>3} {'mode':<22} {'phase':<13} {'sent/s':>7} {'recv/s/consumer':>15} "
        f"{'lost':>11} | {'consumer latency, ms':^27} | {'tap, ms':^11} | {'inject':>6} "
        f"{'client':>6} {'collector':>9}"
    )
    print(
        f"{'':<8} {'':>3} {'':<22} {'':<13} {'':>7} {'min / mean':>15} {'up / own':>11} | "
        f"{'p50':>6} {'p99':>6} {'p99.9':>6} {'max':>6} | {'p50':>5} {'p99':>5} | "
        f"{'p50 µs':>6} {'µs/ev':>6} {'µs/ev':>9}"
    )


def _print_phase(run: dict[str, Any], phase: dict[str, Any]) -> None:
    rates = phase["recv_per_s_per_consumer"]
    lat = phase.get("latency_ms") or {}
    tap = phase.get("tap_latency_ms") or {}
    inject = (phase.get("inject_us") or {}).get("p50")

    def num(value: Any, width: int, fmt: str = ",.0f") -> str:
        return f"{value:>{width}{fmt}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

    recv = f"{num(rates['min'], 6)} / {num(rates['mean'], 6)}"
    upstream = phase.get("upstream_lost", phase.get("upstream_lost_approx"))
    lost = f"{num(upstream, 5)}/{num(phase['own_lost_total'], 5)}"
    print(
        f"{run['kind']:<8} {run['consumers']:>3} "
        f"{run['mode'] + ' ' + run.get('reader', 'hiredis'):<22} {phase['phase']:<13} "
        f"{num(phase['sent_per_s'], 7)} {recv:>15} {lost:>11} | "
        f"{num(lat.get('p50'), 6, '.2f')} {num(lat.get('p99'), 6, '.2f')} "
        f"{num(lat.get('p99.9'), 6, '.2f')} {num(lat.get('max'), 6, '.1f')} | "
        f"{num(tap.get('p50'), 5, '.2f')} {num(tap.get('p99'), 5, '.2f')} | "
        f"{num(inject, 6, '.0f')} {num(phase.get('client_cpu_us_per_event'), 6, '.1f')} "
        f"{num(phase.get('collector_cpu_us_per_event'), 9, '.1f')}",
        flush=True,
    )


def _verdicts(report: dict[str, Any], opts: argparse.Namespace) -> list[str]:
    lines = []
    for run in report["runs"]:
        if run.get("kind") not in ("inject", "direct") or run.get("consumers") != 10:
            continue
        for phase in run["phases"]:
            if phase.get("offered_rate") == opts.rate and phase.get("latency_ms"):
                p99 = phase["latency_ms"]["p99"]
                target = TARGET_P99_DATA_MS if run["mode"] == "data" else TARGET_P99_MS
                verdict = "met" if p99 < target and not phase["lost_total"] else "NOT met"
                where = "end to end" if run["kind"] == "inject" else "Redis + client only"
                lines.append(
                    f"p99 < {target:g} ms at {opts.rate:g}/s with 10 consumers, {where} "
                    f"({run['mode']}, {run.get('reader', 'hiredis')} reader): p99 {p99:.2f} ms "
                    "(tap "
                    f"{(phase.get('tap_latency_ms') or {}).get('p99', '-')}), lost "
                    f"{phase['lost_total']} -> {verdict}"
                )
    for run in report["runs"]:
        if run.get("consumers") != 1 or "phases" not in run:
            continue
        for phase in run["phases"]:
            if run["kind"] == "inject" and phase["phase"] != "max":
                continue
            received = phase["recv_per_s_per_consumer"]["min"] or 0
            sent = phase["sent_per_s"]
            upstream = phase.get("upstream_lost", phase.get("upstream_lost_approx")) or 0
            if run["kind"] == "firehose":  # the drops are counted over the whole session
                delivered = phase["recv_per_s_per_consumer"]["max"] or 0
            else:
                delivered = round(sent * (1 - upstream / max(phase["sent"], 1)))
            kept_up = not phase["own_lost_total"] and received >= 0.98 * delivered
            if delivered < 0.98 * TARGET_CONSUMER_RATE:
                if run["kind"] == "direct":
                    continue
                verdict = (
                    f"not reached: the path upstream of the consumer delivered {delivered:,}/s "
                    f"(consumer {'kept up' if kept_up else 'did NOT keep up'})"
                )
            else:
                verdict = "met" if kept_up else "NOT met"
            lines.append(
                f"one consumer >= {TARGET_CONSUMER_RATE:,}/s ({run['kind']} {phase['phase']}, "
                f"{run['mode']}): {received:,}/s received, {sent:,}/s sent, lost upstream "
                f"{upstream:,}, by the consumer {phase['own_lost_total']:,} -> {verdict}"
            )
    return lines


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def orchestrate(opts: argparse.Namespace) -> int:
    host = urlsplit(opts.redis_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("only a loopback Redis is allowed")
    probe = sync_redis.Redis.from_url(opts.redis_url)
    try:
        server = probe.info("server")
    except sync_redis.RedisError as exc:
        raise SystemExit(f"Redis at {opts.redis_url} is not reachable: {exc}") from exc
    finally:
        probe.close()
    pid = server.get("process_id")
    opts.redis_pid = int(pid) if pid and Path(f"/proc/{pid}/stat").exists() else None
    cores = len(cpus())
    layout = (
        f"collector pinned to CPU {cpus()[0]}, emulator/publisher to CPU {cpus()[-1]}, "
        "consumers unpinned; redis-server (shared, not ours) unpinned"
        if opts.pin
        else "nothing pinned"
    )
    report: dict[str, Any] = {
        "benchmark": "latency_fanout",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cores": cores,
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "websockets": websockets.__version__,
            "redis_py": sync_redis.__version__,
            "redis_server": server.get("redis_version"),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "layout": layout,
        "clock": "CLOCK_MONOTONIC (time.clock_gettime_ns), shared by every process",
        "send_stamp": "emulator pacing loop, immediately before building the frame bytes and "
        "calling emu.inject (which parses, matches, deflates and transport.writes it "
        "synchronously: inject_us is that cost, included in the latency)",
        "receipt_stamp": "consumer, when `async for item in client` yields the event, before "
        "any decoding",
        "emulator_compression": opts.compression,
        "targets": {
            "p99_ms_at_paced_rate_with_10_consumers": TARGET_P99_MS,
            "one_consumer_events_per_s": TARGET_CONSUMER_RATE,
        },
        "settings": {
            k: getattr(opts, k)
            for k in (
                "rate",
                "seconds",
                "warmup",
                "max_seconds",
                "firehose_seconds",
                "direct_rate",
                "direct_seconds",
                "collector_transport",
                "collector_loop",
                "collector_coalesce",
                "consumer_coalesce",
            )
        },
        "note": "shared 2-core machine: other sessions' tests may run at the same time and use "
        "the same Redis; CPU per event is the steadiest figure",
        "runs": [],
    }
    print(
        f"latency_fanout: {cores} cores ({_cpu_model()}), {layout}; "
        f"emulator compression {opts.compression}; clock CLOCK_MONOTONIC"
    )
    print(
        f"targets: p99 < {TARGET_P99_MS:g} ms added at {opts.rate:g} events/s with 10 consumers; "
        f"one consumer keeps up with >= {TARGET_CONSUMER_RATE:,} events/s"
    )
    unknown = set(opts.readers) - set(READERS)
    if unknown:
        raise SystemExit(f"unknown reader(s) {sorted(unknown)}: choose from {', '.join(READERS)}")
    plan: list[tuple[str, int, str, float, str]] = [
        ("inject", n, mode, opts.rate, reader)
        for mode in opts.modes
        for n in opts.consumers
        for reader in opts.readers
    ]
    plan += [("firehose", n, "payload", 0.0, "hiredis") for n in opts.firehose_consumers]
    if opts.direct_rate > 0:
        plan += [("direct", 1, mode, opts.direct_rate, "hiredis") for mode in opts.direct_modes]
    if opts.baseline:
        plan += [("direct", 10, "payload", opts.rate, "hiredis")]
    _print_header()
    started = time.monotonic()
    for kind, n, mode, rate, reader in plan:
        session = Session(opts, kind, n, mode, rate, reader=reader)
        try:
            run = session.run()
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            print(f"{kind:<8} {n:>3} {mode + ' ' + reader:<22} FAILED: {exc}", flush=True)
            report["runs"].append(
                {"kind": kind, "consumers": n, "mode": mode, "reader": reader, "error": str(exc)}
            )
            continue
        finally:
            session.close()
        run["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
        report["runs"].append(run)
        for phase in run["phases"]:
            _print_phase(run, phase)
            share = phase.get("sender_cpu_share") or 0
            if share >= 0.85:
                print(f"{'':<8} note: the sender used {share:.0%} of a core in {phase['phase']}")
            other = (phase.get("cpu_share") or {}).get("other_processes") or 0
            if other >= 0.2:
                print(
                    f"{'':<8} note: other processes used {other:.1f} cores in {phase['phase']} "
                    "(figures disturbed)"
                )
        problems = [
            f"{run['consumer_gaps']} gaps" if run["consumer_gaps"] else "",
            f"collector dropped {run['collector_status'].get('dropped_events')}"
            if run["collector_status"].get("dropped_events") not in (None, "0")
            else "",
            f"{len(run['errors'])} consumer errors" if run["errors"] else "",
        ]
        if any(problems):
            print(f"{'':<8} note: {', '.join(p for p in problems if p)}", flush=True)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["verdicts"] = _verdicts(report, opts)
    print()
    for line in report["verdicts"]:
        print(line)
    print(f"elapsed {report['elapsed_s']:.0f} s")
    if opts.output:
        path = Path(opts.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (prints only)")
    parser.add_argument("--rate", type=float, default=5000.0, help="paced events/s")
    parser.add_argument("--consumers", type=_ints, default=[1, 10, 50], help="e.g. 1,10,50")
    parser.add_argument("--modes", type=_words, default=["data", "payload"], help="data,payload")
    parser.add_argument(
        "--readers",
        type=_words,
        default=["hiredis"],
        help=f"consumers' pub/sub reader per inject session, of {','.join(READERS)}",
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="paced measuring window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=5.0, help="0: no max phase")
    parser.add_argument("--firehose-consumers", type=_ints, default=[1, 10, 50], help="'' to skip")
    parser.add_argument("--firehose-seconds", type=float, default=5.0)
    parser.add_argument("--direct-rate", type=float, default=50_000.0, help="0 to skip")
    parser.add_argument("--direct-modes", type=_words, default=["payload", "data"])
    parser.add_argument("--direct-seconds", type=float, default=5.0)
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the direct run at --rate with 10 consumers (Redis + client only)",
    )
    parser.add_argument("--compression", choices=["deflate", "none"], default="deflate")
    parser.add_argument(
        "--collector-transport",
        choices=["websockets", "picows"],
        default="websockets",
        help="the collector's upstream transport (UPBIT_FANOUT_UPSTREAM_TRANSPORT)",
    )
    parser.add_argument(
        "--collector-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the collector's event loop (UPBIT_FANOUT_EVENT_LOOP)",
    )
    parser.add_argument(
        "--collector-coalesce",
        type=float,
        default=0.0,
        help="the collector's read coalescing, s (UPBIT_FANOUT_READ_COALESCE; 0: off)",
    )
    parser.add_argument(
        "--consumer-coalesce",
        type=float,
        default=0.0,
        help="the consumers' FanoutClient(read_coalesce=...), s (0: off)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    parser.add_argument(
        "--consumer-nice", type=int, default=0, help="nice value of the consumer processes"
    )
    parser.add_argument("--output", help=f"results JSON (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--no-tap",
        dest="tap",
        action="store_false",
        help="no raw RESP subscriber beside the consumers (it splits the latency at Redis)",
    )
    parser.add_argument("--profile-collector", metavar="FILE", help="cProfile the collector")
    parser.add_argument("--profile-consumer", metavar="FILE", help="cProfile consumer 0")
    # internal
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="inject", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="payload", help=argparse.SUPPRESS)
    parser.add_argument("--reader", default="hiredis", help=argparse.SUPPRESS)
    parser.add_argument("--read-coalesce", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    if "--quick" in sys.argv:  # shorter defaults; explicit flags still win
        parser.set_defaults(
            consumers=[1, 10],
            seconds=3.0,
            warmup=1.0,
            max_seconds=2.0,
            firehose_consumers=[1],
            firehose_seconds=3.0,
            direct_modes=["payload"],
            direct_seconds=3.0,
        )
    opts = parser.parse_args()
    if opts.role == "emulator":
        asyncio.run(emulator_role(opts))
        return 0
    if opts.role == "publisher":
        asyncio.run(publisher_role(opts))
        return 0
    if opts.role == "consumer":
        consumer_main(opts)
        return 0
    if opts.role == "tap":
        tap_main(opts)
        return 0
    if opts.output is None and not opts.quick:
        opts.output = str(RESULTS)
    return orchestrate(opts)


if __name__ == "__main__":
    sys.exit(main())
