"""A Sentinel failover under a running collector process and running clients.

Everything is real: a primary, a replica and three Sentinels this test starts, the
``upbit-fanout collector`` command given a ``redis+sentinel://`` URL, the emulator over loopback,
two library clients given the same URL, and ``SENTINEL FAILOVER``. After the failover every
client reports a gap, its intent is on the new primary, events flow again within seconds, and the
collector (never restarted) leads and writes its status there.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.collector.process_support import collector_env
from tests.deployments import SentinelDeployment
from tests.helpers import COMMAND, until
from upbit_fanout.client import Event, FanoutClient, Gap
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions import Keys
from upbit_fanout.subscriptions.lease import parse_leader

pytestmark = pytest.mark.slow

TOPICS = {"a": "ticker:KRW-BTC", "b": "trade:KRW-BTC"}


@pytest.fixture
def sentinel_deployment(tmp_path: Path) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(tmp_path)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


async def _next(client: FanoutClient, kind: type, topic: str | None, within: float) -> object:
    async with asyncio.timeout(within):
        async for item in client:
            if isinstance(item, kind) and (
                topic is None
                or (isinstance(item, Event) and item.topic == topic and not item.cached)
            ):
                return item
    raise AssertionError("the event stream ended")


@pytest.mark.skipif(not COMMAND.exists(), reason="the upbit-fanout command is not installed")
async def test_a_sentinel_failover_under_a_running_collector_and_clients(
    sentinel_deployment: SentinelDeployment, keys: Keys, tmp_path: Path
) -> None:
    url = sentinel_deployment.url
    options: dict[str, Any] = {
        "key_prefix": keys.prefix,
        "lease_seconds": 3.0,
        "health_check_interval": 0.5,
    }
    async with Emulator(port=0, rate=400, seed=11) as emu:
        collector = await asyncio.create_subprocess_exec(
            str(COMMAND),
            "collector",
            "--redis-url",
            url,
            "--upstream",
            emu.public_url,
            "--collector-id",
            "sentinel-test",
            env=collector_env(keys),
            cwd=tmp_path,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with (
                FanoutClient(url, client_id="a", **options) as a,
                FanoutClient(url, client_id="b", **options) as b,
            ):
                clients = {"a": a, "b": b}
                for name, client in clients.items():
                    await client.subscribe(TOPICS[name])
                for name, client in clients.items():
                    await _next(client, Event, TOPICS[name], within=20)

                before = aioredis.Redis(port=sentinel_deployment.primary_port())
                try:
                    term_before = await before.get(keys.leader)
                finally:
                    await before.aclose()
                assert term_before is not None
                assert parse_leader(term_before)[1] == "sentinel-test"
                new_port = await asyncio.to_thread(sentinel_deployment.failover)
                primary = aioredis.Redis(port=new_port)
                try:
                    # The old primary stays writable for seconds before the Sentinels demote it;
                    # the collector must move to the new one at once, not write into the old one
                    # meanwhile: its lease on the new primary is renewed, never left to run out.
                    ttls = []
                    for _ in range(16):
                        ttls.append(await primary.pttl(keys.leader))
                        await asyncio.sleep(0.5)
                    assert min(ttls) > 0, ttls
                    assert ttls[-1] > ttls[0] or max(ttls[1:]) > ttls[0], ttls  # renewed there
                finally:
                    await primary.aclose()

                for name, client in clients.items():
                    gap = await _next(client, Gap, None, within=20)
                    assert isinstance(gap, Gap)
                    await _next(client, Event, TOPICS[name], within=20)

                primary = aioredis.Redis(port=new_port)
                try:
                    # every intent is on the new primary, with a lease
                    for name in clients:
                        key = keys.intents(name)
                        assert await primary.smembers(key) == {TOPICS[name].encode()}
                        assert 0 < await primary.pttl(key) <= 3000
                    # the collector leads there and writes its view of the union
                    union = {topic.encode() for topic in TOPICS.values()}

                    async def settled() -> bool:
                        return (
                            await primary.smembers(keys.union) == union
                            and await primary.hget(keys.status, "state") == b"subscribed"
                        )

                    await until(settled, within=15)

                    # It keeps its leadership there, in the same fenced term (the lease and its
                    # token were replicated), and it never closed the upstream socket.
                    async def leads() -> bool:
                        value = await primary.get(keys.leader)
                        return value is not None and parse_leader(value)[1] == "sentinel-test"

                    await until(leads, within=15)
                    assert await primary.get(keys.leader) == term_before
                    # one upstream connection, ever: the failover never closed it
                    assert emu.counters["connections"] == 1, dict(emu.counters)
                    assert await primary.hget(keys.status, "reconnects") == b"0"
                finally:
                    await primary.aclose()

                # the operator's commands accept the same URL
                status = await asyncio.create_subprocess_exec(
                    str(COMMAND),
                    "status",
                    "--redis-url",
                    url,
                    "--key-prefix",
                    keys.prefix,
                    env=collector_env(keys),
                    cwd=tmp_path,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(status.communicate(), 20)
                assert status.returncode == 0, err.decode()
                assert b"subscribed" in out
            assert collector.returncode is None, "the collector must survive the failover"
            collector.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(collector.communicate(), 20)
        finally:
            if collector.returncode is None:
                collector.kill()
                await collector.wait()
        assert collector.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr, stderr.decode()
