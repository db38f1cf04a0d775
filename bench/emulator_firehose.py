"""How many frames per second the emulator sends in firehose mode (``--rate 0``) on one core.

Starts ``upbit-fanout emulator --rate 0 --port 0`` as a subprocess pinned to one CPU, connects
counting clients from this process (pinned to another CPU when there is one), subscribes them to
ticker + trade + orderbook for every KRW market, and measures for ``--seconds``:

- frames/s the emulator SENT (its own counter, read over ``GET /_emulator/state``),
- frames/s the clients RECEIVED,
- CPU seconds the emulator process used per frame (from /proc).

Prints the figures and writes them to ``bench/results/emulator_firehose.json``. Target: at least
100,000 frames/s on one core (at most 10 us of emulator CPU per frame) without compression, so that
the emulator is never the bottleneck of other benchmarks. ``frames_per_s_per_core`` (frames sent per
CPU second of the emulator) is the figure the target is judged on: on a shared machine the wall
clock rate also measures the neighbours.

``--baseline REF`` measures the emulator of another git revision (``main``, a tag, a commit) in the
same run, from a ``git archive`` of it laid out as the ``upbit_fanout`` package and put first on
``PYTHONPATH``; ``--rounds N`` alternates baseline and current N times and reports the medians.

    .venv/bin/python bench/emulator_firehose.py [--seconds 10] [--clients 1] [--compression none]
        [--baseline main] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from upbit_fanout.emulator.markets import default_markets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET = 100_000  # frames/s on one core


def emulator_command() -> list[str]:
    override = os.environ.get("EMULATOR_COMMAND")  # e.g. "python -m upbit_fanout.cli"
    if override:
        return override.split()
    script = Path(sys.executable).with_name("upbit-fanout")
    if script.exists():
        return [str(script)]
    found = shutil.which("upbit-fanout")
    return [found] if found else [sys.executable, "-m", "upbit_fanout.cli"]


def baseline_tree(ref: str, into: Path) -> Path:
    """``git archive`` of ``ref`` laid out as an importable ``upbit_fanout`` package; the path to
    put first on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    tree = into / "tree"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    package_dir = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    path = into / "path"
    for package, source in sorted(package_dir.items()):
        target = path.joinpath(*package.split("."))
        shutil.copytree(tree / source, target, dirs_exist_ok=True)
    return path


