"""Intent tracking at many clients: idle CPU, event-loop stalls, new intent -> union latency.

    .venv/bin/python bench/intents_scale.py [--clients 10000] [--topics 5] [--seconds 10]
        [--samples 30] [--rate 20] [--baseline main] [--rounds 1] [--control]

Processes (on a 2-core machine): a redis-server of the bench's own (loopback, no persistence,
so nothing touches the shared Redis), the emulator (paced at ``--rate`` events/s, so events keep
flowing), and the heartbeat driver run on the other CPU; the collector worker
(collector.service.Collector, the real service) is pinned to CPU 0. Before each worker starts,
``--clients`` intent keys of ``--topics`` topics each are written (a lease of 290 s, so none
expires during a run: they are written again before each), drawn from ticker/trade/orderbook of
the first 100 KRW markets.

The worker measures, in order:

``idle``
    ``--seconds`` with nothing changing: the worker's CPU share (process CPU time / wall time),
    then another ``--seconds`` for the event loop's longest stall (a task sleeping 5 ms at a
    time; its lateness; not running while CPU is measured, since it costs CPU itself). Events
    keep arriving at ``--rate``. A stall during which a sampling thread saw intent-tracking code
    on the loop thread's stack is the tracker's (``intent_stall_max_ms``); the others are the
    shared machine's, the event path's or the garbage collector's;
``heartbeats``
    the same with every client heartbeating as the client library does (SADD + PEXPIRE every
    third of a 30 s lease, spread evenly: clients/10 per second);
``latency``
    ``--samples`` new clients, one every 0.5 s, each asking for a topic nobody wants yet (SADD +
    PEXPIRE + PUBLISH P:control in one MULTI, as the client library writes it): the time until
    the collector's plan holds it (``intent_to_plan``) and until it was sent upstream
    (``intent_to_union``, which includes the upstream's 50 ms coalescing), median and p99.

``--control`` adds a run of the current code with one client per topic of the same universe:
the same union and events, few clients. Its idle CPU is the event path's share; the difference
to the 10,000-client run is the intent tracking's.

``--baseline REF`` runs the same worker a second time with another git revision's code (laid
out from ``git archive`` and put first on ``PYTHONPATH``, as bench/collector_throughput.py
does), on the same Redis keys and emulator. Results go to bench/results/intents_scale.json.
The machine is shared: the stall figures include whatever else ran on CPU 0 at the time; the
baseline in the same run is the comparison that counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import gc
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).parent))
from collector_throughput import (
    baseline_path,
    free_port,
    other_cpus,
    pin,
    prefix_option,
    start_redis,
    start_source,
)

from upbit_fanout.subscriptions.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "intents_scale.json"
PREFIX = "bench-intents"
TYPES = ("ticker", "trade", "orderbook")
LEASE_MS = 290_000  # within the collector's max_lease (300 s); populated before each run
HEARTBEAT_LEASE_MS = 30_000


def universe() -> tuple[list[str], list[str]]:
    """(topics the clients draw from, topics kept for the latency samples)."""
    from upbit_fanout.emulator.markets import default_markets  # noqa: PLC0415

    krw = [m.code for m in default_markets() if m.code.startswith("KRW-")]
    used = [f"{t}:{code}" for code in krw[:100] for t in TYPES]
    spare = [f"ticker:{code}" for code in krw[100:]]
    return used, spare


def members_for(clients: int, topics: int) -> list[list[str]]:
    """Each client's topics; ``topics=0``: the control, one client per topic of the universe
    (the same union, hence the same events, with few clients)."""
    used, _ = universe()
    if topics == 0:
        return [[topic] for topic in used]
    rng = random.Random(1)
    return [rng.sample(used, topics) for _ in range(clients)]


def populate(port: int, clients: int, topics: int) -> None:
    keys = Keys(PREFIX)
    client = sync_redis.Redis(port=port)
    try:
        pipe = client.pipeline(transaction=False)
        for index, members in enumerate(members_for(clients, topics)):
            key = keys.intents(f"c{index}")
            pipe.sadd(key, *members)
            pipe.pexpire(key, LEASE_MS)
            if index % 1000 == 999:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()


def cleanup(port: int) -> None:
    client = sync_redis.Redis(port=port)
    try:
        for key in client.scan_iter(match=f"{PREFIX}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


# -- the heartbeat driver (a process of its own) -------------------------------------------------


def heartbeats(port: int, clients: int, topics: int) -> None:
    """SADD + PEXPIRE for every client every 10 s, spread evenly, until killed."""
    pin(other_cpus())
    keys = Keys(PREFIX)
    members = members_for(clients, topics)
    clients = len(members)
    client = sync_redis.Redis(port=port)
    period = HEARTBEAT_LEASE_MS / 3 / 1000
    step = max(1, clients // 100)  # 100 pipelines per period
    print("ready", flush=True)
    start = time.monotonic()
    index = 0
    while True:
        pipe = client.pipeline(transaction=False)
        for i in range(index, min(index + step, clients)):
            key = keys.intents(f"c{i}")
            pipe.sadd(key, *members[i])
            pipe.pexpire(key, LEASE_MS)
        pipe.execute()
        index += step
        if index >= clients:
            index = 0
        start += period * step / clients
        time.sleep(max(0.0, start - time.monotonic()))


# -- the worker ----------------------------------------------------------------------------------


INTENT_CODE = ("collector/intents.py", "collector/union.py")


class StallMonitor:
    """A task that sleeps ``tick`` at a time and records how late it wakes (the loop's stalls),
    and a thread that attributes them: while the task is 10 ms overdue it samples the loop
    thread's stack every 2 ms, and a stall during which intent-tracking code (collector/
    intents.py, collector/union.py, Collector._reconcile) was seen running counts as the
    tracker's (``intent_stall_max_ms``). The rest are the machine's, the event path's or the
    garbage collector's (``gc_pause_max_ms``, from ``gc.callbacks``). On a shared machine a
    stall can also be the loop thread waiting for a CPU: the CPU time it actually ran during
    each stall (``busy``, ``intent_busy_max_ms``) tells a stall it caused from one it suffered."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.late: list[float] = []
        self.intent_late: list[float] = []
        self.busy: list[float] = []
        self.intent_busy: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self.last_tick = 0.0
        self._flagged: set[float] = set()
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)
        self._main = threading.get_ident()
        # The sampler sleeps on this while the task is stopped: its 500 wake-ups a second cost
        # the worker about as much CPU as the idle collector it measures.
        self._active = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="stall-sampler").start()

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    def _watch(self) -> None:
        while True:
            self._active.wait()
            time.sleep(0.002)
            since = self.last_tick
            if not since or since in self._flagged or time.monotonic() - since < 0.010:
                continue
            frame = sys._current_frames().get(self._main)
            while frame is not None:
                code = frame.f_code
                if code.co_filename.endswith(INTENT_CODE) or code.co_name == "_reconcile":
                    self._flagged.add(since)
                    break
                frame = frame.f_back

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.last_tick = time.monotonic()
        while True:
            before, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.tick)
            late = loop.time() - before - self.tick
            busy = time.thread_time() - cpu  # what the loop thread itself ran meanwhile
            self.late.append(late)
            self.busy.append(busy)
            if self.last_tick in self._flagged:
                self._flagged.discard(self.last_tick)
                self.intent_late.append(late)
                self.intent_busy.append(busy)
            self.last_tick = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._active.set()

    def reset(self) -> None:
        self.late = []
        self.intent_late = []
        self.busy = []
        self.intent_busy = []
        self.gc_pauses = []

    def figures(self) -> dict[str, float]:
        late = sorted(self.late) or [0.0]
        return {
            "stall_max_ms": round(late[-1] * 1000, 1),
            "stall_p99_ms": round(late[int(0.99 * (len(late) - 1))] * 1000, 2),
            "stalls_over_20ms": sum(1 for value in late if value > 0.020),
            "busy_max_ms": round(max(self.busy, default=0.0) * 1000, 1),
            "intent_stall_max_ms": round(max(self.intent_late, default=0.0) * 1000, 1),
            "intent_busy_max_ms": round(max(self.intent_busy, default=0.0) * 1000, 1),
            "intent_stalls_over_20ms": sum(1 for value in self.intent_late if value > 0.020),
            "intent_busy_over_20ms": sum(1 for value in self.intent_busy if value > 0.020),
            "gc_pause_max_ms": round(max(self.gc_pauses, default=0.0) * 1000, 1),
        }

    async def stop(self) -> None:
        self._active.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.last_tick = 0.0


