"""The upstream protocol against the emulator: snapshots only for what is new, subscriptions
confirmed by LIST_SUBSCRIPTIONS, grouped orderbooks (``level``), and SIMPLE frames upstream."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import (
    Listener,
    list_requests,
    running_collector,
    sent_messages,
    status_of,
    topics_of,
)
from tests.helpers import until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=5, rate=100)]


async def _want(r: aioredis.Redis, keys: Keys, client: str, *topics: str) -> None:
    await r.sadd(keys.intents(client), *topics)
    await r.expire(keys.intents(client), 60)


async def test_adding_one_topic_to_a_union_of_300_costs_one_snapshot(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    codes = sorted(emu.known_codes)
    union = [f"ticker:{code}" for code in codes[:300]]
    extra = f"ticker:{codes[300]}"
    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await _want(r, keys, "big", *union)
        await c.wait_subscribed(lambda u: len(u) == 300, timeout=20)
        connection = emu.connections[0]
        await until(lambda: connection.snapshots_sent == 300, within=10)

        await _want(r, keys, "one", extra)
        await c.wait_subscribed(lambda u: extra in u, timeout=20)
        await asyncio.sleep(0.5)  # any repeated snapshot would be sent with the request
        assert connection.snapshots_sent == 301  # the new topic's, and no other
        last = sent_messages(emu)[-1]
        assert topics_of(last) == {*union, extra}  # the request still carries everything
        realtime = [item for item in last if item.get("is_only_realtime")]
        assert len(realtime) == 1
        assert len(realtime[0]["codes"]) == 300
        assert emu.counters["connections"] == 1


async def test_list_subscriptions_catches_a_code_upbit_dropped_and_the_collector_resends(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    eth = keys.channel("ticker:KRW-ETH")
    emu.drop_code("KRW-ETH")  # the next request is applied without KRW-ETH
    async with (
        Listener(real_redis_url, [eth, keys.notices]) as listener,
        running_collector(real_redis_url, keys, emu.public_url, verify_delay=0.2) as c,
    ):
        await _want(r, keys, "a", "ticker:KRW-BTC", "ticker:KRW-ETH", "trade:KRW-BTC")
        await listener.wait(lambda: listener.messages[eth], within=10)  # flows after the re-send
        assert emu.counters["codes_dropped"] == 1

        mismatch = [
            n for n in listener.notices(keys.notices) if n["event"] == "subscription_mismatch"
        ]
        assert len(mismatch) == 1
        assert mismatch[0]["missing"] == ["ticker:KRW-ETH"]
        assert mismatch[0]["missing_count"] == 1
        first, resent = sent_messages(emu)[:2]
        assert topics_of(first) == topics_of(resent)
        # the re-send asks a snapshot for what was missing only
        assert {"type": "ticker", "codes": ["KRW-ETH"]} in resent
        assert {"type": "ticker", "codes": ["KRW-BTC"], "is_only_realtime": True} in resent
        assert list_requests(emu)[0][1:] == [
            {"method": "LIST_SUBSCRIPTIONS"},
            {"format": "DEFAULT"},
        ]
        events = listener.events(eth)
        assert events[0]["stream_type"] == "SNAPSHOT"

        await until(lambda: c.counters["subscription_checks"] >= 2, within=10)
        assert c.counters["subscription_mismatches"] == 1  # the second check found it right
        status = await _status_when(r, keys, "subscription_verified_at")
        assert status["subscription_mismatches"] == "1"
        assert emu.counters["connections"] == 1


async def test_checks_never_delay_a_subscribe_and_stay_within_the_budget(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    codes = sorted(emu.known_codes)[:8]
    async with running_collector(real_redis_url, keys, emu.public_url, verify_delay=0.0) as c:
        for index, code in enumerate(codes):  # a change every 0.1 s for most of a second
            await _want(r, keys, f"c{index}", f"ticker:{code}")
            await asyncio.sleep(0.1)
        await c.wait_subscribed(lambda u: len(u) == len(codes), timeout=10)
        await until(lambda: c.counters["subscription_checks"] >= 1, within=10)
    times = [record.monotonic for record in emu.received]
    assert all(record.error is None for record in emu.received)  # never TOO_MANY_REQUESTS
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 5
    # the last message the emulator got before the check is the final subscription
    last_subscribe = max(
        index for index, rec in enumerate(emu.received) if b"LIST" not in _raw(rec.raw)
    )
    assert topics_of(orjson.loads(_raw(emu.received[last_subscribe].raw))) == {
        f"ticker:{code}" for code in codes
    }


async def test_level_topics_deliver_grouped_books_and_other_quotes_are_refused(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    grouped, plain = "orderbook:KRW-BTC.5@10000", "orderbook:KRW-BTC.5"
    async with (
        Listener(real_redis_url, [keys.channel(grouped), keys.channel(plain)]) as listener,
        running_collector(real_redis_url, keys, emu.public_url) as c,
    ):
        await _want(r, keys, "a", grouped, plain, "orderbook:BTC-ETH@10")
        await c.wait_subscribed(lambda u: grouped in u and plain in u)
        await listener.wait(
            lambda: (
                listener.messages[keys.channel(grouped)] and listener.messages[keys.channel(plain)]
            ),
            within=10,
        )
        request = sent_messages(emu)[-1]
        assert {"type": "orderbook", "codes": ["KRW-BTC.5"], "level": 10000} in request
        assert {"type": "orderbook", "codes": ["KRW-BTC.5"]} in request
        assert not any("BTC-ETH" in str(item) for item in request)

        for book in listener.events(keys.channel(grouped)):
            assert book["level"] == 10000
            units = book["orderbook_units"]
            assert len(units) == 5
            prices = [u["ask_price"] for u in units] + [u["bid_price"] for u in units]
            assert all(Decimal(p) % 10000 == 0 for p in prices if p)
        assert all(b["level"] == 0 for b in listener.events(keys.channel(plain)))

        reason = await r.hget(keys.invalid, "a orderbook:BTC-ETH@10")
        assert reason is not None
        assert b"KRW markets only" in reason
        # LIST_SUBSCRIPTIONS lists the level object as sent: the check agrees
        await until(lambda: c.counters["subscription_checks"] >= 1, within=10)
        await until(lambda: c.public.applied, within=5)
        assert c.counters["subscription_mismatches"] == 0


async def test_simple_frames_upstream_are_republished_as_the_same_default_bytes(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    simple_keys = Keys(f"{keys.prefix}s")
    topics = ["trade:KRW-BTC", "trade:KRW-ETH", "orderbook:KRW-BTC", "ticker:KRW-BTC"]
    default_ch = [keys.channel(t) for t in topics]
    simple_ch = [simple_keys.channel(t) for t in topics]
    try:
        async with (
            Listener(real_redis_url, default_ch + simple_ch) as listener,
            running_collector(real_redis_url, keys, emu.public_url) as plain,
            running_collector(
                real_redis_url, simple_keys, emu.public_url, upstream_format="SIMPLE"
            ) as simple,
        ):
            await _want(r, keys, "a", *topics)
            await _want(r, simple_keys, "a", *topics)
            await plain.wait_subscribed(lambda u: len(u) == len(topics), timeout=15)
            await simple.wait_subscribed(lambda u: len(u) == len(topics), timeout=15)
            await until(
                lambda: (
                    sorted(conn.format.value for conn in emu.connections) == ["DEFAULT", "SIMPLE"]
                ),
                within=15,
            )

            def common() -> int:
                ids = {
                    orjson.loads(p)["sequential_id"]
                    for ch in default_ch[:2]
                    for p in listener.messages[ch]
                }
                return sum(
                    1
                    for ch in simple_ch[:2]
                    for p in listener.messages[ch]
                    if orjson.loads(p)["sequential_id"] in ids
                )

            await listener.wait(lambda: common() >= 10, within=20)
            # the check asks in SIMPLE too, and its SIMPLE answer (mthd, rslt, cds) agrees
            await until(lambda: simple.counters["subscription_checks"] >= 1, within=15)
            assert list_requests(emu)[-1][-1] in ({"format": "SIMPLE"}, {"format": "DEFAULT"})
            assert any(m[-1] == {"format": "SIMPLE"} for m in list_requests(emu))
            assert simple.counters["subscription_mismatches"] == 0
        for topic in topics:
            a = set(listener.messages[keys.channel(topic)])
            b = set(listener.messages[simple_keys.channel(topic)])
            if topic.startswith("trade"):
                by_id = {orjson.loads(p)["sequential_id"]: p for p in a}
                for payload in b:
                    same = by_id.get(orjson.loads(payload)["sequential_id"])
                    assert same is None or same == payload  # byte for byte
            assert all(not payload.startswith(b'{"ty"') for payload in b)  # DEFAULT names
        assert simple.public.router.passthrough == 0  # every SIMPLE frame was renamed
        assert plain.public.router.passthrough > 0
    finally:
        async for key in r.scan_iter(match=f"{simple_keys.prefix}:*"):
            await r.delete(key)


def _raw(raw: str | bytes) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


async def _status_when(r: aioredis.Redis, keys: Keys, field: str) -> dict[str, str]:
    async def ready() -> bool:
        return bool((await status_of(r, keys)).get(field))

    await until(ready, within=5)
    return await status_of(r, keys)


async def test_an_unasked_or_malformed_listing_is_neither_an_event_nor_a_mismatch(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    async with running_collector(
        real_redis_url, keys, emu.public_url, verify_subscriptions=False
    ) as c:
        await _want(r, keys, "a", "ticker:KRW-BTC")
        await c.wait_subscribed(lambda u: u == {"ticker:KRW-BTC"})
        for junk in (
            {"method": "LIST_SUBSCRIPTIONS", "result": [], "ticket": "x"},  # nothing listed
            {"method": "LIST_SUBSCRIPTIONS", "result": "junk"},
            {"mthd": "LIST_SUBSCRIPTIONS", "rslt": [1, {"ty": 2}]},
        ):
            assert await emu.inject(junk) == 1
        await asyncio.sleep(0.3)
        assert c.counters["subscription_mismatches"] == 0
        assert c.counters["malformed_frames"] == 0
        assert set(c.status.received_by_type) == {"ticker"}  # no event of another kind
        assert set(c.status.published_by_type) <= {"ticker", "canary"}
        assert c.public.state.value == "subscribed"


@pytest.mark.slow
async def test_repeated_differences_are_resent_after_longer_waits(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    # The whole schedule (at once, 1, 2, 4 ... 60 s) is table-tested on a virtual clock
    # (tests/collector/test_sendplan.py); this checks the first two steps on a real socket.
    for _ in range(2):  # the first request and the first re-send are applied without KRW-ETH
        emu.drop_code("KRW-ETH")
    delay = 0.3
    async with running_collector(real_redis_url, keys, emu.public_url, verify_delay=delay) as c:
        await _want(r, keys, "a", "ticker:KRW-BTC", "ticker:KRW-ETH")
        await until(lambda: c.counters["subscription_mismatches"] == 2, within=20)
        await until(lambda: len(sent_messages(emu)) == 3, within=20)  # the 2nd re-send
        await until(lambda: emu.connections[0].subscription is not None, within=5)
    sends = [rec.monotonic for rec in emu.received if b"LIST" not in _raw(rec.raw)]
    checks = [rec.monotonic for rec in emu.received if b"LIST" in _raw(rec.raw)]
    assert len(sends) == 3
    # each re-send follows the check that found the difference: at once the first time, then
    # after 1 s
    waits = [sends[i + 1] - checks[i] for i in range(2)]
    assert waits[1] >= 0.9
    assert emu.counters["codes_dropped"] == 2
    assert all(record.error is None for record in emu.received)
