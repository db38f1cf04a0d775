"""``upbit-fanout collector`` as a real process, against an emulator in this test's event loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from tests.collector.process_support import collector_env
from tests.collector.service_support import status_of, union_becomes
from tests.collector.test_health_canary import http_get
from tests.helpers import COMMAND, free_port, until
from upbit_fanout.commands.collector import collector_options, private_url
from upbit_fanout.emulator import Emulator
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.keys import Keys


@pytest.mark.skipif(not COMMAND.exists(), reason="run `.venv/bin/pip install -e . --no-deps`")
async def test_the_command_subscribes_and_stops_cleanly_on_sigterm(
    real_redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    r = aioredis.Redis.from_url(real_redis_url)
    try:
        async with Emulator(port=0, seed=5, rate=100) as emu:
            port = free_port()
            process = await asyncio.create_subprocess_exec(
                str(COMMAND),
                "--log-format",
                "json",
                "collector",
                "--redis-url",
                real_redis_url,
                "--upstream",
                emu.public_url,
                "--metrics-port",
                str(port),
                env=collector_env(keys),
                cwd=tmp_path,  # no stray .env
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                await r.sadd(keys.intents("cli-test"), "ticker:KRW-BTC")
                await r.expire(keys.intents("cli-test"), 30)
                await until(lambda: _state(r, keys, "subscribed"), within=15)
                await union_becomes(r, keys, {"ticker:KRW-BTC"})
                assert [c.subscription is not None for c in emu.connections] == [True]
                status = await status_of(r, keys)
                assert status["upstream"] == emu.public_url
                assert status["private"] == "disabled: no API keys"
                assert status["role"] == "leader"
                # /healthz on the metrics port: 200 once the first canary came back
                deadline = asyncio.get_running_loop().time() + 15
                while (await http_get(port, "/healthz"))[0] != 200:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.2)
                code, text = await http_get(port, "/metrics")
                assert code == 200
                assert "upbit_fanout_build_info{" in text

                process.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.wait_for(process.communicate(), 15)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert process.returncode == 0, stderr.decode()
            assert b"Traceback" not in stderr
            assert b"stopped" in stderr  # the INFO lifecycle lines
            records = [json.loads(line) for line in stderr.decode().splitlines()]  # --log-format
            assert {"time", "level", "logger", "message"} <= set(records[0])
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", records[0]["time"])
            assert any("metrics and /healthz on" in record["message"] for record in records)
            assert await _state(r, keys, "stopped")
            await union_becomes(r, keys, set())
            assert await r.get(keys.leader) is None  # leadership given back at once
            await emu.wait_connections(0)
    finally:
        async for key in r.scan_iter(match=f"{keys.prefix}:*"):
            await r.delete(key)
        await r.aclose()


async def _state(r: aioredis.Redis, keys: Keys, state: str) -> bool:
    return (await status_of(r, keys)).get("state") == state


@pytest.mark.parametrize(
    ("argv", "env_private", "expected"),
    [
        ([], None, "wss://api.upbit.com/websocket/v1/private"),
        (
            ["--upstream", "ws://127.0.0.1:9/websocket/v1"],
            None,
            "ws://127.0.0.1:9/websocket/v1/private",
        ),
        (["--upstream", "ws://h/x"], None, None),  # nothing to derive it from
        (["--private-upstream", "ws://p/private"], None, "ws://p/private"),
        ([], "", "wss://api.upbit.com/websocket/v1/private"),  # compose passes empty values
        ([], "ws://e/websocket/v1/private", "ws://e/websocket/v1/private"),
    ],
)
def test_private_url(argv: list[str], env_private: str | None, expected: str | None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream")
    parser.add_argument("--private-upstream")
    fields: dict[str, Any] = {} if env_private is None else {"upbit_private_ws_url": env_private}
    settings = Settings(_env_file=None, **fields)  # type: ignore[call-arg]
    assert private_url(parser.parse_args(argv), settings) == expected


def test_empty_keys_mean_no_keys_and_leadership_can_be_turned_off() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, access_key=SecretStr(""), secret_key=SecretStr(""), leader_lease=0
    )
    options = collector_options(settings)
    assert options["access_key"] is None
    assert options["secret_key"] is None
    assert options["leader_lease"] is None


@pytest.mark.skipif(not COMMAND.exists(), reason="run `.venv/bin/pip install -e . --no-deps`")
async def test_the_demo_runs_everything_until_ctrl_c(
    real_redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    r = aioredis.Redis.from_url(real_redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.channel("ticker:KRW-BTC"))
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        "demo",
        "--redis-url",
        real_redis_url,
        env=collector_env(keys),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        while not printed or "Press Ctrl-C" not in printed[-1]:
            line = await asyncio.wait_for(process.stdout.readline(), 15)
            assert line, "the demo ended early"
            printed.append(line.decode())
        text = "".join(printed)
        assert f"SUBSCRIBE {keys.channel('ticker:KRW-BTC')}" in text
        assert f"HGETALL {keys.status}" in text
        assert f"SADD {keys.intents('me')}" in text
        # The seeded demo intent is served: events arrive on the channel it prints.
        async with asyncio.timeout(10):
            while (message := await pubsub.get_message(True, timeout=1.0)) is None:
                pass
        assert message["channel"] == keys.channel("ticker:KRW-BTC").encode()
        assert await _state(r, keys, "subscribed")

        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await pubsub.aclose()
    try:
        assert process.returncode == 0, stderr.decode()
        assert await _state(r, keys, "stopped")
        assert not await r.exists(keys.intents("demo"))  # the demo client let go of its lease
    finally:
        async for key in r.scan_iter(match=f"{keys.prefix}:*"):
            await r.delete(key)
        await r.aclose()
