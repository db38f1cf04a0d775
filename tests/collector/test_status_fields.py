"""Status that reads right: role and who leads, a standby that says it is one, uptime, rate,
per-type counts, and ``upbit-fanout status`` printing them. Real Redis, real emulator."""

from __future__ import annotations

import contextlib
import json

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import running_collector, status_of
from tests.helpers import until
from upbit_fanout.commands.status import gather, render_text
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")


async def test_leader_and_standby_say_what_they_are(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    await r.sadd(keys.intents("bot"), "ticker:KRW-BTC", "trade:KRW-BTC")
    await r.expire(keys.intents("bot"), 60)
    async with (
        Emulator(port=0, seed=9, rate=300) as emu,
        contextlib.AsyncExitStack() as standby_stack,
        contextlib.AsyncExitStack() as leader_stack,
    ):
        two = await leader_stack.enter_async_context(
            running_collector(
                real_redis_url, keys, emu.public_url, leader_lease=1.0, collector_id="two"
            )
        )
        # "two" starts first and leads; "one" is the standby.
        await two.wait_subscribed(timeout=15)
        assert two.is_leader
        one = await standby_stack.enter_async_context(
            running_collector(
                real_redis_url, keys, emu.public_url, leader_lease=1.0, collector_id="one"
            )
        )

        async def settled() -> bool:
            status = await status_of(r, keys)
            by_type = json.loads(status.get("published_by_type") or "{}")
            return (
                await r.exists(keys.standby("one")) == 1
                and by_type.get("ticker", 0) > 0
                and by_type.get("trade", 0) > 0
                and float(status.get("events_per_second") or 0) > 0
            )

        await until(settled, within=15)
        assert not one.is_leader
        report = await gather(real_redis_url, keys)
        collector = report["collector"]
        assert collector["collector_id"] == "two"
        assert collector["role"] == "leader"
        assert isinstance(collector["leader_since"], int)
        assert isinstance(collector["uptime_seconds"], int)
        assert report["leader"]["collector_id"] == "two"
        assert [s["collector_id"] for s in report["standbys"]] == ["one"]
        assert report["standbys"][0]["state"] == "standby"
        text = render_text(report)
        assert "  role          leader since " in text
        assert "events/s (last minute)" in text
        assert "ticker=" in text
        assert "trade=" in text
        assert "Standby    one  (standby" in text
        assert "  delivery      canary came back" in text

        # The leader stops (and gives its lease back): the standby takes over, says so, and
        # is no longer listed as a standby.
        await leader_stack.aclose()

        async def one_leads() -> bool:
            status = await status_of(r, keys)
            return status.get("collector_id") == "one" and status.get("role") == "leader"

        await until(one_leads, within=15)
        assert one.is_leader
        assert await r.exists(keys.standby("one")) == 0
