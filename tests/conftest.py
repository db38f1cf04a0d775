"""Shared fixtures: a real Redis for integration tests, throwaway redis-servers, and the
emulator (``emu``, configured per module with ``pytest.mark.emulator(...)``).

Redis policy: use the server on 127.0.0.1:6379 when it answers (CI has one); otherwise
start a ``redis-server`` on a free loopback port if the binary exists; otherwise fall back to
fakeredis. Tests that need to stop and restart Redis use :func:`redis_server_factory`, which
always starts servers of their own (and skips, saying why, only where no binary exists).
Every test gets its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from tests.deployments import ClusterDeployment, redis_server_args, spawn, wait_ping
from tests.helpers import free_port
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys


@dataclass
class RedisServer:
    """A redis-server process owned by a test (loopback, no persistence)."""

    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server binary not installed; this test needs a Redis it can restart")
        self.process = spawn(
            redis_server_args(binary, self.port, "--notify-keyspace-events", "Egsxe")
        )
        wait_ping(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[[], RedisServer]]:
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(free_port())
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _default_redis_reachable() -> bool:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str | None]:
    """URL of a real Redis for this session, or None when only fakeredis is possible."""
    if _default_redis_reachable():
        yield "redis://127.0.0.1:6379/0"
        return
    if shutil.which("redis-server"):
        server = RedisServer(free_port())
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    yield None


@pytest.fixture
def keys() -> Keys:
    """A key prefix of this test's own."""
    return Keys(f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def redis_client(redis_url: str | None, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client (real when possible); the test's keys are removed afterwards."""
    if redis_url is None:
        client: aioredis.Redis = fakeredis.FakeAsyncRedis()
    else:
        client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        try:
            async for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


@pytest.fixture
async def r(real_redis_url: str, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    """A client of the real Redis (never fakeredis), for tests of the services and the client
    library, which drive pub/sub connections and keyspace notifications; the test's keys are
    removed afterwards."""
    client = aioredis.Redis.from_url(real_redis_url, max_connections=64)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await client.delete(key)
        await client.aclose()


@pytest.fixture
def real_redis_url(redis_url: str | None) -> str:
    """For tests that need a real server (keyspace notifications, subprocesses)."""
    if redis_url is None:
        pytest.skip("no Redis server reachable and no redis-server binary to start one")
    return redis_url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """A Redis Cluster of three primaries for this session (started on first use, about 3 s;
    skipped, saying why, when redis-server or redis-cli is missing). Tests share it: each uses
    its own key prefix, as on the single Redis."""
    deployment = ClusterDeployment(tmp_path_factory.mktemp("redis-cluster"))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """The project's Upbit emulator on a free loopback port, closed after the test. Its options
    come from the closest ``pytest.mark.emulator(seed=..., rate=..., ...)`` (a module's
    ``pytestmark`` or the test's own); without one, seed 1 at 300 events/s."""
    marker = request.node.get_closest_marker("emulator")
    options: dict[str, Any] = {"seed": 1, "rate": 300, **(marker.kwargs if marker else {})}
    async with Emulator(port=0, **options) as emulator:
        yield emulator
