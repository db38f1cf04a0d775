"""snapshot() asks the leader's REST side first for cold topics (docs/contract.md, "Cold
snapshots from REST"), and falls back to a transient intent at once when told it failed.

The collector is simulated at the contract level, as in tests/client/test_snapshot.py: one task
plays the leader on ``P:snapshot``, one answers intents on ``P:control``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.client.support import client, sample_line, with_fields
from tests.client.test_snapshot import FakeCollector
from upbit_fanout.client._snapshot import take_snapshots
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import parse_topic

pytestmark = pytest.mark.usefixtures("real_redis_url")

TICKER = sample_line("ticker")


class FakeLeader:
    """Listens on ``P:snapshot``: answers ``answer`` topics on their channel with
    ``stream_type`` REST and names every other one in a ``snapshot`` notice."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, answer: set[str]) -> None:
        self.redis = redis
        self.keys = keys
        self.answer = answer
        self.requests: list[dict[str, object]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> FakeLeader:
        self._task = asyncio.create_task(self._run())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.keys.snapshot_requests)
            self._ready.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is None:
                    continue
                request = json.loads(message["data"])
                self.requests.append(request)
                failed = {}
                for topic in request["topics"]:
                    if topic in self.answer:
                        payload = with_fields(TICKER, code=topic.split(":")[1], stream_type="REST")
                        await self.redis.publish(self.keys.channel(topic), payload)
                    else:
                        failed[topic] = "REST: not here"
                if failed:
                    notice = {"event": "snapshot", "id": request["id"], "failed": failed}
                    await self.redis.publish(self.keys.notices, json.dumps(notice))
        finally:
            await pubsub.aclose()


@pytest.fixture
async def fake(r: aioredis.Redis, keys: Keys) -> AsyncIterator[FakeCollector]:
    async with FakeCollector(r, keys) as collector:
        yield collector


async def test_cold_topics_are_asked_of_rest_and_write_no_intent(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, fake: FakeCollector
) -> None:
    async with (
        FakeLeader(r, keys, {"ticker:KRW-ETH", "ticker:KRW-XRP"}) as leader,
        client(real_redis_url, keys, client_id="b" * 128) as c,
    ):
        events = await c.snapshots(["ticker:KRW-ETH", "ticker:KRW-XRP"], timeout=5)
    assert {name: e.stream_type for name, e in events.items()} == {
        "ticker:KRW-ETH": "REST",
        "ticker:KRW-XRP": "REST",
    }
    assert fake.intents == {}  # the collector never heard of an intent
    (request,) = leader.requests
    # the longest id: the transient key's prefix (cut to fit ".snap1"), and a request id that fits
    assert request["client"] == "b" * (128 - len(".snap1"))
    assert isinstance(request["id"], str)
    assert len(request["id"]) == 128
    assert request["topics"] == ["ticker:KRW-ETH", "ticker:KRW-XRP"]


async def test_what_rest_cannot_answer_takes_the_intent_way_at_once(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, fake: FakeCollector
) -> None:
    wanted = {name: parse_topic(name) for name in ("ticker:KRW-ETH", "ticker:KRW-XRP")}
    async with FakeLeader(r, keys, {"ticker:KRW-ETH"}):
        loop = asyncio.get_running_loop()
        started = loop.time()
        # without the notice, the fallback would wait for rest_wait (15 s) first
        events = await take_snapshots(r, keys, "bot.snap1", wanted, timeout=60, max_age=None,
                                      rest_wait=15)  # fmt: skip
        waited = loop.time() - started
    assert events["ticker:KRW-ETH"].stream_type == "REST"
    assert events["ticker:KRW-XRP"].code == "KRW-XRP"
    assert fake.intents["bot.snap1"][0] == {"ticker:KRW-XRP"}  # only the failed one
    assert waited < 10, "the failure notice made it fall back at once"
