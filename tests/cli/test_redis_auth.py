"""A Redis that refuses our password or ACL user is reported as such, never as "unreachable".

A real ``redis-server`` of this test's own, started with ``--requirepass`` and an ACL user that
may do everything but HSET. The commands (``status``, ``check``, ``tail``) and the collector
describe the refusal the same way (``subscriptions.redis_errors.describe_redis_error``); the
collector logs it as an ERROR and, while any part of it is still refused, never claims that
Redis is "reachable again". No output holds the password.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.collector.service_support import running_collector
from tests.deployments import redis_server_args, spawn, wait_ping
from tests.helpers import COMMAND, command_env, free_port, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.redis_errors import AUTH_FAILED, describe_redis_error

PASSWORD = "right-pass-0451"
WRONG = "wrong-pass-9913"
LIMITED = "nohset"  # an ACL user without HSET: the collector's status writer is refused


@pytest.fixture(scope="module")
def secured() -> Iterator[int]:
    """The port of a redis-server that wants PASSWORD (default user) and has user LIMITED."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed")
    port = free_port()
    process = spawn(redis_server_args(binary, port, "--requirepass", PASSWORD))
    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=0.2)
    try:
        wait_ping(port, password=PASSWORD)
        client.execute_command(
            "ACL", "SETUSER", LIMITED, "on", f">{PASSWORD}", "~*", "&*", "+@all", "-hset"
        )
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def run_cli(*argv: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = command_env(redis_url=url)
    return subprocess.run(
        [str(COMMAND), *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`")
@pytest.mark.parametrize("command", [["status"], ["check"], ["tail", "ticker:KRW-BTC"]])
@pytest.mark.parametrize(
    "userinfo", [f":{WRONG}@", f"{LIMITED}:{WRONG}@", ""], ids=["WRONGPASS", "ACL user", "NOAUTH"]
)
def test_the_commands_say_authentication_failed(
    secured: int, command: list[str], userinfo: str, tmp_path: Path
) -> None:
    done = run_cli(*command, url=f"redis://{userinfo}127.0.0.1:{secured}/0", cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert AUTH_FAILED in output
    assert "unreachable" not in output
    assert "Traceback" not in output
    assert WRONG not in output
    assert output.count("\n") == 1  # one line


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_the_collector_logs_a_refused_password_as_an_error(
    secured: int, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="upbit_fanout")
    url = f"redis://:{WRONG}@127.0.0.1:{secured}/0"
    async with (
        Emulator(port=0, seed=1) as emulator,
        running_collector(url, keys, emulator.public_url, leader_lease=None) as collector,
    ):
        await until(lambda: _records(caplog, AUTH_FAILED), within=15)
        await asyncio.sleep(1.0)  # several retries of every part
        assert not collector.status.health.ok
    errors = _records(caplog, AUTH_FAILED)
    assert len(errors) == 1  # once, not once per retry
    assert errors[0].levelno == logging.ERROR
    assert not _records(caplog, "Redis unreachable")
    assert not _records(caplog, "reachable again")
    assert WRONG not in caplog.text


async def test_one_refused_command_is_not_followed_by_reachable_again(
    secured: int, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    # The ACL user may read intents and publish, but not HSET the status hash: the intent
    # tracker gets through while the status writer is refused, over and over.
    caplog.set_level(logging.WARNING, logger="upbit_fanout")
    url = f"redis://{LIMITED}:{PASSWORD}@127.0.0.1:{secured}/0"
    admin = aioredis.Redis(port=secured, password=PASSWORD)
    try:
        await admin.sadd(keys.intents("bot"), "ticker:KRW-BTC")
        await admin.expire(keys.intents("bot"), 60)
        async with (
            Emulator(port=0, seed=1) as emulator,
            running_collector(url, keys, emulator.public_url, leader_lease=None) as collector,
        ):
            await until(
                lambda: collector.tracker.loaded and _records(caplog, AUTH_FAILED), within=15
            )
            # The status writer retries up to every 2 s, the tracker sweeps every 0.3 s: give
            # both several turns in which a false "reachable again" would be logged.
            await asyncio.sleep(4.5)
            assert collector.union == {"ticker:KRW-BTC"}  # the rest of the service works
        errors = _records(caplog, AUTH_FAILED)
        assert [r.levelno for r in errors] == [logging.ERROR]
        assert "hset" in errors[0].getMessage()
        assert not _records(caplog, "reachable again")
        assert not await admin.exists(keys.status)  # really refused
    finally:
        async for key in admin.scan_iter(match=f"{keys.prefix}:*"):
            await admin.delete(key)
        await admin.aclose()


def test_describe_tells_a_refusal_from_an_outage() -> None:
    url = f"redis://user:{WRONG}@127.0.0.1:1/0"
    refused = describe_redis_error(redis.AuthenticationError("invalid username-password"), url)
    assert AUTH_FAILED in refused
    assert WRONG not in refused
    nopermission = describe_redis_error(
        redis.exceptions.NoPermissionError("Command # 1 (HSET x) of pipeline caused error: ...")
    )
    assert AUTH_FAILED in nopermission
    down = describe_redis_error(redis.ConnectionError("Error 111 connecting"), url)
    assert down.startswith("Redis unreachable at redis://user:***@127.0.0.1:1/0")
    assert describe_redis_error(redis.ResponseError("NOAUTH Authentication required.")).count(
        AUTH_FAILED
    )
