"""The collector's side of snapshots, simulated at the contract level for the client's tests.

:class:`ChannelPeer` is the scaffolding both fakes share: one task of its own, listening on one
channel of the test's Redis and answering each message; ``async with`` returns once it is
subscribed (nothing published after that is missed), and leaving it stops the task and raises
what the task raised, if it crashed (a broken fake fails its test instead of passing silently).

- :class:`FakeCollector` listens on ``P:control`` as the real collector does, reads the intent
  key named there and publishes one event per topic on the topic's channel
  (tests/client/test_snapshot.py; tests/client/test_end_to_end.py does the same with the real
  collector);
- :class:`FakeLeader` plays the leader's REST side on ``P:snapshot``
  (tests/client/test_snapshot_rest.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Self

import redis.asyncio as aioredis

from tests.client.support import sample_line, with_fields
from tests.helpers import scaled, texts
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.tasks import stop_tasks

TICKER = sample_line("ticker")


class ChannelPeer:
    """A task answering every message published on ``channel`` with :meth:`answer`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, channel: str) -> None:
        self.redis = redis
        self.keys = keys
        self.channel = channel
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def answer(self, data: bytes) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"{type(self).__name__}")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            [ready, self._task], timeout=scaled(10), return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            await stop_tasks([ready, self._task], within=scaled(5))
            if self._task.done() and not self._task.cancelled():
                self._task.result()  # the crash that kept it from subscribing
            raise TimeoutError(f"{type(self).__name__} did not subscribe to {self.channel}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        crashed = self._task.done() and not self._task.cancelled()
        await stop_tasks([self._task], within=scaled(5))
        if crashed:
            self._task.result()  # raises what the fake raised while the test ran

    async def _run(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self._ready.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    await self.answer(message["data"])
        finally:
            await pubsub.aclose()


class FakeCollector(ChannelPeer):
    """Answers intents as a collector would: the first event of each wanted topic. Records what
    it saw: ``intents`` maps each intent key's client id to its topics and PTTL. A ``refuse``d
    topic gets a ``P:invalid`` reason instead of an event."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, refuse: str | None = None) -> None:
        super().__init__(redis, keys, keys.control)
        self.refuse = refuse
        self.intents: dict[str, tuple[set[str], int]] = {}

    async def answer(self, data: bytes) -> None:
        client_id = data.decode()
        key = self.keys.intents(client_id)
        members = texts(await self.redis.smembers(key))
        if not members:
            return  # a release
        self.intents[client_id] = (members, await self.redis.pttl(key))
        for topic in sorted(members):
            if topic == self.refuse:
                await self.redis.hset(
                    self.keys.invalid, f"{client_id} {topic}", "no API keys configured"
                )
                continue
            await self.redis.publish(
                self.keys.channel(topic), with_fields(TICKER, code=topic.split(":")[1])
            )


class FakeLeader(ChannelPeer):
    """Listens on ``P:snapshot``: answers ``answer`` topics on their channel with
    ``stream_type`` REST and names every other one in a ``snapshot`` notice. Records every
    request in ``requests``."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, answer: set[str]) -> None:
        super().__init__(redis, keys, keys.snapshot_requests)
        self.answered = answer
        self.requests: list[dict[str, object]] = []

    async def answer(self, data: bytes) -> None:
        request = json.loads(data)
        self.requests.append(request)
        failed = {}
        for topic in request["topics"]:
            if topic in self.answered:
                payload = with_fields(TICKER, code=topic.split(":")[1], stream_type="REST")
                await self.redis.publish(self.keys.channel(topic), payload)
            else:
                failed[topic] = "REST: not here"
        if failed:
            notice = {"event": "snapshot", "id": request["id"], "failed": failed}
            await self.redis.publish(self.keys.notices, json.dumps(notice))
