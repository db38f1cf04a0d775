"""Small helpers shared by the tests (import them; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "data" / "upbit-samples"
"""Real Upbit frames from public sources, kept in the repository (sources: README.md there)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(
    predicate: Callable[[], object], within: float = 5.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is truthy; fail the test with a clear message on timeout."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
