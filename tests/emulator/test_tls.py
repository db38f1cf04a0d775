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
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from tests.helpers import COMMAND, command_env
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

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


async def test_the_collector_follows_a_wss_upstream_trusted_through_ssl_cert_file(
    real_redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    if not COMMAND.exists():
        pytest.skip("the upbit-fanout command is not installed")
    r = aioredis.Redis.from_url(real_redis_url)
    try:
        async with Emulator(port=0, seed=4, rate=200, tls=True) as emu:
            assert emu.certificates is not None
            ca = emu.certificates.write_ca(tmp_path / "ca.pem")
            env = command_env(key_prefix=keys.prefix, sweep_interval="0.3")
            env["SSL_CERT_FILE"] = str(ca)
            await r.sadd(keys.intents("tls"), "ticker:KRW-BTC")
            await r.expire(keys.intents("tls"), 30)
            collector = await asyncio.create_subprocess_exec(
                str(COMMAND), "collector", "--redis-url", real_redis_url,
                "--upstream", emu.public_url,
                env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                async with asyncio.timeout(20):
                    while await r.get(keys.last("ticker:KRW-BTC")) is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                assert (await r.hget(keys.status, "upstream")) == emu.public_url.encode()
            finally:
                collector.terminate()
                _, stderr = await asyncio.wait_for(collector.communicate(), 15)
            assert b"Traceback" not in stderr, stderr.decode()
    finally:
        async for key in r.scan_iter(match=f"{keys.prefix}:*"):
            await r.delete(key)
        await r.aclose()
