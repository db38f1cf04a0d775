"""The emulator package's public API is deliberate: this pins it."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from tests.helpers import scaled
from upbit_fanout import emulator


def test_public_names() -> None:
    assert set(emulator.__all__) == {
        "DEFAULT_RATE",
        "Account",
        "AuthError",
        "Emulator",
        "EmulatorConnection",
        "EmulatorCrashError",
        "Format",
        "Market",
        "MarketSimulator",
        "OrderRejected",
        "Received",
        "ReplayError",
        "ReplayFrame",
        "RequestError",
        "Stream",
        "ConnectionSubscription",
        "default_markets",
        "load_replay",
        "make_token",
        "market_all_payload",
        "verify_authorization",
    }
    for name in emulator.__all__:
        assert getattr(emulator, name) is not None


def test_urls_before_start() -> None:
    emu = emulator.Emulator(port=8765)
    assert emu.base_url == "ws://127.0.0.1:8765"
    assert emu.public_url == "ws://127.0.0.1:8765/websocket/v1"
    assert emu.private_url == "ws://127.0.0.1:8765/websocket/v1/private"
    assert emu.http_url == "http://127.0.0.1:8765"


async def test_a_crashed_background_task_fails_aclose_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash inside the emulator surfaces where a test awaits it (aclose), with the cause,
    instead of a silent dead market and a time-out somewhere else."""
    emu = emulator.Emulator(port=0, seed=1, rate=200)
    await emu.start()

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise ZeroDivisionError("simulated bug in the market loop")

    monkeypatch.setattr(emu.simulator, "next_events", broken)
    monkeypatch.setattr(emu.simulator, "next_rows", broken)
    async with connect(emu.public_url) as ws:
        await ws.send(json.dumps([{"ticket": "t"}, {"type": "trade", "codes": ["KRW-BTC"]}]))
        async with asyncio.timeout(10):
            while emu._crash is None:  # noqa: ASYNC110 - the crash is recorded by a callback
                await asyncio.sleep(0.02)
    with pytest.raises(emulator.EmulatorCrashError, match="market") as info:
        await emu.aclose()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    await emu.aclose()  # idempotent, and the crash is reported once


async def test_aclose_has_a_time_limit_even_with_a_client_that_never_reads() -> None:
    emu = emulator.Emulator(port=0, seed=1, rate=0)
    await emu.start()
    async with connect(emu.public_url, max_queue=1, close_timeout=0.5) as ws:
        await ws.send(json.dumps([{"ticket": "t"}, {"type": "ticker", "codes": ["KRW-BTC"]}]))
        await asyncio.sleep(0.3)  # the firehose fills the socket; nobody reads
        loop = asyncio.get_running_loop()
        begin = loop.time()
        await emu.aclose(within=3.0)
        assert loop.time() - begin < scaled(6.0)