async def window(seconds: float, monitor: StallMonitor, published: Any) -> dict[str, Any]:
    """CPU share over ``seconds`` with the stall monitor stopped (its task's 200 wake-ups a second
    and its sampler's 500 would count), then the stalls over another ``seconds`` with it running."""
    await monitor.stop()
    wall, cpu, events = time.monotonic(), time.process_time(), published()
    await asyncio.sleep(seconds)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    monitor.reset()
    monitor.start()
    await asyncio.sleep(seconds)
    return {
        "cpu_share": round(cpu / wall, 4),
        "events_per_s": round((published() - events) / wall),
        **monitor.figures(),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_worker(opts: argparse.Namespace) -> dict[str, Any]:
    pin({sorted(os.sched_getaffinity(0))[0]})
    from upbit_fanout.collector.service import Collector  # noqa: PLC0415

    keys = Keys(PREFIX)
    redis = aioredis.Redis(port=opts.redis_port)
    writer = aioredis.Redis(port=opts.redis_port)
    url = f"ws://127.0.0.1:{opts.upstream_port}/websocket/v1"
    collector = Collector(
        redis=redis,
        **prefix_option(Collector, keys.prefix),
        upstream_url=url,
        ping_interval=600,
        ping_timeout=600,
    )
    monitor = StallMonitor()
    result: dict[str, Any] = {}
    driver: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        await collector.start()
        deadline = started + 120
        while not (collector.tracker.loaded and collector.union):
            if time.monotonic() > deadline:
                raise RuntimeError("the collector did not subscribe within 120 s")
            await asyncio.sleep(0.05)
        result["startup_s"] = round(time.monotonic() - started, 2)
        _, spare = universe()
        result["union_topics"] = len(collector.union)
        monitor.start()
        await asyncio.sleep(3)  # settle: the first sweeps, the snapshots
        published = lambda: collector.publisher.events_published  # noqa: E731
        profiler = cProfile.Profile() if opts.profile_out else None
        if profiler is not None:
            profiler.enable()
        result["idle"] = await window(opts.seconds, monitor, published)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(opts.profile_out)
        driver = subprocess.Popen(  # noqa: ASYNC220 - started once, before the window
            [
                *(sys.executable, __file__, "--heartbeats", str(opts.redis_port)),
                *("--clients", str(opts.clients), "--topics", str(opts.topics)),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert driver.stdout is not None
        driver.stdout.readline()
        await asyncio.sleep(1)
        notified = getattr(collector.tracker, "notified", None)  # None: code without it
        result["heartbeats"] = await window(opts.seconds, monitor, published)
        if notified is not None:
            # Notifications about intent keys that reached the collector during the window.
            result["heartbeats"]["intent_notifications"] = collector.tracker.notified - notified
        to_plan: list[float] = []
        to_union: list[float] = []
        monitor.reset()
        for index in range(opts.samples):
            topic = spare[index % len(spare)]
            client_id = f"new{index}"
            key = keys.intents(client_id)
            wanted = collector.plan
            begin = time.monotonic()
            async with writer.pipeline(transaction=True) as pipe:
                pipe.sadd(key, topic)
                pipe.pexpire(key, HEARTBEAT_LEASE_MS)
                pipe.publish(keys.control, client_id)
                await pipe.execute()
            planned = None
            limit = begin + 10
            while time.monotonic() < limit:
                plan = collector.plan
                if planned is None and plan is not wanted and topic in _texts(plan):
                    planned = time.monotonic()
                if planned is not None and topic in collector.union:
                    break
                await asyncio.sleep(0.001)
            done = time.monotonic()
            if planned is not None:
                to_plan.append(planned - begin)
                to_union.append(done - begin)
            await asyncio.sleep(0.5)
        result["latency"] = {
            "samples": len(to_plan),
            "intent_to_plan_median_ms": round(statistics.median(to_plan) * 1000, 1),
            "intent_to_plan_p99_ms": round(percentile(to_plan, 0.99) * 1000, 1),
            "intent_to_union_median_ms": round(statistics.median(to_union) * 1000, 1),
            "intent_to_union_p99_ms": round(percentile(to_union, 0.99) * 1000, 1),
            **monitor.figures(),
        }
        for index in range(opts.samples):
            await writer.delete(keys.intents(f"new{index}"))
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        await monitor.stop()
        await collector.aclose()
        await redis.aclose()
        await writer.aclose()
    return result


def _texts(plan: Any) -> set[str]:
    return {str(topic) for topic in plan.public_topics}


# -- the orchestrator ----------------------------------------------------------------------------


def run_one(
    opts: argparse.Namespace,
    redis_port: int,
    port: int,
    path: Path | None,
    *,
    clients: int,
    topics: int,
) -> Any:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [env.get("PYTHONPATH")])])
    cleanup(redis_port)
    populate(redis_port, clients, topics)
    args = [
        sys.executable, __file__, "--worker", "--redis-port", str(redis_port),
        "--upstream-port", str(port), "--clients", str(clients),
        "--topics", str(topics), "--seconds", str(opts.seconds),
        "--samples", str(opts.samples),
    ]  # fmt: skip
    if opts.profile_out:
        args += ["--profile-out", opts.profile_out]
    done = subprocess.run(args, capture_output=True, cwd=ROOT, timeout=600, check=False, env=env)
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.decode().strip().splitlines()[-3:]}
    return json.loads(lines[-1][len("RESULT ") :])


