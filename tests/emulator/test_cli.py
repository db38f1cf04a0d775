"""``upbit-fanout emulator`` as a real subprocess: URL first, serves, exits 0 on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from upbit_fanout.emulator.auth import make_token


def command() -> list[str]:
    script = Path(sys.executable).with_name("upbit-fanout")
    return [str(script)] if script.exists() else [sys.executable, "-m", "upbit_fanout.cli"]


@pytest.fixture
def emulator_process(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], str]]:
    extra: list[str] = getattr(request, "param", [])
    process = subprocess.Popen(
        [*command(), "--log-level", "DEBUG", "emulator", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        url = process.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), (
            url,
            process.stderr.read() if process.poll() else "",
        )
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_cli_prints_its_url_serves_and_exits_0_on_sigterm(
    emulator_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = emulator_process
    with connect(url + "/websocket/v1", open_timeout=5) as ws:
        ws.send(json.dumps([{"ticket": "cli"}, {"type": "ticker", "codes": ["KRW-BTC"]}]))
        frames = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    assert [(f["code"], f["stream_type"]) for f in frames] == [
        ("KRW-BTC", "SNAPSHOT"),
        ("KRW-BTC", "REALTIME"),
    ]
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert stdout == ""  # the URL was the only line


SECRET = "cli-secret-that-must-never-be-printed-0123"


@pytest.mark.parametrize(
    "emulator_process", [["--access-key", "cli-access", "--secret-key", SECRET]], indirect=True
)
def test_cli_private_endpoint_and_the_secret_is_never_printed(
    emulator_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = emulator_process
    token = make_token("cli-access", SECRET)
    with connect(
        url + "/websocket/v1/private", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        ws.send(json.dumps([{"ticket": "p"}, {"type": "myAsset"}]))
    with pytest.raises(Exception, match="401"):
        connect(url + "/websocket/v1/private", additional_headers={"Authorization": "Bearer x"})
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert SECRET not in stdout + stderr
    assert "refused a private connection" in stderr  # logged, without the token


@pytest.mark.parametrize("emulator_process", [["--trading", "KRW-BTC"]], indirect=True)
def test_cli_trading_markets_trade_unwatched_and_show_over_rest(
    emulator_process: tuple[subprocess.Popen[str], str],
) -> None:
    """``--trading``: nobody is connected, yet the market trades and REST shows its trades."""
    _, url = emulator_process
    base = url.replace("ws://", "http://")
    deadline = time.monotonic() + 15
    trades: list[object] = []
    while time.monotonic() < deadline and len(trades) < 5:
        with urllib.request.urlopen(f"{base}/v1/trades/ticks?market=KRW-BTC&count=10") as answer:
            assert answer.headers["Remaining-Req"].startswith("group=trade;")
            trades = json.loads(answer.read())
        time.sleep(0.2)
    assert len(trades) >= 5


def test_cli_refuses_an_unknown_trading_market() -> None:
    result = subprocess.run(
        [*command(), "emulator", "--port", "0", "--trading", "KRW-NOPE"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "KRW-NOPE" in result.stderr
