"""The README's quick start, as a person would run it: ``upbit-fanout demo`` in one terminal,
``redis-cli`` in another, subscribing to an event channel, reading ``P:status`` and becoming a
client with ``SADD`` + ``EXPIRE``. Real processes only (the installed command and redis-cli)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import COMMAND, command_env
from upbit_fanout.subscriptions import Keys

REDIS_CLI = shutil.which("redis-cli")

pytestmark = [
    pytest.mark.skipif(not COMMAND.exists(), reason="the project is not installed in this venv"),
    pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed"),
]


async def _cli(url: str, *args: str) -> list[str]:
    assert REDIS_CLI is not None
    process = await asyncio.create_subprocess_exec(
        REDIS_CLI, "-u", url, *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0
    return out.decode().splitlines()


async def _first_message(url: str, channel: str) -> dict[str, object]:
    """``redis-cli SUBSCRIBE channel`` until its first message; the payload, parsed."""
    assert REDIS_CLI is not None
    process = await asyncio.create_subprocess_exec(
        REDIS_CLI, "-u", url, "SUBSCRIBE", channel, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(10):
            while len(lines) < 6:  # subscribe, channel, 1, message, channel, payload
                lines.append((await process.stdout.readline()).decode().rstrip("\n"))
        assert lines[3:5] == ["message", channel]
        payload: dict[str, object] = json.loads(lines[5])
        return payload
    finally:
        process.kill()
        await process.wait()


@pytest.fixture
async def demo(real_redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[str]:
    env = command_env(key_prefix=keys.prefix)
    process = await asyncio.create_subprocess_exec(
        str(COMMAND), "demo", "--redis-url", real_redis_url, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            while b"Press Ctrl-C" not in await process.stdout.readline():
                pass
        yield real_redis_url
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        redis = aioredis.Redis.from_url(real_redis_url)
        async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


async def test_the_quick_start_with_redis_cli(demo: str, keys: Keys) -> None:
    url = demo
    event = await _first_message(url, keys.channel("ticker:KRW-BTC"))
    assert (event["type"], event["code"]) == ("ticker", "KRW-BTC")

    # P:status is rewritten at most once a second: read it as a person would, again if need be
    async with asyncio.timeout(5):
        while True:
            status = await _cli(url, "HGETALL", keys.status)
            fields = dict(zip(status[::2], status[1::2], strict=True))
            if int(fields.get("events_total", "0")) > 0:
                break
            await asyncio.sleep(0.3)
    assert fields["state"] == "subscribed"
    assert fields["upstream"].startswith("ws://127.0.0.1:")

    # be a client yourself: an intent is a SET with a TTL
    assert await _cli(url, "SADD", keys.intents("me"), "ticker:KRW-ETH") == ["1"]
    assert await _cli(url, "EXPIRE", keys.intents("me"), "30") == ["1"]
    event = await _first_message(url, keys.channel("ticker:KRW-ETH"))
    assert (event["type"], event["code"]) == ("ticker", "KRW-ETH")
    assert "ticker:KRW-ETH" in await _cli(url, "SMEMBERS", keys.union)
