"""The client's pure parts: ids, reconnect delays, URL redaction, the bounded buffer, argument
expansion. No Redis."""

from __future__ import annotations

import asyncio
import re

import pytest

from upbit_fanout.client import Event, FanoutClient, InvalidTopicError
from upbit_fanout.client._buffer import Buffer
from upbit_fanout.client._client import _expand
from upbit_fanout.client._util import (
    default_client_id,
    sanitize_client_id,
    transient_id,
)
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.redact import redact_url
from upbit_fanout.subscriptions.topics import Topic

CLIENT_ID = re.compile(r"[A-Za-z0-9_.\-@]{1,128}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bot-1", "bot-1"),
        ("my host/with spaces", "my-host-with-spaces"),
        ("ünïcode:name", "n-code-name"),
        ("::", "client"),
        ("a" * 300, "a" * 128),
    ],
)
def test_sanitize_client_id(text: str, expected: str) -> None:
    assert sanitize_client_id(text) == expected
    Keys().intents(sanitize_client_id(text))  # accepted by the contract


def test_default_client_id_says_host_and_pid_and_is_valid() -> None:
    generated = default_client_id(hostname="trading box.local", pid=4242, token="abc123")
    assert generated == "trading-box.local-4242-abc123"
    assert CLIENT_ID.fullmatch(default_client_id())
    assert default_client_id() != default_client_id()
    assert CLIENT_ID.fullmatch(default_client_id(hostname="h" * 500))


def test_transient_id_fits_the_alphabet_and_length() -> None:
    assert transient_id("bot-1", 3) == "bot-1.snap3"
    long_id = transient_id("x" * 128, 12)
    assert len(long_id) == 128
    assert long_id.endswith(".snap12")
    Keys().intents(long_id)


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url("redis://user:s3cret@host:6380/2") == "redis://user:***@host:6380/2"
    assert redact_url("rediss://:s3cret@host/0") == "rediss://:***@host/0"
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def _event(n: int) -> Event:
    return Event("ticker:KRW-BTC", Topic("ticker", "KRW-BTC"), str(n).encode())


async def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    buffer: Buffer[Event] = Buffer(3, "drop_oldest")
    for n in range(10):
        assert buffer.offer(_event(n))
    assert len(buffer) == 3
    assert buffer.dropped == 7
    assert [e.payload for e in buffer.pop_many(10)] == [b"7", b"8", b"9"]


async def test_block_waits_for_room_and_never_grows() -> None:
    buffer: Buffer[Event] = Buffer(2, "block")
    assert buffer.offer(_event(0))
    assert buffer.offer(_event(1))
    assert not buffer.offer(_event(2))
    put = asyncio.create_task(buffer.put(_event(2)))
    await asyncio.sleep(0.01)
    assert not put.done()
    assert len(buffer) == 2
    first = buffer.pop()
    assert first is not None
    assert first.payload == b"0"
    await asyncio.wait_for(put, 1)
    assert [e.payload for e in buffer.pop_many(5)] == [b"1", b"2"]
    assert buffer.dropped == 0


async def test_close_wakes_a_waiting_consumer_and_producer() -> None:
    buffer: Buffer[Event] = Buffer(1, "block")
    waiting = asyncio.create_task(buffer.wait())
    await asyncio.sleep(0)
    buffer.close()
    await asyncio.wait_for(waiting, 1)
    full: Buffer[Event] = Buffer(1, "block")
    full.offer(_event(0))
    put = asyncio.create_task(full.put(_event(1)))
    await asyncio.sleep(0)
    full.close()
    await asyncio.wait_for(put, 1)
    assert len(full) == 1


def test_buffer_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Buffer(0, "block")
    with pytest.raises(ValueError, match="drop_oldest"):
        Buffer(10, "newest")  # type: ignore[arg-type]


def test_expand_topics_and_types_with_codes() -> None:
    assert [str(t) for t in _expand(("ticker:KRW-BTC", "orderbook:KRW-BTC.5"), None)] == [
        "ticker:KRW-BTC",
        "orderbook:KRW-BTC.5",
    ]
    assert [str(t) for t in _expand(("trade", "ticker"), ["KRW-BTC", "KRW-ETH"])] == [
        "trade:KRW-BTC",
        "trade:KRW-ETH",
        "ticker:KRW-BTC",
        "ticker:KRW-ETH",
    ]
    with pytest.raises(InvalidTopicError, match="market codes are upper case"):
        _expand(("trade",), ["krw-btc"])
    with pytest.raises(InvalidTopicError, match="not topics"):
        _expand(("trade:KRW-BTC",), ["KRW-ETH"])
    with pytest.raises(TypeError, match="list of market codes"):
        _expand(("trade",), "KRW-BTC")


def test_constructor_validates_at_once() -> None:
    with pytest.raises(ValueError, match="lease"):
        FanoutClient("redis://127.0.0.1:1/0", lease_seconds=0.5)
    with pytest.raises(ValueError, match="client id"):
        FanoutClient("redis://127.0.0.1:1/0", client_id="has space")
    with pytest.raises(ValueError, match="prefix"):
        FanoutClient("redis://127.0.0.1:1/0", key_prefix="a:b")
    with pytest.raises(ValueError, match="overflow"):
        FanoutClient("redis://127.0.0.1:1/0", overflow="newest")  # type: ignore[arg-type]


def test_event_is_lazy_and_exact() -> None:
    event = Event(
        "myAsset", Topic("myAsset"), b'{"type":"myAsset","balance":1386929.37231066771348207123}'
    )
    assert event._data is None  # nothing decoded until asked
    assert str(event.data["balance"]) == "1386929.37231066771348207123"
    assert event.code is None
    assert event.type == "myAsset"
    assert event.stream_type is None