def display(command: list[str]) -> str:
    """The command as the results show it: paths inside the checkout made relative."""
    prefix = str(ROOT) + os.sep
    return " ".join(part.removeprefix(prefix) for part in command)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def get_state(http_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(http_url + "/_emulator/state", timeout=10) as response:
        state: dict[str, Any] = json.load(response)
        return state


class Counter(threading.Thread):
    """One client connection that counts data frames (and bytes) until told to stop."""

    def __init__(self, url: str, codes: list[str], compression: str | None, index: int) -> None:
        super().__init__(daemon=True, name=f"client-{index}")
        self.frames = 0
        self.bytes = 0
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.url = url
        self.compression = compression
        self.request = json.dumps(
            [
                {"ticket": f"bench-{index}"},
                {"type": "ticker", "codes": codes},
                {"type": "trade", "codes": codes},
                {"type": "orderbook", "codes": codes},
            ]
        )

    def run(self) -> None:
        try:
            self.count()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.ready.set()

    def count(self) -> None:
        raise NotImplementedError


class WebsocketsCounter(Counter):
    """A plain ``websockets`` sync client (decodes every frame; deflate if asked)."""

    def count(self) -> None:
        with connect(
            self.url, compression=self.compression, max_size=None, ping_interval=None
        ) as ws:
            ws.send(self.request)
            self.ready.set()
            recv = ws.recv
            while not self.stop.is_set():
                data = recv(timeout=5, decode=False)
                self.frames += 1
                self.bytes += len(data)


class RawCounter(Counter):
    """A minimal RFC 6455 client that counts frames by their headers and skips payloads.

    Cheap enough (about 1 us per frame) that the emulator, not the client, is the bottleneck.
    No extension is offered, so frames arrive uncompressed and unmasked.
    """

    def count(self) -> None:
        hostport, _, path = self.url.removeprefix("ws://").partition("/")
        host, _, port = hostport.partition(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                head += chunk
            head, _, pending = head.partition(b"\r\n\r\n")
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.decode("latin-1"))
            payload = self.request.encode()
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            length = len(payload)
            if length < 126:
                header = bytes((0x81, 0x80 | length))
            else:
                header = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
            sock.sendall(header + mask + masked)
            self.ready.set()
            self._count_frames(sock, pending)

    def _count_frames(self, sock: socket.socket, pending: bytes) -> None:
        skip = 0  # payload bytes of the current frame still to come
        while not self.stop.is_set():
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            self.bytes += len(chunk)
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            data = pending + chunk[skip:] if pending else chunk[skip:]
            skip = 0
            i, n = 0, len(data)
            frames = 0
            while n - i >= 2:
                size = data[i + 1] & 0x7F
                if size < 126:
                    start = i + 2
                elif size == 126:
                    if n - i < 4:
                        break
                    size = int.from_bytes(data[i + 2 : i + 4], "big")
                    start = i + 4
                else:
                    if n - i < 10:
                        break
                    size = int.from_bytes(data[i + 2 : i + 10], "big")
                    start = i + 10
                if data[i] & 0x0F in (1, 2):
                    frames += 1
                end = start + size
                if end > n:
                    skip = end - n
                    i = n
                    break
                i = end
            self.frames += frames
            pending = data[i:] if i < n else b""


def measure(args: argparse.Namespace, codes: list[str], python_path: Path | None) -> dict[str, Any]:
    """One emulator process in firehose mode, measured for ``args.seconds``; its figures."""
    cpus = sorted(os.sched_getaffinity(0))
    emulator_cpu = cpus[0]
    client_cpus = set(cpus[1:]) or {cpus[0]}
    env = dict(os.environ)
    if python_path is None:
        command = [*emulator_command(), "--log-level", "WARNING", "emulator"]
    else:
        command = [sys.executable, "-m", "upbit_fanout.cli", "--log-level", "WARNING", "emulator"]
        env["PYTHONPATH"] = os.pathsep.join(
            [str(python_path), *filter(None, [env.get("PYTHONPATH")])]
        )
        where = subprocess.run(
            [sys.executable, "-c", "import upbit_fanout.emulator as e; print(e.__file__)"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not where.startswith(str(python_path)):
            raise SystemExit(f"the baseline would import {where}, not the baseline tree")
    # room for every client in the first second (0 = off is not accepted by every revision)
    command += ["--rate", "0", "--port", "0", "--connect-limit", str(max(5, args.clients))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        os.sched_setaffinity(process.pid, {emulator_cpu})
        os.sched_setaffinity(0, client_cpus)
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("ws://"):
            raise SystemExit(f"the emulator did not print its URL (got {base_url!r})")
        http_url = "http://" + base_url.removeprefix("ws://")
        compression = None if args.compression == "none" else "deflate"
        kind = RawCounter if args.client == "raw" else WebsocketsCounter
        counters: list[Counter] = [
            kind(base_url + "/websocket/v1", codes, compression, i) for i in range(args.clients)
        ]
        for counter in counters:
            counter.start()
        for counter in counters:
            counter.ready.wait(10)
            if counter.error is not None:
                raise SystemExit(f"client failed: {counter.error!r}")
        time.sleep(args.warmup)

        state0, cpu0, t0 = get_state(http_url), cpu_seconds(process.pid), time.monotonic()
        received0 = sum(c.frames for c in counters)
        bytes0 = sum(c.bytes for c in counters)
        time.sleep(args.seconds)
        state1, cpu1, t1 = get_state(http_url), cpu_seconds(process.pid), time.monotonic()
        received1 = sum(c.frames for c in counters)
        bytes1 = sum(c.bytes for c in counters)
        for counter in counters:
            counter.stop.set()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()
        os.sched_setaffinity(0, cpus)

    elapsed = t1 - t0
    sent = state1["frames_sent"] - state0["frames_sent"]
    events = state1["counters"].get("events_generated", 0) - state0["counters"].get(
        "events_generated", 0
    )
    received = received1 - received0
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + system
    return {
        "command": display(command),
        "emulator_cpu": emulator_cpu,
        "client_cpus": sorted(client_cpus),
        "seconds": round(elapsed, 3),
        "frames_sent_per_s": round(sent / elapsed),
        "frames_received_per_s": round(received / elapsed),
        "events_generated_per_s": round(events / elapsed),
        "mbytes_received_per_s": round((bytes1 - bytes0) / elapsed / 1e6, 2),
        "emulator_cpu_utilisation": round(cpu / elapsed, 3),
        "emulator_cpu_us_per_frame": round(cpu / sent * 1e6, 2) if sent else None,
        "emulator_user_us_per_frame": round(user / sent * 1e6, 2) if sent else None,
        "emulator_system_us_per_frame": round(system / sent * 1e6, 2) if sent else None,
        "frames_per_s_per_core": round(sent / cpu) if cpu else None,
        "emulator_exit_code": exit_code,
    }


_MEDIAN_KEYS = (
    "frames_sent_per_s",
    "frames_received_per_s",
    "events_generated_per_s",
    "mbytes_received_per_s",
    "emulator_cpu_utilisation",
    "emulator_cpu_us_per_frame",
    "emulator_user_us_per_frame",
    "emulator_system_us_per_frame",
    "frames_per_s_per_core",
)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of the rounds (the figures of the single run when there is one)."""
    out = dict(runs[0])
    for key in _MEDIAN_KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    out["emulator_exit_code"] = max(r["emulator_exit_code"] for r in runs)
    if len(runs) > 1:
        out["rounds"] = [{k: r[k] for k in _MEDIAN_KEYS} for r in runs]
    return out


def line(label: str, r: dict[str, Any]) -> str:
    return (
        f"{label}: sent {r['frames_sent_per_s']:,.0f} frames/s "
        f"({r['emulator_cpu_us_per_frame']} us CPU/frame: "
        f"{r['emulator_user_us_per_frame']} user + {r['emulator_system_us_per_frame']} system, "
        f"{r['emulator_cpu_utilisation']:.0%} of one core; "
        f"{r['frames_per_s_per_core']:,.0f} frames/s per core); clients received "
        f"{r['frames_received_per_s']:,.0f} frames/s ({r['mbytes_received_per_s']} MB/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement length")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--clients", type=int, default=1, help="client connections")
    parser.add_argument("--codes", type=int, default=289, help="KRW markets to subscribe")
    parser.add_argument(
        "--client",
        choices=["raw", "websockets"],
        default="raw",
        help="raw: count frames by their headers (cheap); websockets: a real client",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "deflate"],
        default="none",
        help="what the websockets client offers (the emulator accepts permessage-deflate)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure the emulator of this git revision (e.g. main), in the same run",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measurements of each emulator (medians reported)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "emulator_firehose.json")
    args = parser.parse_args(argv)
    if args.client == "raw" and args.compression != "none":
        raise SystemExit("--compression deflate needs --client websockets")

    codes = [m.code for m in default_markets() if m.quote == "KRW"][: args.codes]
    current: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="emulator-baseline-") as tmp:
        tree = baseline_tree(args.baseline, Path(tmp)) if args.baseline else None
        for _ in range(max(1, args.rounds)):
            if tree is not None:  # alternate, so that both see the same machine
                baseline.append(measure(args, codes, tree))
                print(line(f"baseline {args.baseline}", baseline[-1]), flush=True)
            current.append(measure(args, codes, None))
            print(line("this tree", current[-1]), flush=True)

    result_now = summary(current)
    result: dict[str, Any] = {
        "benchmark": "emulator_firehose",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": result_now.pop("command"),
        "bench_command": " ".join(["bench/emulator_firehose.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cores": os.cpu_count(),
            "emulator_cpu": result_now.pop("emulator_cpu"),
            "client_cpus": result_now.pop("client_cpus"),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "seconds": result_now.pop("seconds"),
            "rounds": max(1, args.rounds),
            "clients": args.clients,
            "codes": len(codes),
            "types": ["ticker", "trade", "orderbook"],
            "client": args.client,
            "client_compression": args.compression,
        },
        **result_now,
        "target_frames_per_s_per_core": TARGET,
        "target_met": (result_now["frames_per_s_per_core"] or 0) >= TARGET,
    }
    if baseline:
        base = summary(baseline)
        base.pop("emulator_cpu")
        base.pop("client_cpus")
        result["baseline"] = {"ref": args.baseline, **base}
        # each round's pair ran back to back on the same machine: the median of their ratios
        # is steadier than the ratio of the medians when the load moves between rounds
        ratios = [
            c["emulator_cpu_us_per_frame"] / b["emulator_cpu_us_per_frame"]
            for b, c in zip(baseline, current, strict=True)
            if b["emulator_cpu_us_per_frame"] and c["emulator_cpu_us_per_frame"]
        ]
        if ratios:
            result["cpu_per_frame_vs_baseline"] = round(statistics.median(ratios), 3)
            result["cpu_per_frame_vs_baseline_per_round"] = [round(r, 3) for r in ratios]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    rounds = f" (medians of {args.rounds} rounds)" if args.rounds > 1 else ""
    if baseline:
        print(line(f"baseline {args.baseline}{rounds}", result["baseline"]))
    print(line(f"this tree{rounds}", result))
    if "cpu_per_frame_vs_baseline" in result:
        print(
            f"CPU per frame: {result['cpu_per_frame_vs_baseline']:.2f}x the baseline's "
            f"({1 / result['cpu_per_frame_vs_baseline']:.2f}x the frames per core"
            f"{', median of the rounds' if len(ratios) > 1 else ''})"
        )
    print(f"target {TARGET:,} frames/s on one core: {'met' if result['target_met'] else 'NOT met'}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
