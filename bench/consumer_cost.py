"""CPU per event of one consumer process, ours against raw redis-py, at three event rates.

    .venv/bin/python bench/consumer_cost.py             # ~4 min; writes bench/results/
                                                        # consumer_cost.json and consumer_cost.png
    .venv/bin/python bench/consumer_cost.py --quick     # smoke run, prints only
    .venv/bin/python bench/consumer_cost.py --plot-only # the plot again, from the JSON

What is measured: the consumer process's own CPU (``time.process_time``: user + system, every
thread) from its first event to its last, divided by the events it received. Nothing else runs in
the consumer: one topic, one channel, events read and dropped (``payload`` looked at, nothing
decoded) unless the variant says ``data`` (``item.data``: the exact-Decimal mapping) or
``typed`` (``item.typed``).

Load: this process publishes a real Upbit ticker (tests/data/upbit-samples/ticker.jsonl, written
compactly) on the topic's channel of the shared Redis at 127.0.0.1:6379 (a fresh key prefix per
run), paced from one thread with absolute deadlines. Each socket write carries ``per_write``
PUBLISH commands; Redis executes a write's commands in one event-loop turn and flushes the
subscriber's output once, so a consumer gets ``per_write`` events per wake-up (fewer if it falls
behind and Redis merges writes). Scenarios (rate x per write): 5,000/s x 1 (real Upbit traffic,
spread over time), 5,000/s x 5, 50,000/s x 50 (bursts).

Variants, run one after another for every scenario, rounds interleaved (``--rounds``), median
kept:

- ``fanout``: ``FanoutClient``, ``async for item in client`` (the default hiredis reader);
- ``fanout-batches``: the same, ``async for batch in client.batches()``;
- ``fanout-data`` / ``fanout-typed``: ``async for`` and ``item.data`` / ``item.typed``: what
  decoding costs on top;
- ``fanout-redis-py``: ``FanoutClient(..., pubsub_reader="redis-py")``, the previous reader;
- ``fanout-coalesce``: ``FanoutClient(..., read_coalesce=--coalesce)`` (1 ms by default), reading
  resting that long after a read that came soon after the previous one (subscriptions/
  coalesce.py): fewer wake-ups for up to that much added latency;
- ``redis-py``: raw redis-py asyncio, ``await pubsub.get_message(timeout=None)`` in a loop (the
  baseline that every number is compared with);
- ``floor``: no client at all, a bare asyncio BufferedProtocol with hiredis' Reader counting
  messages in its callback (no task, no iterator, no Event): what any asyncio consumer pays
  at least for the loop's wake-up and the socket read;
- ``floor-task``: the same protocol handing its messages to a deque and waking one task per
  read (a bare future, no client): the floor of any consumer that reads in a task of its own;
- ``*-uvloop``: the same on uvloop's event loop (``uvloop.run``), when uvloop is installed.

``--latency`` (a separate run; figures in bench/results/consumer_latency.json, no plot): every
write carries the publisher's ``time.monotonic_ns()`` in a fixed-width field of the payload
(``"bench_sent_ns"``, the same clock in every process of a Linux machine), and the ``fanout*``
variants stamp each event as ``async for`` yields it: p50, p99 and the maximum of receipt - send,
per variant. What ``read_coalesce`` adds in delay shows there; the field costs the consumer a
``bytes.find`` per event, so the CPU figures of such a run are not the cost run's.

Before the runs, ``client_hot_path_in_process`` times the client's own Python alone (the link's
``accept`` and the iterator, fed in process: no socket, no event-loop turn), so what is the
client's and what is the event loop's can be told apart.

The machine is small (2 cores) and usually shared: absolute microseconds move between runs, the
ratios against ``redis-py`` in the same run much less. The JSON records the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from upbit_fanout.subscriptions.jsontext import dumps_exact, loads_exact
from upbit_fanout.subscriptions.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SAMPLE = ROOT / "tests" / "data" / "upbit-samples" / "ticker.jsonl"
TOPIC = "ticker:KRW-BTC"
BASELINE = "redis-py"
SCENARIOS: list[tuple[int, int]] = [(5_000, 1), (5_000, 5), (50_000, 50)]
VARIANTS = [
    "fanout",
    "fanout-batches",
    "fanout-data",
    "fanout-typed",
    "fanout-redis-py",
    "fanout-coalesce",
    "redis-py",
    "fanout-uvloop",
    "fanout-coalesce-uvloop",
    "fanout-batches-uvloop",
    "redis-py-uvloop",
    "floor",
    "floor-task",
    "floor-uvloop",
]


STAMP_FIELD = b'"bench_sent_ns":"'
STAMP_WIDTH = 19  # digits of time.monotonic_ns(), zero-padded


def payload(*, stamped: bool = False) -> bytes:
    line = SAMPLE.read_text(encoding="utf-8").splitlines()[0]
    data = dumps_exact(loads_exact(line))
    if stamped:  # room for the send time, patched into every write (see --latency)
        data = b"{" + STAMP_FIELD + b"0" * STAMP_WIDTH + b'",' + data[1:]
    return data


# -- consumer (a subprocess per measurement) ------------------------------------------------------


async def consume(opts: argparse.Namespace) -> dict[str, Any]:
    variant: str = opts.variant.removesuffix("-uvloop")
    total: int = opts.count
    warm: int = opts.warm
    channel = Keys(opts.prefix).channel(TOPIC)
    state = {"n": 0, "t0": 0.0, "w0": 0.0}
    latencies: list[int] = []  # ns, --latency only

    def tick() -> bool:
        n = state["n"] = state["n"] + 1
        if n == warm:
            state["t0"] = time.process_time()
            state["w0"] = time.monotonic()
        return n >= total

    async def wait_end(task: asyncio.Task[None]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), opts.timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    if variant in ("floor", "floor-task"):
        import hiredis  # noqa: PLC0415 - each consumer process imports only its own variant

        loop = asyncio.get_running_loop()
        done = loop.create_future()
        queue: deque[Any] = deque()
        waiter: list[asyncio.Future[None]] = []

        class Floor(asyncio.BufferedProtocol):
            def __init__(self) -> None:
                self.buf = memoryview(bytearray(1 << 18))
                self.reader = hiredis.Reader()

            def get_buffer(self, sizehint: int) -> memoryview:
                return self.buf

            def buffer_updated(self, nbytes: int) -> None:
                self.reader.feed(self.buf, 0, nbytes)
                msg = self.reader.gets()
                while msg is not False:
                    if variant == "floor-task":
                        queue.append(msg)
                        if waiter:
                            waiter.pop().set_result(None)
                    elif msg[0] == b"message" and tick() and not done.done():
                        done.set_result(None)
                    msg = self.reader.gets()

        async def task_consumer() -> None:  # the floor plus one task woken per read
            while True:
                while queue:
                    msg = queue.popleft()
                    if msg[0] == b"message" and tick():
                        done.set_result(None)
                        return
                future = loop.create_future()
                waiter.append(future)
                await future

        if variant == "floor-task":
            consumer_task = asyncio.create_task(task_consumer())

        host_port = opts.redis_url.split("//", 1)[1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        transport, _ = await asyncio.get_running_loop().create_connection(Floor, host, int(port))
        transport.write(f"SUBSCRIBE {channel}\r\n".encode())
        await asyncio.sleep(0.2)
        print(json.dumps({"ready": True}), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, opts.timeout)
        transport.close()
        if variant == "floor-task":
            consumer_task.cancel()
    elif variant.startswith("redis-py"):
        from redis.asyncio import Redis  # noqa: PLC0415

        redis = Redis.from_url(opts.redis_url)
        pubsub = redis.pubsub()
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1.0)  # the confirmation

        async def run_raw() -> None:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if msg is not None and msg["data"] and tick():
                    return

        print(json.dumps({"ready": True}), flush=True)
        await wait_end(asyncio.create_task(run_raw()))
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        await redis.aclose()
    else:
        from upbit_fanout import FanoutClient  # noqa: PLC0415

        reader = "redis-py" if variant == "fanout-redis-py" else "auto"
        async with FanoutClient(
            opts.redis_url,
            key_prefix=opts.prefix,
            pubsub_reader=reader,
            queue_size=100_000,
            read_coalesce=opts.coalesce if variant == "fanout-coalesce" else 0.0,
        ) as client:
            await client.subscribe(TOPIC)
            await asyncio.sleep(0.2)  # the SUBSCRIBE is sent; let its confirmation arrive

            async def run_client() -> None:
                if variant == "fanout-batches":
                    async for batch in client.batches():
                        for item in batch:
                            if item.kind == "event" and item.payload and tick():
                                return
                    return
                async for item in client:
                    if item.kind != "event":
                        continue
                    if opts.latency:
                        received = time.monotonic_ns()
                        body = item.payload
                        at = body.find(STAMP_FIELD) + len(STAMP_FIELD)
                        if state["n"] >= warm:
                            latencies.append(received - int(body[at : at + STAMP_WIDTH]))
                    if variant == "fanout-data":
                        item.data  # noqa: B018 - the decode is what is measured
                    elif variant == "fanout-typed":
                        item.typed  # noqa: B018
                    elif not item.payload:
                        continue
                    if tick():
                        return

            print(json.dumps({"ready": True}), flush=True)
            await wait_end(asyncio.create_task(run_client()))
            state["rests"] = client.read_rests
    cpu = time.process_time() - state["t0"]
    wall = time.monotonic() - state["w0"]
    measured = state["n"] - warm
    return {
        "variant": opts.variant,
        "received": state["n"],
        "measured": measured,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_us_per_event": cpu / measured * 1e6 if measured > 0 else None,
        "read_rests": int(state.get("rests", 0)),  # the fanout variants' (read_coalesce)
        **({"latency_us": _latency_figures(latencies)} if latencies else {}),
    }


def _latency_figures(latencies: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50": round(ordered[len(ordered) // 2] / 1000, 1),
        "p99": round(ordered[int(len(ordered) * 0.99)] / 1000, 1),
        "max": round(ordered[-1] / 1000, 1),
        "samples": len(ordered),
    }


def consumer_main(opts: argparse.Namespace) -> None:
    if opts.profile:
        import cProfile  # noqa: PLC0415

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, consume(opts))
        profiler.dump_stats(opts.profile)
    elif opts.variant.endswith("-uvloop"):
        import uvloop  # noqa: PLC0415 - optional

        result = uvloop.run(consume(opts))
    else:
        result = asyncio.run(consume(opts))
    print(json.dumps(result), flush=True)


# -- the client's own share, in process ---------------------------------------------------------


async def hot_path(redis_url: str, events: int = 200_000) -> dict[str, float]:
    """CPU per event of the client's own Python, without sockets or event-loop turns: the link's
    ``accept`` call with ``batch`` messages, then the iterator taking them (``async for``)."""
    from upbit_fanout import FanoutClient  # noqa: PLC0415

    prefix = f"bench-cc-{secrets.token_hex(4)}"
    result: dict[str, float] = {}
    async with FanoutClient(redis_url, key_prefix=prefix, queue_size=100_000) as client:
        await client.subscribe(TOPIC)
        channel = Keys(prefix).channel(TOPIC).encode()
        message = [b"message", channel, payload()]
        stream = client.events()
        # the link's callback (older revisions, for a baseline: the client's own _accept)
        accept = getattr(getattr(client, "_reader", None), "accept", None) or client._accept  # type: ignore[attr-defined]
        for batch in (1, 50):
            replies = [message] * batch
            rounds = events // batch
            start = time.process_time()
            for _ in range(rounds):
                accept(replies)
                for _ in range(batch):
                    await anext(stream)
            result[f"accept_and_iterate_us_batch_{batch}"] = round(
                (time.process_time() - start) / (rounds * batch) * 1e6, 3
            )
    return result


# -- publisher (a thread of this process) ---------------------------------------------------------


def command(channel: bytes, data: bytes) -> bytes:
    parts = [b"PUBLISH", channel, data]
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def publish(
    address: tuple[str, int],
    cmd: bytes,
    rate: int,
    per_write: int,
    count: int,
    *,
    stamped: bool = False,
) -> float:
    """Send ``count`` PUBLISH commands, ``per_write`` per socket write, at ``rate`` per second;
    ``stamped``: each write's ``time.monotonic_ns()`` goes into every payload's stamp field.

    Returns the achieved rate. Replies are read and discarded by a second thread.
    """
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stop = threading.Event()

    def drain() -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                if not sock.recv(1 << 16):
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    chunk = bytearray(cmd * per_write)
    offsets: list[int] = []
    if stamped:
        at = chunk.find(STAMP_FIELD)
        while at >= 0:
            offsets.append(at + len(STAMP_FIELD))
            at = chunk.find(STAMP_FIELD, at + 1)
    interval = per_write / rate
    writes = count // per_write
    start = time.monotonic()
    due = start
    for _ in range(writes):
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if offsets:
            stamp = b"%019d" % time.monotonic_ns()
            for at in offsets:
                chunk[at : at + STAMP_WIDTH] = stamp
        sock.sendall(chunk)
        due += interval
    elapsed = time.monotonic() - start
    time.sleep(0.2)
    stop.set()
    reader.join()
    sock.close()
    return writes * per_write / elapsed


# -- orchestration --------------------------------------------------------------------------------


def measure(
    opts: argparse.Namespace, variant: str, rate: int, per_write: int, data: bytes
) -> dict[str, Any]:
    prefix = f"bench-cc-{secrets.token_hex(4)}"
    count = int(rate * opts.seconds)
    warm = max(per_write * 10, int(rate * 0.5))
    host_port = opts.redis_url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    args = [
        sys.executable,
        __file__,
        "--role=consumer",
        f"--variant={variant}",
        f"--prefix={prefix}",
        f"--count={count + warm}",
        f"--warm={warm}",
        f"--timeout={opts.seconds * 3 + 10}",
        f"--redis-url={opts.redis_url}",
        f"--coalesce={opts.coalesce}",
        *(["--latency"] if opts.latency else []),
    ]
    if opts.profile:
        args.append(f"--profile={opts.profile}.{variant}")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError(f"consumer {variant} did not start: {line!r}")
        time.sleep(0.3)
        channel = Keys(prefix).channel(TOPIC).encode()
        achieved = publish(
            (host, int(port)),
            command(channel, data),
            rate,
            per_write,
            count + warm,
            stamped=opts.latency,
        )
        out, _ = proc.communicate(timeout=opts.seconds * 3 + 30)
        lines = out.strip().splitlines()
        if not lines:  # e.g. Redis dropped a subscriber that fell past its output-buffer limit
            print(f"  consumer {variant} printed no result (exit {proc.returncode})", flush=True)
            result: dict[str, Any] = {"variant": variant, "received": 0, "cpu_us_per_event": None}
        else:
            result = json.loads(lines[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result.update(rate=rate, per_write=per_write, achieved_rate=round(achieved), sent=count + warm)
    return result


def available(variants: list[str]) -> list[str]:
    try:
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        return [v for v in variants if not v.endswith("-uvloop")]
    return variants


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - a bench-only extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    scenarios = report["scenarios"]
    labels = [f"{s['rate']:,}/s\n{s['per_write']} per write" for s in scenarios]
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {
        "fanout": ("C0", "-", "o"),
        "fanout-batches": ("C0", "--", "s"),
        "fanout-uvloop": ("C2", "-", "o"),
        "fanout-batches-uvloop": ("C2", "--", "s"),
        "fanout-data": ("C4", ":", "^"),
        "fanout-redis-py": ("C1", "-", "v"),
        "fanout-coalesce": ("C5", "-", "D"),
        "fanout-coalesce-uvloop": ("C5", "--", "D"),
        "redis-py": ("C3", "-", "x"),
        "redis-py-uvloop": ("C3", "--", "x"),
        "floor": ("0.55", ":", "."),
        "floor-task": ("0.3", ":", "."),
    }
    for variant in report["variants"]:
        if variant not in styles:
            continue
        ys = [s["results"][variant]["cpu_us_per_event"] for s in scenarios]
        color, line, marker = styles[variant]
        ax.plot(labels, ys, color=color, linestyle=line, marker=marker, label=variant)
    ax.set_yscale("log")
    ax.set_ylabel("consumer CPU per event (µs, log scale)")
    ax.set_title(
        "One consumer of one channel: CPU per event\n"
        f"{report['payload_bytes']}-byte ticker payloads; 2-core machine, shared"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def orchestrate(opts: argparse.Namespace) -> int:
    data = payload(stamped=opts.latency)
    variants = available(opts.variants)
    scenarios = SCENARIOS[:1] if opts.quick else SCENARIOS
    load_before = os.getloadavg()
    started = time.time()
    own = asyncio.run(hot_path(opts.redis_url))
    print(f"the client's own Python per event (in process, no socket): {own}")
    runs: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for round_ in range(opts.rounds):
        for rate, per_write in scenarios:
            order = variants if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                result = measure(opts, variant, rate, per_write, data)
                runs.setdefault((rate, per_write, variant), []).append(result)
                latency = result.get("latency_us")
                print(
                    f"round {round_ + 1} {rate:>6,}/s x{per_write:<3} {variant:<22} "
                    f"{result['cpu_us_per_event'] or float('nan'):7.1f} us/event "
                    f"({result['received']:,}/{result['sent']:,} received, "
                    f"sent at {result['achieved_rate']:,}/s)"
                    + (
                        f" latency p50 {latency['p50']} us, p99 {latency['p99']} us, "
                        f"max {latency['max']} us"
                        if latency
                        else ""
                    ),
                    flush=True,
                )
    report_scenarios = []
    for rate, per_write in scenarios:
        results = {}
        for variant in variants:
            rs = runs[(rate, per_write, variant)]
            values = [r["cpu_us_per_event"] for r in rs if r["cpu_us_per_event"] is not None]
            results[variant] = {
                "cpu_us_per_event": round(statistics.median(values), 2) if values else None,
                "rounds_us": [round(v, 2) for v in values],
                "received": [r["received"] for r in rs],
                "sent": rs[0]["sent"],
                "achieved_rate": [r["achieved_rate"] for r in rs],
                "read_rests": [r.get("read_rests", 0) for r in rs],
                "latency_us": [r["latency_us"] for r in rs if "latency_us" in r],
            }
        base = results[BASELINE]["cpu_us_per_event"] if BASELINE in results else None
        for result in results.values():
            value = result["cpu_us_per_event"]
            result["vs_redis_py"] = round(value / base, 3) if value and base else None
        report_scenarios.append({"rate": rate, "per_write": per_write, "results": results})
    report = {
        "bench": "consumer_cost",
        "command": " ".join([".venv/bin/python bench/consumer_cost.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, shared with other work (load average before "
        f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f})",
        "payload_bytes": len(data),
        "seconds_per_measurement": opts.seconds,
        "rounds": opts.rounds,
        "wall_s": round(time.time() - started, 1),
        "client_hot_path_in_process": own,
        "variants": variants,
        "scenarios": report_scenarios,
    }
    print()
    header = f"{'variant':<24}" + "".join(
        f"{f'{r:,}/s x{p}':>22}" for r, p in [(s["rate"], s["per_write"]) for s in report_scenarios]
    )
    print(header)
    for variant in variants:
        cells = []
        for scenario in report_scenarios:
            res = scenario["results"][variant]
            value, ratio = res["cpu_us_per_event"], res["vs_redis_py"]
            us = f"{value:>8.1f} us" if value is not None else f"{'-':>11}"
            cells.append(us + (f" ({ratio:>5.2f}x)" if ratio is not None else " (  -  )"))
        print(f"{variant:<24}" + "".join(f"{c:>22}" for c in cells))
    print(f"\n(x: CPU per event relative to {BASELINE} in the same run; {report['machine']})")
    if opts.latency:
        print("\nlatency, receipt - send (medians of the rounds' p50 / p99, us):")
        for variant in variants:
            cells = []
            for scenario in report_scenarios:
                rounds = scenario["results"][variant]["latency_us"]
                if rounds:
                    p50 = statistics.median(r["p50"] for r in rounds)
                    p99 = statistics.median(r["p99"] for r in rounds)
                    cells.append(f"{p50:.0f} / {p99:.0f}")
                else:
                    cells.append("-")
            print(f"{variant:<24}" + "".join(f"{c:>22}" for c in cells))
    if not opts.quick and opts.latency:
        out = RESULTS / "consumer_latency.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    elif not opts.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "consumer_cost.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        try:
            plot(report, RESULTS / "consumer_cost.png")
        except ImportError:  # matplotlib is the bench extra's: the figures are written anyway
            print(f"wrote {out.relative_to(ROOT)}; no plot: pip install 'upbit-fanout[bench]'")
        else:
            print(f"wrote {out.relative_to(ROOT)} and consumer_cost.png")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one scenario, one round, no files")
    parser.add_argument("--seconds", type=float, default=4.0, help="publishing time per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", type=lambda t: t.split(","), default=VARIANTS)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--coalesce",
        type=float,
        default=0.001,
        help="read_coalesce of the fanout-coalesce variants (s)",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="stamp every write; the fanout variants report receipt - send (see above)",
    )
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the plot from the JSON of the last run"
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile each consumer into FILE")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.quick:
        opts.rounds = 1
        opts.seconds = min(opts.seconds, 2.0)
    if opts.role == "consumer":
        consumer_main(opts)
        return 0
    if opts.plot_only:
        plot(
            json.loads((RESULTS / "consumer_cost.json").read_text()), RESULTS / "consumer_cost.png"
        )
        return 0
    return orchestrate(opts)


if __name__ == "__main__":
    sys.exit(main())
