"""Soak: the whole system for minutes under faults, as an operator would run it.

    .venv/bin/python bench/soak.py                 # quick: about 2.5 minutes
    .venv/bin/python bench/soak.py --minutes 60    # the fault cycle repeated for an hour

Processes, all real, all on loopback: a redis-server of the soak's own (so it can be restarted),
the emulator (``upbit-fanout emulator --rate R``), two collectors (``upbit-fanout collector``
with a 3 s leader lease and ``--metrics-port``: a leader and a hot standby), ``--consumers N``
consumer processes (each a :class:`FanoutClient` on every topic, counting what it receives).

Faults, on a schedule that repeats every 125 s after a 15 s warm-up:

===============  =====================================================================
``drop``         the emulator aborts every connection (``/_emulator/drop``)
``stall``        the emulator freezes for 8 s: sockets open, nothing sent, pings unanswered
``refuse``       new handshakes get HTTP 503 for 6 s, and the connections are dropped
``redis``        redis-server is stopped and a new, empty one starts on the port 3 s later
``leader-kill``  the leading collector gets SIGKILL; the standby takes over; the killed one
                 is started again (the next standby)
===============  =====================================================================

Reported (``bench/results/soak.json``, plots ``soak.png`` and ``soak_resources.png``): events
delivered to each consumer versus published by the collectors, per topic; gaps seen by consumers
(by source) versus gap notices the collectors announced; per fault, the time from its end until
every consumer received a live event again, and until each saw the Gap; collector RSS and CPU
over time. "Published" sums the last ``/metrics`` scrape of every collector process (the leader
is scraped just before it is killed). Needs the ``[bench]`` extra (matplotlib) for the plots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COMMAND = Path(sys.executable).with_name("upbit-fanout")
PREFIX = "soak"
TOPICS = ("ticker:KRW-BTC", "trade:KRW-BTC", "orderbook:KRW-ETH")
TYPE_OF = {topic: topic.split(":", 1)[0] for topic in TOPICS}  # one topic per type
WARMUP = 15.0
CYCLE = (  # (offset in the cycle, fault)
    (0.0, "drop"),
    (25.0, "stall"),
    (50.0, "refuse"),
    (75.0, "redis"),
    (100.0, "leader-kill"),
)
CYCLE_LENGTH = 125.0
BIN = 0.1  # seconds per bin of the consumers' arrival histograms

CONSUMER = r"""
import asyncio, json, signal, sys, time
from upbit_fanout.client import FanoutClient, Event, Gap
url, prefix, name, out, *topics = sys.argv[1:]
BIN = 0.1
counts = {t: 0 for t in topics}; cached = {t: 0 for t in topics}
bins = {}; gaps = []
def dump():
    with open(out + ".tmp", "w") as f:
        json.dump({"counts": counts, "cached": cached, "bins": bins, "gaps": gaps}, f)
    import os; os.replace(out + ".tmp", out)
