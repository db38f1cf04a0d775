"""Fan-out capacity: a single Redis versus a three-primary Redis Cluster, in one run.

    .venv/bin/python bench/fanout_capacity.py                  # N = 4 and 8, 5 s each, two
                                                               # rounds (about 1.5 min), writes
                                                               # bench/results/fanout_capacity.json
    .venv/bin/python bench/fanout_capacity.py --subscribers 2 --seconds 3 --rounds 1 --no-write

What runs, per deployment and per N:

- Redis: a ``redis-server`` the bench starts on a free loopback port (``--save ""``), and a
  Cluster of three ``redis-server --cluster-enabled yes`` joined with ``redis-cli --cluster
  create`` (no replicas), started by tests/deployments.py as the tests start theirs (with a
  256 MB pub/sub output-buffer limit). Both are stopped at the end. Nothing touches the shared
  server.
- publisher: this process, the collector's own :class:`collector.publisher.Publisher` (fenced,
  as a leader publishes: one Lua script per batch on a single Redis; one script per node, with
  ``SPUBLISH``, on the Cluster), sending batches of ``--batch`` events round-robin over
  ``--topics`` ticker topics (about a third of the channels on each Cluster node), as fast as
  it can. A 200-byte payload.
- N subscriber processes (``--role subscriber``), each subscribed to EVERY topic (a consumer of
  the whole feed: the fan-out worst case), reading with a bare socket and hiredis's reply parser
  (no client library: the bench measures Redis, not Python): ``SUBSCRIBE`` on the single Redis,
  ``SSUBSCRIBE`` of each channel on the node owning its slot on the Cluster (one socket per
  node). Each counts the messages it receives inside the measuring window (SIGUSR1 opens it,
  SIGUSR2 closes it; one second of warm-up before).

Both deployments run side by side; the runs alternate between them (``--rounds`` times each
configuration), and the best round of each configuration is reported too.

Reported per run: ``deliveries_per_second`` (messages received by all subscribers in the window
/ window), ``published_per_second``, the CPU of each Redis process over the window (from
``/proc/PID/stat``, utime + stime, in percent of one core), ``redis_cpu_us_per_delivery`` (all
Redis CPU / deliveries) and ``extrapolated_ceiling_per_second``: the delivery rate at which the
busiest Redis process would use a whole core at the measured cost per delivery. That last one
is an extrapolation (Redis's cost per message is close to linear until its core is full), given
because on a small machine the publisher and the subscribers, not Redis, run out of CPU first.

Caveat printed with the figures: the machine this was written on has 2 cores, shared with other
work; the publisher and the subscribers run on the same 2 cores as every Redis process, so the
figures show where CPU goes (how the Cluster spreads the fan-out over three processes), not what
three machines would do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hiredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.deployments
from tests.deployments import (
    ClusterDeployment,
    redis_server_args,
    spawn,
    stop_processes,
    wait_ping,
)
from tests.helpers import free_port
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.subscriptions.connection import channel_node, open_redis
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import TAKE_SCRIPT

RESULTS = Path(__file__).resolve().parent / "results" / "fanout_capacity.json"
CODES = [f"KRW-C{i:03d}" for i in range(1000)]
TICKS = 1.0 / os.sysconf("SC_CLK_TCK")
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


# -- deployments ------------------------------------------------------------------------------
# Every Redis process gets this limit: a subscriber of the whole feed falls behind in bursts, and
# the default (32 MB, or 8 MB for 60 s) would disconnect it in the middle of a measurement.
PUBSUB_BUFFER = ("--client-output-buffer-limit", "pubsub 256mb 256mb 0")


class Deployment:
    """A single ``redis-server`` or a three-primary Cluster, started the way the tests start
    theirs (tests/deployments.py), plus the CPU time of its processes."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.ports: list[int] = []
        self._single: list[subprocess.Popen[bytes]] = []
        self._cluster = (
            ClusterDeployment(workdir, extra_args=PUBSUB_BUFFER, node_timeout_ms=2000)
            if kind == "cluster"
            else None
        )

    @property
    def url(self) -> str:
        if self._cluster is not None:
            return self._cluster.url
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        if self._cluster is not None:
            self._cluster.start()
            self.ports = self._cluster.ports
            return
        port = free_port()
        self._single.append(
            spawn(redis_server_args(REDIS_SERVER, port, *PUBSUB_BUFFER, workdir=self.workdir))
        )
        wait_ping(port)
        self.ports = [port]

    def cpu_seconds(self) -> list[float]:
        """utime + stime of each Redis process, in seconds."""
        pids = self._cluster.pids() if self._cluster is not None else [p.pid for p in self._single]
        out = []
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) * TICKS)
        return out

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
        stop_processes(self._single)


