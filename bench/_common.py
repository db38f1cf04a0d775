"""What several benches share, written once: the emulator in a process of its own, the clean-up
of a bench's keys on the shared Redis, rounds that alternate their modes, and the report.

A bench runs as a script (``.venv/bin/python bench/NAME.py``), so this folder is first on
``sys.path`` and ``from _common import ...`` finds this module. (Redis deployments a bench starts
for itself come from tests/deployments.py, as the tests' do: bench/fanout_capacity.py.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

RESULTS = Path(__file__).resolve().parent / "results"
"""Where every bench writes its JSON."""


async def start_emulator_process(*, rate: float, seed: int) -> tuple[subprocess.Popen[bytes], str]:
    """``upbit-fanout emulator`` in a process of its own, so that only the collector's work is
    in the bench's process: the process and the base URL it prints (``ws://127.0.0.1:PORT``).
    Stop it with :func:`stop_process`."""
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read line by line
        [sys.executable, "-m", "upbit_fanout.cli", "emulator", "--port", "0",
         "--seed", str(seed), "--rate", str(rate)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    return process, line.decode().strip()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


async def delete_prefix(redis: aioredis.Redis, prefix: str) -> None:
    """Delete the bench's own keys (``prefix:*``) from the shared Redis."""
    async for key in redis.scan_iter(match=f"{prefix}:*"):
        await redis.delete(key)


def alternating(modes: Sequence[str], rounds: int) -> Iterator[str]:
    """Every mode once a round, in reverse order every other round, so that a burst of load
    from elsewhere on a shared machine does not land on one mode only."""
    for index in range(rounds):
        yield from (modes if index % 2 == 0 else modes[::-1])


def medians(
    rounds: Mapping[str, Sequence[Mapping[str, Any]]], fields: Sequence[str], digits: int
) -> dict[str, dict[str, float]]:
    """Per mode, the median of each field over its rounds."""
    return {
        mode: {f: round(float(statistics.median(r[f] for r in runs)), digits) for f in fields}
        for mode, runs in rounds.items()
    }


def report_head(bench: str) -> dict[str, Any]:
    """The fields every report of :func:`write_report` starts with: which bench, the command
    line, when, and the machine."""
    return {
        "bench": bench,
        "command": f"python bench/{bench}.py " + " ".join(sys.argv[1:]),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """The report as indented JSON (the folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
