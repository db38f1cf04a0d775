"""Leadership: a second collector waits as a hot standby on P:leader and takes over."""

from __future__ import annotations

import contextlib

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import running_collector, status_of
from tests.helpers import until
from upbit_fanout.collector import State
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import parse_leader

pytestmark = pytest.mark.usefixtures("real_redis_url")


async def test_a_standby_takes_over_when_the_leader_stops(real_redis_url: str, keys: Keys) -> None:
    r = aioredis.Redis.from_url(real_redis_url)
    await r.sadd(keys.intents("bot"), "ticker:KRW-BTC")
    await r.expire(keys.intents("bot"), 30)
    try:
        async with (
            Emulator(port=0, seed=6, rate=100) as emu,
            contextlib.AsyncExitStack() as stack,
        ):
            first = await stack.enter_async_context(
                running_collector(
                    real_redis_url, keys, emu.public_url, leader_lease=1.0, collector_id="one"
                )
            )
            await first.wait_subscribed()
            second = await stack.enter_async_context(
                running_collector(
                    real_redis_url, keys, emu.public_url, leader_lease=1.0, collector_id="two"
                )
            )
            await until(lambda: second.tracker.loaded)  # warm: it tracks intents already
            assert second.state == State.STANDBY
            assert not second.is_leader
            assert len(emu.connections) == 1  # only the leader talks to Upbit
            first_value = await r.get(keys.leader)
            assert first_value is not None
            assert parse_leader(first_value)[1] == "one"  # "{fencing token} {collector id}"
            assert (await status_of(r, keys))["collector_id"] == "one"  # the standby is silent

            await first.aclose()  # gives the key back at once
            await second.wait_subscribed(timeout=3)
            assert second.is_leader
            token, holder = parse_leader(await r.get(keys.leader))
            assert holder == "two"
            first_token = parse_leader(first_value)[0]
            assert token is not None
            assert first_token is not None
            assert token > first_token
            await until(lambda: _status(r, keys, collector_id="two", state="subscribed"))
            await emu.wait_connections(1)
    finally:
        async for key in r.scan_iter(match=f"{keys.prefix}:*"):
            await r.delete(key)
        await r.aclose()


async def _status(r: aioredis.Redis, keys: Keys, **fields: str) -> bool:
    status = await status_of(r, keys)
    return all(status.get(name) == value for name, value in fields.items())