# -- subscriber process -----------------------------------------------------------------------
def subscriber(spec: dict[str, Any]) -> None:
    """Subscribe to every channel, count messages in the window, print the count at SIGTERM."""
    counts = {"total": 0, "opened": 0, "closed": 0}
    state = {"open": False, "done": False}

    def opened(*_: object) -> None:
        counts["opened"] = counts["total"]
        state["open"] = True

    def closed(*_: object) -> None:
        counts["closed"] = counts["total"]

    def done(*_: object) -> None:
        state["done"] = True

    signal.signal(signal.SIGUSR1, opened)
    signal.signal(signal.SIGUSR2, closed)
    signal.signal(signal.SIGTERM, done)
    selector = selectors.DefaultSelector()
    expected = 0
    for (host, port), channels in spec["by_node"]:
        sock = socket.create_connection((host, port))
        command = "SSUBSCRIBE" if spec["sharded"] else "SUBSCRIBE"
        sock.sendall(b"".join(hiredis.pack_command((command, channel)) for channel in channels))
        expected += len(channels)
        selector.register(sock, selectors.EVENT_READ, hiredis.Reader())
    confirmed = 0
    announced = False
    while not state["done"]:
        for key, _ in selector.select(timeout=0.2):
            try:
                data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except InterruptedError:
                continue
            if not data:
                state["done"] = True
                break
            reader = key.data
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                kind = reply[0]
                if kind in (b"message", b"smessage"):
                    counts["total"] += 1
                elif kind in (b"subscribe", b"ssubscribe"):
                    confirmed += 1
        if not announced and confirmed >= expected:
            print("ready", flush=True)
            announced = True
    print(json.dumps({"window": counts["closed"] - counts["opened"]}), flush=True)


# -- the run ----------------------------------------------------------------------------------
async def run_one(
    deployment: Deployment, n: int, topics: int, batch: int, seconds: float
) -> dict[str, Any]:
    keys = Keys(f"cap{os.getpid()}n{n}")
    r = await open_redis(deployment.url)
    if deployment.kind == "cluster":
        keys = keys.clustered()
    names = [f"ticker:{code}" for code in CODES[:topics]]
    channels = [keys.channel(name) for name in names]
    by_node: dict[tuple[str, int], list[str]] = {}
    for channel in channels:
        node = (
            channel_node(r, channel)
            if deployment.kind == "cluster"
            else ("127.0.0.1", deployment.ports[0])
        )
        by_node.setdefault(node, []).append(channel)
    spec = json.dumps({"by_node": list(by_node.items()), "sharded": deployment.kind == "cluster"})
    subs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role",
            "subscriber",
            "--spec",
            spec,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(n)
    ]
    try:
        for sub in subs:
            assert sub.stdout is not None
            line = await asyncio.wait_for(sub.stdout.readline(), 30)
            assert line.strip() == b"ready", line
        publisher = Publisher(r, keys)
        reply = await r.eval(TAKE_SCRIPT, 2, keys.leader, keys.leader_token, "bench", 600_000, "0")
        publisher.fence = (keys.leader.encode(), bytes(reply[1]))
        payload = (
            b'{"type":"ticker","code":"KRW-C000","trade_price":"1.0","pad":"' + b"x" * 140 + b'"}'
        )
        items = [Outgoing(topic=name, payload=payload, type="ticker") for name in names]
        stop = asyncio.Event()
        sent = {"n": 0}

        async def pump() -> None:
            i = 0
            while not stop.is_set():
                chunk = [items[(i + k) % len(items)] for k in range(batch)]
                i += batch
                await publisher.publish(chunk)
                sent["n"] += batch

        task = asyncio.create_task(pump())
        await asyncio.sleep(1.0)  # warm-up
        for sub in subs:
            sub.send_signal(signal.SIGUSR1)
        sent0, cpu0, t0 = sent["n"], deployment.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        for sub in subs:
            sub.send_signal(signal.SIGUSR2)
        sent1, cpu1, t1 = sent["n"], deployment.cpu_seconds(), time.monotonic()
        stop.set()
        await task
        window = t1 - t0
        delivered = 0
        for sub in subs:
            sub.send_signal(signal.SIGTERM)
            assert sub.stdout is not None
            out = await asyncio.wait_for(sub.stdout.readline(), 30)
            delivered += int(json.loads(out)["window"])
            await sub.wait()
        cpu = [(b - a) / window for a, b in zip(cpu0, cpu1, strict=True)]
        per_second = delivered / window
        return {
            "deployment": deployment.kind,
            "subscribers": n,
            "topics": topics,
            "batch": batch,
            "window_seconds": round(window, 2),
            "published_per_second": round((sent1 - sent0) / window),
            "deliveries_per_second": round(delivered / window),
            "redis_cpu_percent": [
                round(100 * (b - a) / window, 1) for a, b in zip(cpu0, cpu1, strict=True)
            ],
            "channels_per_node": sorted(len(v) for v in by_node.values()),
            "redis_cpu_us_per_delivery": round(1e6 * sum(cpu) / max(delivered / window, 1), 3),
            # An extrapolation, not a measurement: the deliveries per second at which the
            # busiest Redis process would reach one full core at this run's cost per delivery.
            "extrapolated_ceiling_per_second": round(per_second / max(*cpu, 1e-9)),
        }
    finally:
        for sub in subs:
            with contextlib.suppress(ProcessLookupError):
                sub.kill()
        await r.aclose()


