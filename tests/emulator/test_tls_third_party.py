"""An unmodified third-party Upbit client that insists on ``wss://`` works against
``upbit-fanout emulator --tls``: cryptofeed's Upbit feed (it raises "must be a wss address" for
anything else), in its own process, trusting the emulator's authority through the environment.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

COMMAND = Path(sys.executable).with_name("upbit-fanout")
SCRIPT = Path(__file__).with_name("cryptofeed_upbit.py")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("cryptofeed") is None,
        reason="cryptofeed (a dev dependency) is not installed",
    ),
    pytest.mark.skipif(not COMMAND.exists(), reason="the upbit-fanout command is not installed"),
]


@pytest.fixture
def tls_emulator(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = tmp_path / "ca.pem"
    process = subprocess.Popen(
        [str(COMMAND), "emulator", "--port", "0", "--tls", "--ca-out", str(ca), "--rate", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().strip()
        assert url.startswith("wss://127.0.0.1:"), url
        yield url, ca
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def _cryptofeed(url: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    https = "https://" + url.removeprefix("wss://")
    return subprocess.run(
        [sys.executable, str(SCRIPT), url, https, "5"],
        env=env,
        cwd=cwd,  # cryptofeed writes feedhandler.log into its working directory
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cryptofeed_receives_trades_from_the_tls_emulator(
    tls_emulator: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = tls_emulator
    env = {**os.environ, "SSL_CERT_FILE": str(ca), "REQUESTS_CA_BUNDLE": str(ca)}
    done = _cryptofeed(url, env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trades = [line.split() for line in done.stdout.splitlines() if line.startswith("TRADE ")]
    assert len(trades) == 5, done.stdout
    for _, symbol, price, amount in trades:
        assert symbol == "BTC-KRW"
        assert float(price) > 0
        assert float(amount) > 0


def test_cryptofeed_refuses_it_without_the_authority(
    tls_emulator: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = tls_emulator
    env = {k: v for k, v in os.environ.items() if k not in {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}}
    done = _cryptofeed(url, env, tmp_path)
    assert done.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr or "certificate verify failed" in done.stderr
