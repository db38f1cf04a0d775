"""Health that tells the truth: a collector whose Redis user may write its status and notices but
is denied the event channels (and the canary's) by an ACL channel rule delivers nothing to anyone,
and ``upbit-fanout check``, ``/healthz`` and the metrics must say so; the same collector with the
channels allowed is healthy.

Everything real: a redis-server of the test's own with ACL users, the emulator over loopback, the
collector in this process, ``upbit-fanout check`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import running_collector
from tests.conftest import RedisServer
from tests.helpers import scaled, until
from upbit_fanout.collector.metrics import MetricsServer
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

TOPIC = "ticker:KRW-BTC"


pytestmark = pytest.mark.emulator(seed=5, rate=200)


async def collector_user(server: RedisServer, keys: Keys, *, events_allowed: bool) -> str:
    """An ACL user for the collector; without ``events_allowed`` its channels are only
    ``P:notices``, ``P:control`` and the keyevent channels of database 0."""
    p = keys.prefix
    channels = (
        [f"&{p}:*", f"&{keys.keyevent_channel(0, '*')}"]
        if events_allowed
        else [f"&{keys.notices}", f"&{keys.control}", f"&{keys.keyevent_channel(0, '*')}"]
    )
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "collector", "reset", "on", ">collector-pw", "~*", "+@all",
            "resetchannels", *channels,
        )  # fmt: skip
        await admin.sadd(keys.intents("bot"), TOPIC)
        await admin.expire(keys.intents("bot"), 60)
    finally:
        await admin.aclose()
    return f"redis://collector:collector-pw@127.0.0.1:{server.port}/0"


async def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a plain HTTP/1.1 GET on loopback."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text output."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def run_check(server: RedisServer, keys: Keys, *extra: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "upbit_fanout.cli", "check", "--redis-url", server.url,
        "--key-prefix", keys.prefix, "--max-delivery-age", "3", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode().strip()


async def test_check_fails_when_the_acl_denies_the_event_channels(
    redis_server_factory: Callable[[], RedisServer], keys: Keys, emu: Emulator
) -> None:
    server = redis_server_factory()
    url = await collector_user(server, keys, events_allowed=False)
    async with (
        running_collector(url, keys, emu.public_url, canary_interval=0.2) as c,
        MetricsServer(c, thresholds={"max_delivery_age": 3}) as metrics,
    ):
        await c.wait_subscribed(timeout=15)
        started = time.monotonic()
        # The collector runs, is subscribed, receives events from the upstream...
        await until(lambda: c.counters["events_total"] > 0, within=15, what="events from upstream")
        # ...but nothing reaches Redis subscribers: check says so within the threshold.
        while True:
            code, line = await run_check(server, keys)
            if code == 1:
                break
            assert time.monotonic() - started < 3 + scaled(10), f"check still says {line!r}"
            await asyncio.sleep(0.5)
        assert line.startswith("unhealthy: delivery not confirmed"), line
        assert "NOPERM" in line or "consumers may receive nothing" in line
        assert c.canary.book.received == 0
        assert c.counters["canaries_sent"] > 0
        code, text = await run_check(server, keys, "--json")
        assert code == 1
        verdict = json.loads(text)
        assert verdict["healthy"] is False
        assert verdict["reason"].startswith("delivery not confirmed")
        # The same verdict from the collector's own port, and the metrics show the canary failing.
        code, body = await http_get(metrics.port, "/healthz")
        assert code == 503
        assert body.startswith("unhealthy: delivery not confirmed"), body
        code, text = await http_get(metrics.port, "/metrics")
        assert code == 200
        assert metric(text, "upbit_fanout_canary_ok") == 0
        assert metric(text, "upbit_fanout_healthy") == 0
        assert metric(text, "upbit_fanout_canaries_sent_total") > 0
        assert metric(text, "upbit_fanout_canaries_received_total") == 0
        assert 'upbit_fanout_events_received_total{type="ticker"}' in text


async def test_check_passes_when_the_same_collector_may_publish(
    redis_server_factory: Callable[[], RedisServer], keys: Keys, emu: Emulator
) -> None:
    server = redis_server_factory()
    url = await collector_user(server, keys, events_allowed=True)
    async with (
        running_collector(url, keys, emu.public_url, canary_interval=0.2) as c,
        MetricsServer(c, thresholds={"max_delivery_age": 3}) as metrics,
    ):
        await c.wait_subscribed(timeout=15)
        await until(lambda: c.canary.book.received > 0, within=15, what="the canary's return")
        # the status writer's next write carries canary_ok_at
        admin = aioredis.Redis.from_url(server.url)
        try:
            await until(lambda: admin.hexists(keys.status, "canary_ok_at"), within=10)
        finally:
            await admin.aclose()
        code, line = await run_check(server, keys)
        assert code == 0, line
        assert line.startswith("ok: subscribed: 1 topic(s)"), line
        assert c.canary.last_latency is not None
        assert c.canary.last_latency < 3
        code, body = await http_get(metrics.port, "/healthz")
        assert code == 200, body
        code, text = await http_get(metrics.port, "/metrics")
        assert metric(text, "upbit_fanout_canary_ok") == 1
        assert metric(text, "upbit_fanout_canaries_received_total") > 0
        assert metric(text, "upbit_fanout_canary_latency_seconds_count") > 0
        # keep-alive pongs are recorded (ping every 1 s here): a quiet market is not a dead one
        await until(
            lambda: c.status.snapshot().get("upstream_alive_at"),
            within=10,
            what="a keep-alive pong recorded",
        )


async def test_check_fails_when_the_private_side_is_refused_while_keys_are_set(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    """The public stream flows (state ``subscribed``), but the keys are refused: unhealthy."""
    access, secret = (
        "AkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAk",
        "Sx9kTr4WqPz2LmN8vBc6Hd3Jf7Gy5Ue1Oi0Pa2Sd",
    )
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.sadd(keys.intents("trader"), "myAsset", TOPIC)
        await admin.expire(keys.intents("trader"), 60)
        async with (
            Emulator(port=0, seed=4, rate=200, access_key=access, secret_key=secret) as emu,
            running_collector(
                server.url, keys, emu.public_url, private_url=emu.private_url,
                access_key=access, secret_key="Wr0ng" * 8, canary_interval=0.2,
            ) as c,
        ):  # fmt: skip
            await c.wait_subscribed(lambda union: TOPIC in union, timeout=15)
            deadline = time.monotonic() + 20
            while True:
                code, line = await run_check(server, keys, "--private-max-down", "1")
                if code == 1 and "private socket" in line:
                    break
                assert time.monotonic() < deadline, f"check still says {line!r}"
                await asyncio.sleep(0.5)
            assert "the private socket has been down for" in line
            assert "401" in line  # the last error says why
            assert c.state.value == "subscribed"  # the public side is fine
            # The same collector with a generous threshold: still within it, so healthy.
            code, line = await run_check(server, keys, "--private-max-down", "600")
            assert code == 0, line
    finally:
        await admin.aclose()


async def test_check_fails_when_the_upstream_stays_down_while_topics_are_wanted(
    redis_server_factory: Callable[[], RedisServer], keys: Keys, emu: Emulator
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.sadd(keys.intents("bot"), TOPIC)
        await admin.expire(keys.intents("bot"), 60)
        async with running_collector(server.url, keys, emu.public_url, canary_interval=0.2) as c:
            await c.wait_subscribed(timeout=15)
            emu.refuse_connections(60)
            await emu.drop_all()
            deadline = time.monotonic() + 20
            while True:
                code, line = await run_check(server, keys, "--max-upstream-down", "1")
                if code == 1:
                    break
                assert time.monotonic() < deadline, f"check still says {line!r}"
                await asyncio.sleep(0.3)
            assert "the upstream has been down for" in line, line
            assert "while 1 topic(s) are wanted" in line
            assert "HTTP 503" in line  # the last error
            code, line = await run_check(server, keys, "--private-max-down", "600")
            assert code == 0, line
            assert line.startswith("ok: reconnecting for"), line
            emu.refuse_connections(0)
    finally:
        await admin.aclose()
