"""Collector PROCESSES for the leadership and recovery tests: the real ``upbit-fanout collector``
command, real signals (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), a real Redis, the emulator in the
test's event loop; and a recorder that stamps every Redis message with its receipt time."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from tests.helpers import COMMAND, command_env, scaled
from upbit_fanout.subscriptions.keys import Keys

__all__ = [
    "COMMAND",  # from tests.helpers, kept importable here
    "CollectorProcess",
    "Received",
    "Recorder",
    "collector_env",
    "collector_processes",
    "notice_is",
]


def collector_env(keys: Keys, **settings: str) -> dict[str, str]:
    """The environment of a collector process: this test's prefix, fast sweeps, INFO logs, and
    ``settings`` as ``UPBIT_FANOUT_{NAME}`` variables (they win; nothing inherited from the
    caller's: :func:`tests.helpers.command_env`)."""
    defaults = {"key_prefix": keys.prefix, "sweep_interval": "0.3", "log_level": "INFO"}
    return command_env(**(defaults | settings))


class CollectorProcess:
    """One ``upbit-fanout collector`` process; its stderr is collected line by line."""

    def __init__(self, process: asyncio.subprocess.Process, collector_id: str) -> None:
        self.process = process
        self.collector_id = collector_id
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        redis_url: str,
        keys: Keys,
        upstream: str,
        collector_id: str,
        cwd: Path,
        **settings: str,
    ) -> CollectorProcess:
        process = await asyncio.create_subprocess_exec(
            str(COMMAND),
            "collector",
            "--redis-url",
            redis_url,
            "--upstream",
            upstream,
            "--collector-id",
            collector_id,
            env=collector_env(keys, **settings),
            cwd=cwd,  # no stray .env
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process, collector_id)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_log(self, text: str, within: float = 20.0) -> str:
        """Wait for a stderr line containing ``text``; return it."""
        async with asyncio.timeout(scaled(within)):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self._reader.done():
                    raise AssertionError(f"{self.collector_id} exited:\n{self.log}")
                self._changed.clear()
                await self._changed.wait()

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self) -> int:
        """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL after 15 s."""
        if self.process.returncode is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader
        return self.process.returncode or 0

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await self._reader


@asynccontextmanager
async def collector_processes() -> AsyncIterator[list[CollectorProcess]]:
    """A list to put started processes in; every one is stopped (or killed) on the way out."""
    procs: list[CollectorProcess] = []
    try:
        yield procs
    finally:
        for proc in procs:
            await proc.stop()


@dataclass(frozen=True, slots=True)
class Received:
    at: float  # time.monotonic() at receipt
    wall_ms: int  # time.time() at receipt, in ms
    channel: str
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)


class Recorder:
    """Subscribes to Redis channels and keeps every message with its receipt time."""

    def __init__(self, redis_url: str, channels: Iterable[str]) -> None:
        self._redis = aioredis.Redis.from_url(redis_url)
        self._pubsub = self._redis.pubsub()
        self._channels = list(channels)
        self.messages: list[Received] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        await self._pubsub.subscribe(*self._channels)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            while not self._task.done():  # redis-py may swallow one cancellation on 3.11
                self._task.cancel()
                await asyncio.wait([self._task], timeout=0.1)
        await self._pubsub.aclose()
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except (redis.ConnectionError, OSError):
                await asyncio.sleep(0.05)  # a Redis restart: the next read reconnects
                continue
            if message is not None:
                self.messages.append(
                    Received(
                        time.monotonic(),
                        time.time_ns() // 1_000_000,
                        message["channel"].decode(),
                        message["data"],
                    )
                )
                self._arrived.set()

    def on(self, channel: str, since: float = 0.0) -> list[Received]:
        return [m for m in self.messages if m.channel == channel and m.at >= since]

    async def wait_for(
        self, predicate: Callable[[Received], bool], within: float = 20.0, since: float = 0.0
    ) -> Received:
        """The first message (received at or after ``since``) that satisfies ``predicate``."""
        seen = 0
        async with asyncio.timeout(scaled(within)):
            while True:
                for message in self.messages[seen:]:
                    if message.at >= since and predicate(message):
                        return message
                seen = len(self.messages)
                self._arrived.clear()
                await self._arrived.wait()


def notice_is(event: str, **fields: object) -> Callable[[Received], bool]:
    """A predicate for a ``P:notices`` message with this event and these fields."""

    def check(message: Received) -> bool:
        if not message.channel.endswith(":notices"):
            return False
        body = message.json()
        return bool(body.get("event") == event and all(body.get(k) == v for k, v in fields.items()))

    return check
