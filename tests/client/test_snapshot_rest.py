"""snapshot() asks the leader's REST side first for cold topics (docs/contract.md, "Cold
snapshots from REST"), and falls back to a transient intent at once when told it failed.

The collector is simulated at the contract level (tests/client/fakes.py), as in
tests/client/test_snapshot.py: one task plays the leader on ``P:snapshot``, one answers intents on
``P:control``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.client.fakes import FakeCollector, FakeLeader
from tests.client.support import client
from upbit_fanout.client._snapshot import take_snapshots
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import parse_topic

pytestmark = pytest.mark.usefixtures("real_redis_url")


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