async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with FanoutClient(url, key_prefix=prefix, client_id=name) as client:
        await client.subscribe(*topics)
        print("ready", flush=True)
        async def consume():
            async for item in client:
                if isinstance(item, Event):
                    if item.cached:
                        cached[item.topic] += 1
                    else:
                        counts[item.topic] += 1
                        key = str(int(time.time() / BIN))
                        bins[key] = bins.get(key, 0) + 1
                elif isinstance(item, Gap):
                    gaps.append({"source": item.source, "reason": item.reason,
                                 "started_at": item.started_at, "ended_at": item.ended_at,
                                 "connection": item.connection, "received_at": time.time()})
        async def periodic():
            while True:
                await asyncio.sleep(5); dump()
        tasks = [asyncio.create_task(consume()), asyncio.create_task(periodic())]
        await stop.wait()
        for t in tasks: t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    dump()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def http_get(port: int, path: str) -> tuple[int, str]:
    timeout = 3.0
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """``{"name{labels}": value}`` of a Prometheus text page."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def proc_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")),
        0,
    )
    return cpu, rss


@dataclass
class CollectorProc:
    name: str
    port: int
    process: asyncio.subprocess.Process
    started: float
    last_metrics: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    _last_cpu: tuple[float, float] | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def scrape(self) -> None:
        if not self.alive:
            return
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            code, text = await http_get(self.port, "/metrics")
            if code == 200:
                self.last_metrics = parse_metrics(text)

    def sample(self, now: float) -> None:
        found = proc_sample(self.process.pid) if self.alive else None
        if found is None:
            return
        cpu, rss = found
        percent = 0.0
        if self._last_cpu is not None and now > self._last_cpu[1]:
            percent = 100 * (cpu - self._last_cpu[0]) / (now - self._last_cpu[1])
        self._last_cpu = (cpu, now)
        self.samples.append(
            {
                "t": now,
                "rss_mb": rss / 2**20,
                "cpu_percent": percent,
                "leader": self.last_metrics.get("upbit_fanout_leader", 0.0),
                "healthy": self.last_metrics.get("upbit_fanout_healthy", 0.0),
            }
        )

    @property
    def is_leader(self) -> bool:
        return self.last_metrics.get("upbit_fanout_leader") == 1.0


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis: asyncio.subprocess.Process | None = None
        self.emulator: asyncio.subprocess.Process | None = None
        self.emulator_http = ""
        self.collectors: list[CollectorProc] = []
        self.consumers: list[tuple[str, asyncio.subprocess.Process, Path]] = []
        self.faults: list[dict[str, Any]] = []
        self.t0 = time.time()
        self._count = 0

    # -- processes ------------------------------------------------------------------------------
    async def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        self.redis = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--notify-keyspace-events", "Egsxe",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise SystemExit("redis-server did not start")

    async def stop_redis(self) -> None:
        if self.redis is not None and self.redis.returncode is None:
            self.redis.terminate()
            await self.redis.wait()

    async def start_emulator(self) -> str:
        self.emulator = await asyncio.create_subprocess_exec(
            str(COMMAND), "emulator", "--port", "0", "--seed", "1", "--rate", str(self.args.rate),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.emulator.stdout is not None
        base = (await asyncio.wait_for(self.emulator.stdout.readline(), 15)).decode().strip()
        self.emulator_http = base.replace("ws://", "http://")
        return base + "/websocket/v1"

    async def emulator_admin(self, action: str) -> None:
        """POST an admin action (the paths that change the emulator's state take POST only);
        a refused action stops the soak: a fault that did not happen would measure nothing."""
        host, port = self.emulator_http.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /_emulator/{action} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        reply = await reader.read()
        writer.close()
        status = reply.split(b" ", 2)[1] if reply.count(b" ") >= 2 else b"?"
        if status != b"200":
            raise RuntimeError(f"emulator admin {action!r} answered {reply[:80]!r}")

    async def start_collector(self, upstream: str) -> CollectorProc:
        self._count += 1
        name = f"collector-{self._count}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPBIT_FANOUT_")}
        env.update(
            UPBIT_FANOUT_KEY_PREFIX=PREFIX,
            UPBIT_FANOUT_LEADER_LEASE="3",
            UPBIT_FANOUT_PING_INTERVAL="2",
            UPBIT_FANOUT_PING_TIMEOUT="2",
            UPBIT_FANOUT_BACKOFF_INITIAL="0.2",
            UPBIT_FANOUT_BACKOFF_MAX="2",
            UPBIT_FANOUT_LOG_FORMAT="json",
        )
        logfile = (self.workdir / f"{name}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            str(COMMAND), "collector", "--redis-url", self.redis_url, "--upstream", upstream,
            "--collector-id", name, "--metrics-port", str(port),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=logfile, cwd=self.workdir,
        )  # fmt: skip
        proc = CollectorProc(name, port, process, time.time())
        self.collectors.append(proc)
        return proc

    async def start_consumers(self) -> None:
        for index in range(self.args.consumers):
            name = f"consumer-{index + 1}"
            out = self.workdir / f"{name}.json"
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CONSUMER, self.redis_url, PREFIX, name, str(out), *TOPICS,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise SystemExit(f"{name} did not start")
            self.consumers.append((name, process, out))

    # -- faults ---------------------------------------------------------------------------------
    async def fault(self, name: str, upstream: str) -> None:
        started = time.time()
        end = started
        detail = ""
        if name == "drop":
            await self.emulator_admin("drop")
        elif name == "stall":
            await self.emulator_admin("stall?seconds=8")
            await asyncio.sleep(8)
            end = time.time()
        elif name == "refuse":
            await self.emulator_admin("refuse?seconds=6")
            await self.emulator_admin("drop")
            await asyncio.sleep(6)
            end = time.time()
        elif name == "redis":
            await self.stop_redis()
            await asyncio.sleep(3)
            await self.start_redis()
            end = time.time()
        elif name == "leader-kill":
            leaders = [c for c in self.collectors if c.alive and c.is_leader]
            if leaders:
                leader = leaders[0]
                await leader.scrape()  # its final counts, just before the kill
                leader.process.send_signal(signal.SIGKILL)
                await leader.process.wait()
                detail = leader.name
                end = time.time()
                await self.start_collector(upstream)  # the next standby
        self.faults.append({"fault": name, "at": started, "end": end, "detail": detail})
        log(f"fault {name} {detail}".rstrip())

    # -- run ------------------------------------------------------------------------------------
    async def sampler(self) -> None:
        while True:
            now = time.time()
            for proc in self.collectors:
                await proc.scrape()
                proc.sample(now)
            await asyncio.sleep(1.0)

    async def run(self) -> dict[str, Any]:
        await self.start_redis()
        upstream = await self.start_emulator()
        await self.start_collector(upstream)
        await asyncio.sleep(1.0)
        await self.start_collector(upstream)
        await self.start_consumers()
        self.t0 = time.time()
        sampler = asyncio.create_task(self.sampler())
        duration = self.args.minutes * 60 if self.args.minutes else WARMUP + CYCLE_LENGTH + 10
        schedule: list[tuple[float, str]] = []
        offset = WARMUP
        while offset + CYCLE_LENGTH <= duration or not schedule:
            schedule.extend((offset + at, name) for at, name in CYCLE)
            offset += CYCLE_LENGTH
        log(f"soak for {duration:.0f} s, {len(schedule)} faults, {self.args.consumers} consumers")
        try:
            for at, name in schedule:
                await asyncio.sleep(max(0.0, self.t0 + at - time.time()))
                await self.fault(name, upstream)
            await asyncio.sleep(max(0.0, self.t0 + duration - time.time()))
        finally:
            for proc in self.collectors:
                await proc.scrape()
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            results = await self.stop_all()
        return results

    async def stop_all(self) -> dict[str, Any]:
        consumers: dict[str, Any] = {}
        for name, process, out in self.consumers:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
            if process.returncode is None:
                process.kill()
                await process.wait()
            consumers[name] = json.loads(out.read_text()) if out.exists() else {}
        for proc in self.collectors:
            if proc.alive:
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.collectors:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.process.wait(), 15)
            if proc.alive:
                proc.process.kill()
                await proc.process.wait()
        if self.emulator is not None and self.emulator.returncode is None:
            self.emulator.terminate()
            await self.emulator.wait()
        await self.stop_redis()
        return self.report(consumers)

    # -- results --------------------------------------------------------------------------------
    def report(self, consumers: dict[str, Any]) -> dict[str, Any]:
        published = dict.fromkeys(TOPICS, 0)
        announced = 0
        for proc in self.collectors:
            metrics = proc.last_metrics
            for topic in TOPICS:
                key = f'upbit_fanout_events_published_total{{type="{TYPE_OF[topic]}"}}'
                published[topic] += int(metrics.get(key, 0))
            announced += int(metrics.get("upbit_fanout_gaps_total", 0))
        per_consumer = {}
        for name, data in consumers.items():
            counts = data.get("counts", {})
            gaps = data.get("gaps", [])
            per_consumer[name] = {
                "delivered": counts,
                "cached": data.get("cached", {}),
                "delivered_ratio": {
                    t: round(counts.get(t, 0) / published[t], 5) if published[t] else None
                    for t in TOPICS
                },
                "gaps_seen": {
                    "collector": sum(g["source"] == "collector" for g in gaps),
                    "redis": sum(g["source"] == "redis" for g in gaps),
                },
            }
        faults = []
        for index, fault in enumerate(self.faults):
            end = fault["end"]
            later = self.faults[index + 1]["at"] if index + 1 < len(self.faults) else end + 30
            horizon = min(end + 30, later)  # never into the next fault
            recovery = []
            gap_after = []
            holes = []
            for data in consumers.values():
                bins = {int(k): v for k, v in data.get("bins", {}).items()}
                first = min((b for b in bins if b * BIN >= end), default=None)
                recovery.append(None if first is None else max(0.0, first * BIN - end))
                seen = [
                    g["received_at"]
                    for g in data.get("gaps", [])
                    if fault["at"] <= g["received_at"] <= horizon
                ]
                gap_after.append(round(min(seen) - end, 3) if seen else None)
                holes.append(round(longest_silence(bins, fault["at"] - 1, horizon), 1))
            silent = [
                hole > 1.0 and after is None for hole, after in zip(holes, gap_after, strict=True)
            ]
            worst = None if any(r is None for r in recovery) else max(recovery)
            faults.append(
                {
                    **fault,
                    "t": round(fault["at"] - self.t0, 1),
                    "duration_s": round(end - fault["at"], 2),
                    "recovery_s": None if worst is None else round(worst, 2),
                    "recovered": worst is not None and worst < 30,
                    "gap_seen_after_end_s": gap_after,
                    "hole_s": holes,
                    "silent_hole": any(silent),
                }
            )
        resources = {
            proc.name: {
                "rss_mb_max": round(max((s["rss_mb"] for s in proc.samples), default=0), 1),
                "cpu_percent_mean": round(
                    sum(s["cpu_percent"] for s in proc.samples[1:]) / max(1, len(proc.samples) - 1),
                    1,
                ),
                "samples": [
                    {k: round(v, 3) if k != "t" else round(v - self.t0, 1) for k, v in s.items()}
                    for s in proc.samples
                ],
            }
            for proc in self.collectors
        }
        return {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "settings": {
                "minutes": self.args.minutes,
                "rate": self.args.rate,
                "consumers": self.args.consumers,
                "topics": list(TOPICS),
                "python": sys.version.split()[0],
            },
            "published": published,
            "gaps_announced": announced,
            "consumers": per_consumer,
            "faults": faults,
            "all_recovered": all(f["recovered"] for f in faults),
            "silent_holes": [f["fault"] for f in faults if f["silent_hole"]],
            "collectors": resources,
            "_bins": {name: data.get("bins", {}) for name, data in consumers.items()},
            "_t0": self.t0,
        }


def longest_silence(bins: dict[int, int], start: float, end: float) -> float:
    """The longest run of seconds without a live event between ``start`` and ``end``."""
    longest = run = 0
    for index in range(int(start / BIN), int(end / BIN) + 1):
        if bins.get(index):
            run = 0
        else:
            run += 1
            longest = max(longest, run)
    return longest * BIN


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    try:
        import matplotlib  # noqa: PLC0415 - a bench-only extra, optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib missing: pip install -e '.[bench]' for the plots", file=sys.stderr)
        return []
    t0 = results["_t0"]
    colors = {"drop": "tab:red", "stall": "tab:orange", "refuse": "tab:purple",
              "redis": "tab:brown", "leader-kill": "tab:gray"}  # fmt: skip
    written = []
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for name, bins in results["_bins"].items():
        per_second: dict[int, int] = {}
        for key, count in bins.items():
            second = int(int(key) * BIN - t0)
            per_second[second] = per_second.get(second, 0) + count
        xs = list(range(0, max(per_second, default=0) + 1))
        ax.plot(xs, [per_second.get(x, 0) for x in xs], linewidth=0.9, label=name)
    seen = set()
    for fault in results["faults"]:
        start, end = fault["at"] - t0, max(fault["end"] - t0, fault["at"] - t0 + 0.5)
        label = fault["fault"] if fault["fault"] not in seen else None
        seen.add(fault["fault"])
        ax.axvspan(start, end, color=colors.get(fault["fault"], "k"), alpha=0.25, label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("live events received per second")
    ax.set_title(
        f"upbit-fanout soak: {results['settings']['consumers']} consumers, "
        f"{results['settings']['rate']:g} events/s upstream; shaded: faults"
    )
    ax.legend(loc="lower right", fontsize=8, ncol=3)
    fig.tight_layout()
    path = out_dir / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    for name, data in results["collectors"].items():
        xs = [s["t"] for s in data["samples"]]
        ax1.plot(xs, [s["rss_mb"] for s in data["samples"]], label=name)
        ax2.plot(xs, [s["cpu_percent"] for s in data["samples"]], label=name)
    for fault in results["faults"]:
        for ax in (ax1, ax2):
            ax.axvline(fault["at"] - t0, color=colors.get(fault["fault"], "k"), alpha=0.4)
    ax1.set_ylabel("RSS (MB)")
    ax2.set_ylabel("CPU (%)")
    ax2.set_xlabel("seconds")
    ax1.legend(fontsize=8)
    ax1.set_title("collector processes (vertical lines: faults)")
    fig.tight_layout()
    path = out_dir / "soak_resources.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=0, help="0: the quick run (~2.5 min)")
    parser.add_argument("--rate", type=float, default=200.0, help="emulator events/s in total")
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not COMMAND.exists():
        raise SystemExit(f"{COMMAND} missing: make .venv/.installed-dev")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(args, Path(tmp))
        results = asyncio.run(soak.run())
    written = plot(results, args.out)
    bins = results.pop("_bins")
    t0 = results.pop("_t0")
    del bins, t0
    path = args.out / "soak.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    keys = ("published", "gaps_announced", "all_recovered", "silent_holes")
    print(json.dumps({k: results[k] for k in keys}))
    for name, data in results["consumers"].items():
        print(name, data["delivered"], data["gaps_seen"])
    for fault in results["faults"]:
        print(
            f"{fault['t']:7.1f} s {fault['fault']:<12} recovery {fault['recovery_s']} s, "
            f"hole {max(fault['hole_s'], default=0)} s, gap seen {fault['gap_seen_after_end_s']}"
        )
    print("wrote", path, *written)
    return 0 if results["all_recovered"] else 1


if __name__ == "__main__":
    sys.exit(main())
