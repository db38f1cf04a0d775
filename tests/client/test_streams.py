"""Durable reading of the private streams: XREAD from now / the start / a saved id, consumer
groups with pending redelivery, XAUTOCLAIM and an ack in the caller's transaction (real Redis)."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from tests.helpers import text
from upbit_fanout.client import (
    BlockingClient,
    FanoutClient,
    Gap,
    MyAsset,
    MyOrder,
    PrivateStream,
    StreamEvent,
    StreamGroup,
)
from upbit_fanout.collector.private_sync import gap_event
from upbit_fanout.subscriptions.jsontext import dumps_exact
from upbit_fanout.subscriptions.keys import Keys

ORDER = {
    "type": "myOrder",
    "code": "KRW-BTC",
    "uuid": "u-1",
    "ask_bid": "BID",
    "order_type": "limit",
    "state": "wait",
    "trade_uuid": None,
    "price": 0.001453,
    "avg_price": 0,
    "volume": 30925891.29839369,
    "remaining_volume": 30925891.29839369,
    "executed_volume": 0,
    "trades_count": 0,
    "reserved_fee": 44.23943970238218,
    "remaining_fee": 44.23943970238218,
    "paid_fee": 0,
    "locked": 44968.8,
    "executed_funds": 0,
    "time_in_force": None,
    "order_timestamp": 1710146517000,
    "timestamp": 1710146517267,
}


def order_payload(uuid: str, state: str = "wait") -> bytes:
    return json.dumps({**ORDER, "uuid": uuid, "state": state}).encode()


def uuid_of(item: StreamEvent) -> str:
    assert isinstance(item.typed, MyOrder), item.typed
    return item.typed.uuid


async def add_order(r: aioredis.Redis, keys: Keys, uuid: str, state: str = "wait") -> str:
    fields = {"payload": order_payload(uuid, state), "topic": "myOrder:KRW-BTC", "source": "ws"}
    entry_id = await r.xadd(keys.stream("myOrder"), fields)  # type: ignore[arg-type, unused-ignore]
    return text(entry_id)


async def test_a_plain_reader_starts_now_at_the_beginning_or_after_a_saved_id(
    r: aioredis.Redis, keys: Keys
) -> None:
    first = await add_order(r, keys, "a")
    await add_order(r, keys, "b")
    gap = dumps_exact(gap_event(1_000, 3_500, "private socket reconnected"))
    await r.xadd(keys.stream("myOrder"), {"payload": gap, "topic": "", "source": "gap"})

    everything = PrivateStream(r, "myOrder", key_prefix=keys.prefix, start="0", block=0.1)
    items = await everything.read()
    assert [type(i) for i in items] == [StreamEvent, StreamEvent, Gap]
    order = items[0]
    assert isinstance(order, StreamEvent)
    assert order.entry_id == first
    assert order.source == "ws"
    typed = order.typed
    assert isinstance(typed, MyOrder)
    assert typed.uuid == "a"
    assert str(typed.volume) == "30925891.29839369"  # exact digits
    hole = items[2]
    assert isinstance(hole, Gap)
    assert (hole.started_at, hole.ended_at, hole.topics) == (1.0, 3.5, ("myOrder",))
    assert hole.entry_id is not None

    now = PrivateStream(r, "myOrder", key_prefix=keys.prefix, start="$", block=0.1)
    assert await now.read() == []
    await add_order(r, keys, "c")
    assert [uuid_of(i) for i in await now.read() if isinstance(i, StreamEvent)] == ["c"]

    resumed = PrivateStream(r, "myOrder", key_prefix=keys.prefix, start=first, block=0.1)
    got = [i for i in await resumed.read() if isinstance(i, StreamEvent)]
    assert [uuid_of(i) for i in got] == ["b", "c"]
    assert resumed.last_id == got[-1].entry_id


async def test_a_group_redelivers_unacknowledged_entries_to_the_restarted_consumer(
    r: aioredis.Redis, keys: Keys
) -> None:
    for n in range(5):
        await add_order(r, keys, f"o{n}")

    def group(consumer: str, claim_idle: float = 30.0) -> StreamGroup:
        return StreamGroup(
            r,
            "myOrder",
            group="bots",
            consumer=consumer,
            key_prefix=keys.prefix,
            claim_idle=claim_idle,
            block=0.1,
        )

    crashed = group("worker-1")
    batch = await crashed.read(count=3)
    await crashed.ack(batch[0])  # processed one, then "crashed" holding two
    assert await crashed.pending() == 2

    restarted = group("worker-1")  # same name: its own pending entries come first
    again = await restarted.read()
    assert [i.entry_id for i in again] == [i.entry_id for i in batch[1:]]
    await restarted.ack(*again)
    rest = await restarted.read()
    assert [uuid_of(i) for i in rest if isinstance(i, StreamEvent)] == ["o3", "o4"]
    await restarted.ack(*rest)

    # another consumer takes over what a dead one left pending once it is idle long enough
    await add_order(r, keys, "o5")
    dead = group("worker-2")
    (held,) = await dead.read()
    assert isinstance(held, StreamEvent)
    taker = group("worker-3", claim_idle=0.2)
    assert not [i for i in await taker.read() if i.entry_id == held.entry_id]
    await asyncio.sleep(0.3)
    claimed = await taker.read()
    assert [i.entry_id for i in claimed] == [held.entry_id]
    assert taker.claimed == 1

    # the ack can commit with the caller's own effect, in one transaction
    async with r.pipeline(transaction=True) as pipe:
        pipe.rpush(f"{keys.prefix}:processed", held.entry_id)
        taker.ack_in(pipe, held)
        await pipe.execute()
    assert await taker.pending() == 0
    assert await r.lrange(f"{keys.prefix}:processed", 0, -1) == [held.entry_id.encode()]


async def test_fanout_and_blocking_clients_read_streams_on_their_own_redis(
    r: aioredis.Redis, keys: Keys, real_redis_url: str
) -> None:
    asset = {
        "type": "myAsset",
        "asset_uuid": "as-1",
        "assets": [{"currency": "KRW", "balance": 1386929.37231066771348207123, "locked": 0}],
        "asset_timestamp": 1,
        "timestamp": 2,
    }
    payload = json.dumps(asset).encode()
    await r.xadd(keys.stream("myAsset"), {"payload": payload, "topic": "myAsset", "source": "rest"})
    async with FanoutClient(real_redis_url, key_prefix=keys.prefix, client_id="s1") as client:
        reader = client.private_stream("myAsset", start="0", block=0.1)
        (item,) = await reader.read()
        assert isinstance(item, StreamEvent)
        assert item.source == "rest"
        assert isinstance(item.typed, MyAsset)

    def blocking() -> list[str]:
        with BlockingClient(real_redis_url, key_prefix=keys.prefix, client_id="s2") as bc:
            consumer = bc.stream_group("myAsset", group="books", block=0.1)
            seen = list(consumer.events(timeout=0.5))
            consumer.ack(*seen)
            return [i.entry_id or "" for i in seen]

    ids = await asyncio.to_thread(blocking)
    assert len(ids) == 1
    groups = await r.xinfo_groups(keys.stream("myAsset"))
    assert groups[0]["pending"] == 0
