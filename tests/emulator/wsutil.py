"""Helpers for the emulator's server tests: a started emulator, a client, plain HTTP GET."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from upbit_fanout.emulator.markets import Market, default_markets
from upbit_fanout.emulator.server import Emulator

TEST_CODES = frozenset(
    {"KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "USDT-BTC", "BTC-ETH", "BTC-XRP"}
)
SMALL_UNIVERSE: tuple[Market, ...] = tuple(m for m in default_markets() if m.code in TEST_CODES)
"""Most tests need a few markets; building the simulator for all 855 takes ~0.2 s per test."""

TEST_LIMITS: dict[str, Any] = {
    # each test gets its own emulator; loose limits unless a test is about them
    "connect_limit_per_s": 1000,
    "messages_per_s": 1000,
    "messages_per_min": 10_000,
    "error_close_delay": 0.05,
}


@asynccontextmanager
async def started(**kwargs: Any) -> AsyncIterator[Emulator]:
    options = {"seed": 1, "rate": 2000.0, "markets": SMALL_UNIVERSE, **TEST_LIMITS, **kwargs}
    async with Emulator(port=0, **options) as emu:
        yield emu


@asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    # max_queue=None: a test that stops reading while frames stream in would otherwise pause
    # reading, never see the server's close frame, and wait close_timeout on exit.
    options = {"open_timeout": 5, "close_timeout": 2, "max_queue": None, **kwargs}
    async with connect(url, **options) as ws:
        yield ws


def request(*objects: dict[str, Any], fmt: str | None = None, ticket: str = "test") -> str:
    items: list[dict[str, Any]] = [{"ticket": ticket}, *objects]
    if fmt is not None:
        items.append({"format": fmt})
    return json.dumps(items)


async def recv_raw(ws: ClientConnection, within: float = 3.0) -> bytes:
    data = await asyncio.wait_for(ws.recv(), within)
    assert isinstance(data, bytes), f"Upbit frames are binary, got text {data!r}"
    return data


async def recv_json(ws: ClientConnection, within: float = 3.0) -> Any:
    return json.loads(await recv_raw(ws, within))


async def drain(ws: ClientConnection) -> None:
    """Read until the connection closes (raises its ConnectionClosed)."""
    while True:
        await recv_raw(ws)


async def recv_until(
    ws: ClientConnection, predicate: Callable[[Any], bool], *, limit: int = 2000
) -> list[Any]:
    """Frames (parsed) up to and including the first that satisfies ``predicate``."""
    seen: list[Any] = []
    for _ in range(limit):
        frame = await recv_json(ws)
        seen.append(frame)
        if predicate(frame):
            return seen
    raise AssertionError(f"no matching frame within {limit} frames; last {seen[-3:]}")


async def silent(ws: ClientConnection, seconds: float) -> bool:
    """True when nothing arrives for ``seconds``."""
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    """(status, body, raw head) of one HTTP/1.1 GET on loopback."""
    return await http_request("GET", url, headers)


async def http_post(url: str) -> tuple[int, bytes, str]:
    """(status, body, raw head) of one HTTP/1.1 POST without a body (the emulator's admin
    actions that change its state take their arguments in the query string)."""
    return await http_request("POST", url, {"Content-Length": "0"})


async def http_request(
    method: str, url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    """(status, body, raw head) of one HTTP/1.1 request on loopback."""
    assert url.startswith("http://")
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"{method} /{path} HTTP/1.1", f"Host: {hostport}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body, head.decode("latin-1")