def orchestrate(opts: argparse.Namespace) -> None:
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_py": sync_redis.__version__,
        "clients": opts.clients,
        "topics_per_client": opts.topics,
        "rate": opts.rate,
        "seconds": opts.seconds,
        "layout": "collector worker pinned to CPU 0; Redis, emulator, heartbeats on the rest",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other sessions' work may run on CPU 0 too; compare with the "
        "baseline of the same run",
        "runs": [],
    }
    redis_port = free_port()
    redis_proc = start_redis(redis_port)
    port = free_port()
    source = start_source("emulator", port, [], opts.rate)
    try:
        with tempfile.TemporaryDirectory(prefix="intents-baseline-") as tmp:
            many = (opts.clients, opts.topics)
            variants: list[tuple[str, Path | None, tuple[int, int]]] = [("current", None, many)]
            if opts.baseline:
                base = baseline_path(opts.baseline, Path(tmp))
                variants.insert(0, (f"baseline {opts.baseline}", base, many))
            if opts.control:
                variants.append(("control", None, (len(universe()[0]), 0)))
            for _ in range(opts.rounds):
                for code, path, (clients, topics) in variants:
                    result = run_one(opts, redis_port, port, path, clients=clients, topics=topics)
                    result["code"] = code
                    report["runs"].append(result)
                    print(_line(result), flush=True)
    finally:
        source.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            source.wait(5)
        source.kill()
        cleanup(redis_port)
        redis_proc.terminate()
        redis_proc.wait()
    opts.results.parent.mkdir(parents=True, exist_ok=True)
    opts.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {opts.results}")


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['code']:>14}  FAILED: {r['error']}"
    idle, beat, lat = r["idle"], r["heartbeats"], r["latency"]
    return (
        f"{r['code']:>14}  idle cpu {idle['cpu_share']:.1%} stall max {idle['stall_max_ms']} ms"
        f" (intents {idle['intent_stall_max_ms']} ms, busy {idle['intent_busy_max_ms']} ms)"
        f" | heartbeats cpu {beat['cpu_share']:.1%} stall max {beat['stall_max_ms']} ms"
        f" (intents {beat['intent_stall_max_ms']} ms, busy {beat['intent_busy_max_ms']} ms)"
        f" | intent->plan median {lat['intent_to_plan_median_ms']} ms"
        f" p99 {lat['intent_to_plan_p99_ms']} ms, ->union median "
        f"{lat['intent_to_union_median_ms']} ms p99 {lat['intent_to_union_p99_ms']} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--topics", type=int, default=5, help="topics per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measuring window (s)")
    parser.add_argument("--samples", type=int, default=30, help="new-intent latency samples")
    parser.add_argument("--rate", type=float, default=20.0, help="emulator events/s")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git revision")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--control",
        action="store_true",
        help="also run the current code with one client per topic (same union, same events)",
    )
    parser.add_argument("--profile-out", help="cProfile the worker's idle window into this file")
    parser.add_argument("--results", type=Path, default=RESULTS)
    # internal
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--heartbeats", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.heartbeats is not None:
        heartbeats(opts.heartbeats, opts.clients, opts.topics)
    elif opts.worker:
        print("RESULT " + json.dumps(asyncio.run(run_worker(opts))), flush=True)
    else:
        orchestrate(opts)


if __name__ == "__main__":
    main()
