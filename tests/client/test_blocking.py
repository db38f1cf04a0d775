"""BlockingClient from plain, synchronous code: no event loop in the test at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.client.support import FAST, sample_line, with_fields
from upbit_fanout.client import BlockingClient, ClientError, Event, InvalidTopicError, Ticker
from upbit_fanout.subscriptions.keys import Keys

TICKER = sample_line("ticker")


@pytest.fixture
def sync_redis(real_redis_url: str, keys: Keys) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_redis_url)
    try:
        yield client
    finally:
        for key in client.scan_iter(match=f"{keys.prefix}:*"):
            client.delete(key)
        client.close()


def wait_subscribed(r: redis.Redis, channel: str) -> None:
    deadline = time.monotonic() + 5
    while int(r.pubsub_numsub(channel)[0][1]) < 1:
        assert time.monotonic() < deadline, f"nobody subscribed to {channel}"
        time.sleep(0.01)


def test_subscribe_receive_callbacks_snapshot_close(
    real_redis_url: str, keys: Keys, sync_redis: redis.Redis
) -> None:
    callback_threads: list[str] = []
    arrived = threading.Event()

    def on_ticker(event: Event) -> None:
        callback_threads.append(threading.current_thread().name)
        arrived.set()

    sync_redis.sadd(keys.union, "ticker:KRW-ETH")
    sync_redis.set(keys.last("ticker:KRW-ETH"), with_fields(TICKER, code="KRW-ETH"))
    with BlockingClient(real_redis_url, key_prefix=keys.prefix, **FAST) as c:
        with pytest.raises(InvalidTopicError, match="upper case"):
            c.subscribe("ticker:krw-btc")
        c.on("ticker:*", on_ticker)
        c.subscribe("ticker", codes=["KRW-BTC"])
        key = keys.intents(c.client_id)
        assert sync_redis.smembers(key) == {b"ticker:KRW-BTC"}
        assert 0 < sync_redis.pttl(key) <= 1500
        wait_subscribed(sync_redis, keys.channel("ticker:KRW-BTC"))
        for n in range(3):
            sync_redis.publish(keys.channel("ticker:KRW-BTC"), with_fields(TICKER, timestamp=n))

        got = [item for item in c.events(timeout=0.5) if isinstance(item, Event)]
        assert [e.data["timestamp"] for e in got] == [0, 1, 2]
        assert isinstance(got[0].typed, Ticker)
        assert arrived.wait(5)
        assert set(callback_threads) == {callback_threads[0]}
        assert callback_threads[0].startswith("upbit-fanout-callbacks")  # not the loop's thread

        snap = c.snapshot("ticker:KRW-ETH", timeout=2)
        assert snap.cached
        assert snap.code == "KRW-ETH"
        assert c.topics == {"ticker:KRW-BTC"}
        assert c.connected
        assert c.dropped == 0
    assert not sync_redis.exists(key)
    assert not [t for t in threading.enumerate() if t.name.startswith("upbit-fanout")]
    with pytest.raises(ClientError, match="closed"):
        c.subscribe("ticker:KRW-BTC")


def test_a_slow_script_keeps_its_lease(
    real_redis_url: str, keys: Keys, sync_redis: redis.Redis
) -> None:
    with BlockingClient(real_redis_url, key_prefix=keys.prefix, **FAST) as c:
        c.subscribe("trade:KRW-BTC")
        time.sleep(2.0)  # the script is busy for longer than the 1.5 s lease
        assert 0 < sync_redis.pttl(keys.intents(c.client_id)) <= 1500


def test_unreachable_redis_raises_and_leaves_no_thread(keys: Keys) -> None:
    with (
        pytest.raises(ClientError, match=r"127\.0\.0\.1:1"),
        BlockingClient("redis://127.0.0.1:1/0", key_prefix=keys.prefix),
    ):
        pass
    assert not [t for t in threading.enumerate() if t.name.startswith("upbit-fanout")]


def test_a_callback_may_close_the_blocking_client(
    real_redis_url: str, keys: Keys, sync_redis: redis.Redis
) -> None:
    done = threading.Event()
    with BlockingClient(real_redis_url, key_prefix=keys.prefix, **FAST) as c:

        def stop(event: Event) -> None:
            c.close()
            done.set()

        c.on("*", stop)
        c.subscribe("ticker:KRW-BTC")
        wait_subscribed(sync_redis, keys.channel("ticker:KRW-BTC"))
        sync_redis.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        assert done.wait(10)
        with pytest.raises(ClientError, match="closed"):
            next(c.events(timeout=0.1))
    assert not sync_redis.exists(keys.intents(c.client_id))
