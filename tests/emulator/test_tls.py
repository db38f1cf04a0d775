"""The emulator speaks TLS: ``wss://`` and ``https://`` with a certificate authority of its own.

A client that insists on ``wss://`` URLs can be pointed at it unmodified: it only has to trust the
authority's file (``SSL_CERT_FILE``), as these tests do with a plain websockets client in another
process and with the collector command.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.helpers import COMMAND
from upbit_fanout.emulator import Emulator

SUBSCRIBE = json.dumps([{"ticket": "tls"}, {"type": "ticker", "codes": ["KRW-BTC"]}])


async def test_wss_and_https_with_the_emulators_own_authority() -> None:
    async with Emulator(port=0, seed=3, rate=200, tls=True) as emu:
        assert emu.base_url.startswith("wss://127.0.0.1:")
        assert emu.http_url.startswith("https://127.0.0.1:")
        assert emu.certificates is not None
        trusted = emu.certificates.client_context()
        async with connect(emu.public_url, ssl=trusted) as ws:
            await ws.send(SUBSCRIBE)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["type"] == "ticker"
        assert frame["code"] == "KRW-BTC"

        def market_all() -> list[dict[str, str]]:
            with urllib.request.urlopen(
                f"{emu.http_url}/v1/market/all", context=trusted, timeout=10
            ) as response:
                return list(json.load(response))

        markets = await asyncio.to_thread(market_all)
        assert any(market["market"] == "KRW-BTC" for market in markets)

        # It is real TLS: a client that does not trust the authority is refused.
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(emu.public_url, ssl=ssl.create_default_context()):
                pass


async def test_the_command_prints_a_wss_url_and_an_unmodified_client_trusts_it_by_env(
    tmp_path: Path,
) -> None:
    if not COMMAND.exists():
        pytest.skip("the upbit-fanout command is not installed")
    ca = tmp_path / "ca.pem"
    emulator = await asyncio.create_subprocess_exec(
        str(COMMAND), "emulator", "--port", "0", "--tls", "--ca-out", str(ca), "--rate", "200",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        assert emulator.stdout is not None
        assert emulator.stderr is not None
        first = (await asyncio.wait_for(emulator.stdout.readline(), 20)).decode().strip()
        assert first.startswith("wss://127.0.0.1:"), first
        note = (await asyncio.wait_for(emulator.stderr.readline(), 5)).decode()
        assert str(ca) in note
        assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")

        # A client written for wss:// only, knowing nothing of the emulator: trust comes from
        # the environment, as for any unmodified Upbit client.
        script = (
            "import sys\n"
            "from websockets.sync.client import connect\n"
            "url = sys.argv[1]\n"
            "assert url.startswith('wss://'), 'must be a wss address'\n"
            "with connect(url + '/websocket/v1') as ws:\n"
            f"    ws.send({SUBSCRIBE!r})\n"
            "    print(ws.recv(timeout=10)[:40])\n"
        )
        env = {**os.environ, "SSL_CERT_FILE": str(ca)}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script, first],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert '"type":"ticker"' in done.stdout

        # Without that trust, the same client is refused.
        env.pop("SSL_CERT_FILE")
        refused = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script, first],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    finally:
        emulator.terminate()
        await asyncio.wait_for(emulator.wait(), 15)