async def main(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fanout-capacity-") as workdir:
        deployments = []
        try:
            for kind in ("single", "cluster"):
                path = Path(workdir) / kind
                path.mkdir()
                deployments.append(Deployment(kind, path))
                deployments[-1].start()
            # Rounds alternate the deployments, so that a burst of load from elsewhere on a
            # shared machine does not land on one of them only.
            for round_number in range(1, args.rounds + 1):
                for n in args.subscribers:
                    for deployment in deployments:
                        result = await run_one(deployment, n, args.topics, args.batch, args.seconds)
                        result["round"] = round_number
                        results.append(result)
                        print(
                            f"{deployment.kind:8} N={n:2} round {round_number}: "
                            f"{result['deliveries_per_second']:>9,} deliveries/s, "
                            f"{result['published_per_second']:>8,} published/s, Redis CPU "
                            f"{result['redis_cpu_percent']} % of a core, "
                            f"{result['redis_cpu_us_per_delivery']} us Redis CPU/delivery, "
                            f"ceiling ~{result['extrapolated_ceiling_per_second']:,}/s "
                            "(extrapolated)",
                            flush=True,
                        )
        finally:
            for deployment in deployments:
                deployment.stop()
    best: dict[str, dict[str, Any]] = {}
    for result in results:
        name = f"{result['deployment']} N={result['subscribers']}"
        if (
            name not in best
            or result["deliveries_per_second"] > best[name]["deliveries_per_second"]
        ):
            best[name] = result
    print("best of the rounds:")
    for name, result in best.items():
        print(
            f"  {name:12} {result['deliveries_per_second']:>9,} deliveries/s "
            f"(Redis CPU {result['redis_cpu_percent']} %)"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    note = (
        f"{os.cpu_count()} cores shared with other work at the time (load average {load} at "
        "the end); publisher, subscribers and every Redis process compete for them"
    )
    print(f"machine: {note}")
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "command": "python bench/fanout_capacity.py " + " ".join(sys.argv[1:]),
                    "machine": {
                        "cores": os.cpu_count(),
                        "python": platform.python_version(),
                        "note": note,
                    },
                    "redis_version": args.redis_version,
                    "best_of_rounds": best,
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {RESULTS}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["main", "subscriber"], default="main")
    parser.add_argument("--spec", default="")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--topics", type=int, default=30)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.role == "subscriber":
        spec = json.loads(args.spec)
        spec["by_node"] = [(tuple(node), channels) for node, channels in spec["by_node"]]
        subscriber(spec)
        return
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not installed: this bench starts its own Redis")
    args.redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
