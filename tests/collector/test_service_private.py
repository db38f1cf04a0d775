"""Private streams: a second connection with a fresh JWT, only when private topics are wanted."""

from __future__ import annotations

import json
import logging

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import Listener, running_collector, status_of, union_becomes
from tests.helpers import stream_entries, until
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

ACCESS = "AkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAk"  # 40 characters, like Upbit's
SECRET = "Sx9kTr4WqPz2LmN8vBc6Hd3Jf7Gy5Ue1Oi0Pa2Sd"
WRONG = "Wr0ngWr0ngWr0ngWr0ngWr0ngWr0ngWr0ngWr0ng"


pytestmark = [
    pytest.mark.usefixtures("real_redis_url"),
    pytest.mark.emulator(seed=4, rate=300, access_key=ACCESS, secret_key=SECRET),
]


async def test_private_intents_open_an_authenticated_connection_and_get_order_events(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    private = {"myOrder:KRW-BTC", "myOrder:*", "myAsset"}
    channels = [keys.channel(topic) for topic in private]
    async with (
        Listener(real_redis_url, channels) as listener,
        running_collector(
            real_redis_url,
            keys,
            emu.public_url,
            private_url=emu.private_url,
            access_key=ACCESS,
            secret_key=SECRET,
            record_private=False,  # recording off: the private socket follows intents alone
            warm_seconds=0,  # and closes as soon as nothing is wanted (no warm socket)
        ) as c,
    ):
        await r.sadd(keys.intents("watcher"), "ticker:KRW-BTC")
        await r.expire(keys.intents("watcher"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        assert [conn.private for conn in emu.connections] == [False]  # none until wanted

        await r.sadd(keys.intents("trader"), *private)
        await r.expire(keys.intents("trader"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC", *private})
        assert sorted(conn.private for conn in emu.connections) == [False, True]
        assert emu.counters["auth_failures"] == 0  # a valid HS512 JWT
        await union_becomes(r, keys, {"ticker:KRW-BTC", *private})

        price = emu.simulator.last_price("KRW-BTC")
        emu.place_order(code="KRW-BTC", side="bid", ord_type="limit", price=price, volume="0.001")
        await listener.wait(lambda: all(listener.messages[ch] for ch in channels))
        order = listener.events(keys.channel("myOrder:KRW-BTC"))[0]
        assert order["type"] == "myOrder"
        assert order["code"] == "KRW-BTC"
        assert listener.events(keys.channel("myOrder:*"))[0] == order
        asset = listener.events(keys.channel("myAsset"))[0]
        assert asset["type"] == "myAsset"
        assert asset["assets"]

        # The durable copies: one stream entry per event (not one per topic).
        order_entries = stream_entries(await r.xrange(keys.stream("myOrder")))
        asset_entries = stream_entries(await r.xrange(keys.stream("myAsset")))
        assert len(order_entries) == len(listener.messages[keys.channel("myOrder:KRW-BTC")])
        assert len(asset_entries) >= 1
        fields = order_entries[0][1]
        assert fields[b"topic"] == b"myOrder:KRW-BTC"
        assert fields[b"payload"] == listener.messages[keys.channel("myOrder:KRW-BTC")][0]

        # Both connections confirmed their subscription with LIST_SUBSCRIPTIONS.
        await until(lambda: c.counters["subscription_checks"] >= 2, within=10)
        await until(lambda: c.private is not None and c.private.applied)
        assert c.counters["subscription_mismatches"] == 0

        # When nobody wants private topics any more, the private socket is closed.
        await r.delete(keys.intents("trader"))
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await until(lambda: [conn.private for conn in emu.connections] == [False])


async def test_wrong_keys_are_refused_reported_and_never_revealed(
    real_redis_url: str,
    keys: Keys,
    emu: Emulator,
    r: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    btc = keys.channel("ticker:KRW-BTC")
    async with (
        Listener(real_redis_url, [btc, keys.notices]) as listener,
        running_collector(
            real_redis_url,
            keys,
            emu.public_url,
            private_url=emu.private_url,
            access_key=ACCESS,
            secret_key=WRONG,
            private_start_wait=0.3,
        ) as c,
    ):
        await r.sadd(keys.intents("trader"), "myAsset", "ticker:KRW-BTC")
        await r.expire(keys.intents("trader"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await until(lambda: emu.counters["auth_failures"] >= 3)  # it keeps retrying
        await until(lambda: _refused(r, keys))
        # the REST reconciliation is refused as Upbit refuses it, and reported once
        recorder = c.recorder
        assert recorder is not None
        await until(lambda: recorder.reconciliations >= 1)
        assert recorder.last_result == "refused: jwt_verification (HTTP 401)"
        await recorder.reconcile(0, 1)  # a second attempt: refused again, not logged again
        assert emu.counters["rest_refused:401"] >= 2
        assert recorder.appended == 0
        # The public stream is unaffected.
        seen = len(listener.messages[btc])
        await listener.wait(lambda: len(listener.messages[btc]) > seen + 2)
        await union_becomes(r, keys, {"ticker:KRW-BTC"})
        status = await status_of(r, keys)
        notices = list(listener.messages[keys.notices])

    assert status["state"] == "subscribed"
    assert "401" in status["last_error"]
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1  # logged once, not once per retry
    assert "refused the API keys" in errors[0].getMessage()
    rest = [rec for rec in caplog.records if "reconciliation over REST failed" in rec.getMessage()]
    assert len(rest) == 1
    assert rest[0].levelno == logging.WARNING
    assert c.status.snapshot()["private_last_reconcile"] == "refused: jwt_verification (HTTP 401)"
    # Never a secret (nor a token) in our logs (the emulator's server-side DEBUG lines are
    # Upbit's business, not ours), in the status or in the notices.
    texts = [rec.getMessage() for rec in caplog.records if not rec.name.startswith("emulator")]
    texts += [f"{k}={v}" for k, v in status.items()]
    texts += [n.decode() for n in notices]
    texts += [json.dumps(c.status.snapshot())]
    for text in texts:
        assert WRONG not in text
        assert SECRET not in text
        assert "eyJ" not in text  # a JWT's base64 header
    assert WRONG not in repr(c.private)


async def _refused(r: aioredis.Redis, keys: Keys) -> bool:
    status = await status_of(r, keys)
    return status.get("private_upstream_state") == "reconnecting" and "401" in status.get(
        "last_error", ""
    )
