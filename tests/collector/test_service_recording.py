"""Always-on recording of the private streams: no intent needed, gaps written, REST reconciles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import Listener, running_collector
from tests.helpers import stream_entries, text, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

ACCESS = "AkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAk"
SECRET = "Sx9kTr4WqPz2LmN8vBc6Hd3Jf7Gy5Ue1Oi0Pa2Sd"
KEYS: dict[str, Any] = {"access_key": ACCESS, "secret_key": SECRET}


async def entries(r: aioredis.Redis, keys: Keys, type_name: str) -> list[dict[str, Any]]:
    out = []
    for entry_id, fields in stream_entries(await r.xrange(keys.stream(type_name))):
        out.append(
            {
                "id": text(entry_id),
                "source": text(fields[b"source"]),
                "topic": text(fields[b"topic"]),
                "event": decode_event(fields[b"payload"]),
            }
        )
    return out


async def recorded(
    r: aioredis.Redis, keys: Keys, uuids: Iterable[str], source: str, state: str
) -> bool:
    """Every one of these orders has a myOrder entry from ``source`` in ``state``."""
    found = {
        e["event"]["uuid"]
        for e in await entries(r, keys, "myOrder")
        if e["source"] == source and e["event"]["state"] == state
    }
    return set(uuids) <= found


def buy(emu: Emulator) -> str:
    """A small market buy: fills at once (trade, done) with a myAsset event after each."""
    return emu.place_order(code="KRW-BTC", side="bid", ord_type="price", price="6000")


async def test_every_order_is_recorded_once_with_no_intent_alive(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    channels = [keys.channel("myOrder:*"), keys.channel("myOrder:KRW-BTC"), keys.channel("myAsset")]
    async with (
        Emulator(port=0, seed=5, rate=200, **KEYS) as emu,
        Listener(real_redis_url, channels) as listener,
        running_collector(
            real_redis_url, keys, emu.public_url, private_url=emu.private_url, **KEYS
        ) as c,
    ):
        await until(lambda: any(conn.private for conn in emu.connections), within=10)
        assert c.recorder is not None
        await until(lambda: c.recorder is not None and c.recorder.reconciliations >= 1)
        placed = [buy(emu) for _ in range(60)]  # 60 orders: 120 order and 120 asset events
        await until(lambda: c.publisher.stream_entries >= 241, within=15)
        orders = await entries(r, keys, "myOrder")
        assets = await entries(r, keys, "myAsset")
        assert c.union == frozenset()  # nobody asked for a channel
    assert not any(listener.messages[ch] for ch in channels)  # and none was published

    live = [e for e in orders if e["source"] == "ws"]
    lifecycle: dict[str, list[str]] = {}
    for e in live:
        lifecycle.setdefault(e["event"]["uuid"], []).append(e["event"]["state"])
    assert list(lifecycle) == placed  # in placement order
    assert all(states == ["trade", "done"] for states in lifecycle.values())
    assert len({(e["event"]["uuid"], e["event"]["state"]) for e in live}) == len(live)
    assert sum(1 for e in assets if e["source"] == "ws") == 120
    # first start ever: no gap entry, only the start reconciliation's balances
    assert not [e for e in orders + assets if e["source"] == "gap"]
    assert Counter(e["source"] for e in assets) == {"ws": 120, "rest": 1}


async def test_a_hole_in_the_private_socket_is_a_gap_entry_and_rest_fills_it(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    async with (
        Emulator(port=0, seed=6, rate=200, **KEYS) as emu,
        running_collector(
            real_redis_url, keys, emu.public_url, private_url=emu.private_url, **KEYS
        ) as c,
    ):
        recorder = c.recorder
        assert recorder is not None
        await until(lambda: recorder.reconciliations >= 1, within=10)
        before = [buy(emu) for _ in range(5)]
        await until(lambda: c.publisher.stream_entries >= 21, within=10)  # 10 + 10 + start

        emu.refuse_connections(1.5)
        await emu.drop_all()
        await until(lambda: not any(conn.private for conn in emu.connections), within=5)
        during = [buy(emu) for _ in range(7)]  # nobody hears these live
        await until(lambda: recorder.reconciliations >= 2, within=20)
        # the reconciled entries are in the stream before the next order is placed
        await until(lambda: recorded(r, keys, during, "rest", "done"), within=10)
        after = buy(emu)
        await until(
            lambda: any(conn.private and conn.frames_sent >= 3 for conn in emu.connections),
            within=10,
        )
        await until(lambda: recorded(r, keys, [after], "ws", "done"), within=10)
        orders = await entries(r, keys, "myOrder")
        assets = await entries(r, keys, "myAsset")
        assert recorder.last_result.startswith("ok:")

    gaps = [e for e in orders if e["source"] == "gap"]
    assert len(gaps) == 1
    gap = gaps[0]["event"]
    assert gap["type"] == "gap"
    assert gap["from"] < gap["to"]
    assert next(e for e in assets if e["source"] == "gap")["event"] == gap
    # final state of every order, each state once
    final: dict[str, str] = {}
    for e in orders:
        if e["source"] != "gap":
            final[e["event"]["uuid"]] = e["event"]["state"]
    assert set(final) == {*before, *during, after}
    assert all(state == "done" for state in final.values())
    reconciled = {e["event"]["uuid"] for e in orders if e["source"] == "rest"}
    assert reconciled == set(during)  # REST added exactly what the socket missed
    keys_seen = [(e["event"]["uuid"], e["event"]["state"]) for e in orders if e["source"] != "gap"]
    assert len(keys_seen) == len(set(keys_seen))
    # the gap entry comes before what REST appended for it
    first_rest = min(i for i, e in enumerate(orders) if e["source"] == "rest")
    assert orders.index(gaps[0]) < first_rest


async def test_an_old_order_finished_in_the_hole_is_asked_for_by_uuid(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    """Upbit lists closed orders by creation time: one created before the window (lookback 0
    here) and cancelled during the hole is found through GET /v1/order?uuid=."""
    async with (
        Emulator(port=0, seed=7, rate=200, **KEYS) as emu,
        running_collector(
            real_redis_url,
            keys,
            emu.public_url,
            private_url=emu.private_url,
            reconcile_lookback=0.0,
            **KEYS,
        ) as c,
    ):
        recorder = c.recorder
        assert recorder is not None
        await until(lambda: recorder.reconciliations >= 1, within=10)
        price = (emu.simulator.last_price("KRW-BTC") / 2).quantize(Decimal(1000))
        resting = emu.place_order(
            code="KRW-BTC", side="bid", ord_type="limit", price=price, volume="0.0002"
        )
        await until(lambda: c.publisher.stream_entries >= 3, within=10)  # wait + asset
        await until(lambda: recorded(r, keys, [resting], "ws", "wait"), within=10)
        emu.refuse_connections(1.0)
        await emu.drop_all()
        await until(lambda: not any(conn.private for conn in emu.connections), within=5)
        emu.cancel_order(resting)
        await until(lambda: recorder.reconciliations >= 2, within=20)
        await until(lambda: recorded(r, keys, [resting], "rest", "cancel"), within=10)
        orders = await entries(r, keys, "myOrder")
        requests = emu.counters["rest_requests"]

    states = [(e["source"], e["event"]["state"]) for e in orders if e["source"] != "gap"]
    assert states == [("ws", "wait"), ("rest", "cancel")]
    assert requests >= 7  # 2 x (closed, open, accounts) + the per-uuid order
