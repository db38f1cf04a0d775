"""The hiredis pub/sub reader (client._fast_link): framing, backpressure and every way a
connection is made or lost, against real Redis servers; plus the batch iterator, the lazy Event
and the redis-py fallback reader.

The framing tests drive the protocol with a transport of our own (the bytes go in exactly as the
event loop would hand them over: any split, any size); everything else runs on real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.client.support import client, payload, sample_line, wait_subscribed
from tests.conftest import RedisServer
from tests.helpers import free_port, until
from upbit_fanout.client import BlockingClient, Event, FanoutClient, Gap, parse_event
from upbit_fanout.client._fast_link import HiredisLink, _Reader
from upbit_fanout.client._link import PubSubLink
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import parse_topic

TICKER = sample_line("ticker")
TOPIC = "ticker:KRW-BTC"


def resp_message(channel: bytes, data: bytes, *, resp3: bool = False) -> bytes:
    head = b">3\r\n" if resp3 else b"*3\r\n"
    parts = [b"message", channel, data]
    return head + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class FakeTransport:
    """What _Reader uses of a transport, recording pauses and writes."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.reading = True
        self.closing = False
        self.written: list[bytes] = []

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


class FakeStreamProtocol(asyncio.BaseProtocol):
    def __init__(self) -> None:
        self.lost: list[Exception | None] = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def make_reader(buffer_size: int = 1024) -> tuple[_Reader, FakeTransport, FakeStreamProtocol]:
    transport = FakeTransport()
    stream = FakeStreamProtocol()
    reader = _Reader(transport, stream, buffer_size)  # type: ignore[arg-type]
    return reader, transport, stream


def feed(reader: _Reader, data: bytes) -> None:
    """Hand ``data`` to the protocol as the event loop does: into its buffer, then the count."""
    while data:
        buffer = reader.get_buffer(len(data))
        count = min(len(buffer), len(data))
        buffer[:count] = data[:count]
        reader.buffer_updated(count)
        data = data[count:]


async def running(reader: _Reader) -> tuple[asyncio.Task[None], list[list[Any]]]:
    batches: list[list[Any]] = []
    task = asyncio.create_task(reader.run(batches.append))
    await asyncio.sleep(0)
    return task, batches


# -- framing ------------------------------------------------------------------------------------


async def test_every_message_of_one_read_arrives_in_one_batch_in_order() -> None:
    reader, _, _ = make_reader(buffer_size=1 << 16)
    task, batches = await running(reader)
    data = b"".join(resp_message(b"ch", b"%d" % i) for i in range(100))
    feed(reader, data)
    assert len(batches) == 1
    assert [m[2] for m in batches[0]] == [b"%d" % i for i in range(100)]
    task.cancel()


async def test_a_frame_split_at_any_byte_is_returned_whole_once() -> None:
    frames = resp_message(b"ch", b"first") + resp_message(b"ch", TICKER, resp3=True)
    for split in range(1, len(frames)):
        reader, _, _ = make_reader()
        task, batches = await running(reader)
        feed(reader, frames[:split])
        feed(reader, frames[split:])
        got = [m for batch in batches for m in batch]
        assert got == [[b"message", b"ch", b"first"], [b"message", b"ch", TICKER]], split
        task.cancel()


async def test_a_message_larger_than_the_buffer_arrives_intact() -> None:
    reader, _, _ = make_reader(buffer_size=64)
    task, batches = await running(reader)
    big = bytes(range(256)) * 400  # 100 KiB through a 64-byte buffer: 1,600 reads
    feed(reader, resp_message(b"ch", big) + resp_message(b"ch", b"after"))
    got = [m for batch in batches for m in batch]
    assert got == [[b"message", b"ch", big], [b"message", b"ch", b"after"]]
    task.cancel()


async def test_replies_before_run_wait_parked_and_are_delivered_first() -> None:
    reader, transport, _ = make_reader()
    feed(reader, resp_message(b"ch", b"early"))
    assert not transport.reading  # parked: nobody takes them yet
    task, batches = await running(reader)
    assert transport.reading
    feed(reader, resp_message(b"ch", b"later"))
    assert [m[2] for batch in batches for m in batch] == [b"early", b"later"]
    task.cancel()


async def test_garbage_from_the_server_is_a_connection_error() -> None:
    reader, transport, _ = make_reader()
    task, _ = await running(reader)
    feed(reader, b"?not resp\r\n")
    with pytest.raises(RedisConnectionError, match="protocol error"):
        await task
    assert transport.closing


async def test_a_bug_in_accept_is_raised_as_itself_not_as_a_lost_connection() -> None:
    reader, transport, _ = make_reader()

    def accept(replies: list[Any]) -> None:
        raise KeyError("bug")

    task = asyncio.create_task(reader.run(accept))
    await asyncio.sleep(0)
    feed(reader, resp_message(b"ch", b"x"))
    with pytest.raises(KeyError):
        await task
    assert transport.closing


async def test_connection_lost_ends_run_and_tells_redis_pys_stream_protocol() -> None:
    reader, _, stream = make_reader()
    task, _ = await running(reader)
    reader.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(RedisConnectionError, match="reset by peer"):
        await task
    assert stream.lost == [None]  # redis-py's disconnect() must not wait forever


async def test_pause_and_resume_drive_the_transport() -> None:
    reader, transport, _ = make_reader()
    task, _ = await running(reader)
    reader.pause()
    assert not transport.reading
    reader.resume()
    assert transport.reading
    task.cancel()


# -- real connections ---------------------------------------------------------------------------


async def test_link_on_real_redis_batches_subscribes_and_unsubscribes_while_reading(
    r: aioredis.Redis, keys: Keys
) -> None:
    one, two = keys.channel("ticker:KRW-BTC"), keys.channel("ticker:KRW-ETH")
    link = HiredisLink(r, buffer_size=4096)
    got: list[list[Any]] = []
    await link.open([one])
    task = asyncio.create_task(link.run(got.append))
    try:
        await wait_subscribed(r, one)
        async with r.pipeline(transaction=False) as pipe:
            for i in range(300):
                pipe.publish(one, b"m%d" % i)
            await pipe.execute()
        big = b"x" * 1_000_000  # far larger than the 4 KiB buffer
        await r.publish(one, big)

        def messages(channel: str) -> list[bytes]:
            wanted = channel.encode()
            return [
                m[2]
                for batch in got
                for m in batch
                if isinstance(m, list) and m[0] == b"message" and m[1] == wanted
            ]

        async def all_in() -> bool:
            return len(messages(one)) == 301

        await until(all_in, what="301 messages")
        assert messages(one)[:300] == [b"m%d" % i for i in range(300)]
        assert messages(one)[300] == big
        assert max(len(batch) for batch in got) > 1  # many messages per read

        await link.send("SUBSCRIBE", two)
        await wait_subscribed(r, two)
        await r.publish(two, b"on two")
        await link.send("UNSUBSCRIBE", one)

        async def unsubscribed() -> bool:
            return int((await r.pubsub_numsub(one))[0][1]) == 0

        await until(unsubscribed, what="UNSUBSCRIBE done")
        await r.publish(one, b"not any more")
        await r.publish(two, b"still")

        async def second() -> bool:
            return messages(two) == [b"on two", b"still"]

        await until(second, what="both messages on the second channel")
        assert b"not any more" not in messages(one)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.close()


async def test_a_killed_link_raises_at_once_and_its_connection_goes_back_to_the_pool(
    r: aioredis.Redis, keys: Keys, redis_server_factory: Callable[[], RedisServer]
) -> None:
    server = redis_server_factory()
    own = aioredis.Redis.from_url(server.url)
    link = HiredisLink(own)
    try:
        await link.open([keys.channel(TOPIC)])
        task = asyncio.create_task(link.run(lambda replies: None))
        await wait_subscribed(own, keys.channel(TOPIC))
        await own.client_kill_filter(_type="pubsub")
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(task, 5)
        with pytest.raises(RedisConnectionError):
            await link.send("PING")
        await asyncio.wait_for(link.close(), 5)
        assert await own.ping()  # the pool still works
    finally:
        await link.close()
        await own.aclose()


async def test_killed_connection_is_a_gap_at_once_without_waiting_for_a_health_check(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    # A health check far away: only connection_lost can notice the kill in time.
    async with client(server.url, keys, health_check_interval=60.0) as c:
        await c.subscribe(TOPIC)
        await admin.set(keys.last(TOPIC), TICKER)
        await wait_subscribed(admin, keys.channel(TOPIC))
        events = c.events()
        await admin.client_kill_filter(_type="pubsub")
        async with asyncio.timeout(10):
            gap = await anext(events)
            assert isinstance(gap, Gap)
            assert gap.topics == (TOPIC,)
            refreshed = await anext(events)
            assert isinstance(refreshed, Event)
            assert refreshed.cached
            assert refreshed.payload == TICKER
            await wait_subscribed(admin, keys.channel(TOPIC))
            await admin.publish(keys.channel(TOPIC), b'{"live":1}')
            live = await anext(events)
        assert isinstance(live, Event)
        assert live.payload == b'{"live":1}'
        assert not live.cached
        assert c.reconnects == 1
    await admin.aclose()


async def test_resp3_connection_delivers_the_same_bytes(real_redis_url: str, keys: Keys) -> None:
    own = aioredis.Redis.from_url(real_redis_url, protocol=3)
    admin = aioredis.Redis.from_url(real_redis_url)
    try:
        async with FanoutClient(own, key_prefix=keys.prefix) as c:
            await c.subscribe(TOPIC)
            await wait_subscribed(admin, keys.channel(TOPIC))
            await admin.publish(keys.channel(TOPIC), TICKER)
            item = await asyncio.wait_for(anext(c.events()), 5)
            assert isinstance(item, Event)
            assert item.payload == TICKER
    finally:
        await own.aclose()
        await admin.aclose()


async def test_a_subscribe_refused_by_the_acl_is_an_error_reply_and_the_rest_flows(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    p = keys.prefix
    allowed = keys.channel(TOPIC)
    await admin.execute_command(
        "ACL", "SETUSER", "reader", "on", ">pw", "resetkeys", f"~{p}:*",
        "resetchannels", f"&{allowed}", f"&{keys.notices}", "+@all",
    )  # fmt: skip
    user = aioredis.Redis(port=server.port, username="reader", password="pw")
    link = HiredisLink(user)
    got: list[Any] = []
    try:
        await link.open([allowed])
        task = asyncio.create_task(link.run(got.extend))
        await wait_subscribed(admin, allowed)
        await link.send("SUBSCRIBE", keys.channel("ticker:KRW-ETH"))  # not for this user

        async def refused() -> bool:
            return any(isinstance(m, Exception) for m in got)

        await until(refused, what="the NOPERM error reply")
        await admin.publish(allowed, b"still here")

        async def arrived() -> bool:
            return [b"message", allowed.encode(), b"still here"] in got

        await until(arrived, what="the message after the refusal")
        assert not task.done()
        task.cancel()
    finally:
        await link.close()
        await user.aclose()
        await admin.aclose()


def _start_redis(
    args: list[str], listen: int, tmp: Path, ping: dict[str, Any]
) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(listen),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(**ping)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                probe.ping()
                return proc
            except (redis.ConnectionError, OSError):
                if proc.poll() is not None:
                    pytest.skip("this redis-server cannot start with these options")
                if time.monotonic() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.05)
    finally:
        probe.close()


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "redis.sock"
    proc = _start_redis(
        ["--unixsocket", str(path), "--unixsocketperm", "700"],
        free_port(),
        tmp_path,
        {"unix_socket_path": str(path)},
    )
    yield f"unix://{path}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    port = free_port()
    proc = _start_redis(
        [
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(tmp_path / "cert.pem"),
            "--tls-key-file",
            str(tmp_path / "key.pem"),
            "--tls-ca-cert-file",
            str(tmp_path / "ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
        0,
        tmp_path,
        {"port": port, "ssl": True, "ssl_ca_certs": str(tmp_path / "ca.pem")},
    )
    yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}", str(tmp_path)
    proc.terminate()
    proc.wait(10)


async def _round_trip(url: str, keys: Keys) -> None:
    """Events flow, and a killed pub/sub connection is a Gap, then events flow again."""
    admin = aioredis.Redis.from_url(url)
    try:
        async with client(url, keys, health_check_interval=60.0) as c:
            await c.subscribe(TOPIC)
            await wait_subscribed(admin, keys.channel(TOPIC))
            events = c.events()
            big = b'{"blob":"' + b"z" * 300_000 + b'"}'
            await admin.publish(keys.channel(TOPIC), TICKER)
            await admin.publish(keys.channel(TOPIC), big)
            async with asyncio.timeout(10):
                first, second = await anext(events), await anext(events)
                assert isinstance(first, Event)
                assert isinstance(second, Event)
                assert (first.payload, second.payload) == (TICKER, big)
                await admin.client_kill_filter(_type="pubsub")
                assert isinstance(await anext(events), Gap)
                await wait_subscribed(admin, keys.channel(TOPIC))
                await admin.publish(keys.channel(TOPIC), TICKER)
                again = await anext(events)
            assert isinstance(again, Event)
            assert again.payload == TICKER
    finally:
        await admin.aclose()


async def test_unix_socket(unix_redis: str, keys: Keys) -> None:
    await _round_trip(unix_redis, keys)


async def test_tls(tls_redis: tuple[str, str], keys: Keys) -> None:
    await _round_trip(tls_redis[0], keys)


def test_uvloop(real_redis_url: str, keys: Keys) -> None:
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_round_trip_shared(real_redis_url, keys))


async def _round_trip_shared(url: str, keys: Keys) -> None:
    """Events flow on the shared Redis (CLIENT KILL there would hit other subscribers)."""
    admin = aioredis.Redis.from_url(url)
    try:
        async with client(url, keys) as c:
            await c.subscribe(TOPIC)
            await wait_subscribed(admin, keys.channel(TOPIC))
            for i in range(50):
                await admin.publish(keys.channel(TOPIC), b"%d" % i)
            got: list[bytes] = []
            async with asyncio.timeout(10):
                async for batch in c.batches(max_items=7):
                    assert 1 <= len(batch) <= 7
                    got.extend(item.payload for item in batch if isinstance(item, Event))
                    if len(got) == 50:
                        break
            assert got == [b"%d" % i for i in range(50)]
    finally:
        await admin.aclose()


# -- the redis-py fallback ------------------------------------------------------------------------


async def test_the_redis_py_reader_still_delivers_and_reports_a_killed_connection(
    redis_server_factory: Callable[[], RedisServer], keys: Keys
) -> None:
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    async with client(server.url, keys, pubsub_reader="redis-py") as c:
        assert c._link_class is PubSubLink
        await c.subscribe(TOPIC)
        await wait_subscribed(admin, keys.channel(TOPIC))
        events = c.events()
        await admin.publish(keys.channel(TOPIC), TICKER)
        async with asyncio.timeout(10):
            item = await anext(events)
            assert isinstance(item, Event)
            assert item.payload == TICKER
            await admin.client_kill_filter(_type="pubsub")
            assert isinstance(await anext(events), Gap)
    await admin.aclose()


def test_pubsub_reader_is_checked(real_redis_url: str) -> None:
    with pytest.raises(ValueError, match="pubsub_reader"):
        FanoutClient(real_redis_url, pubsub_reader="fast")  # type: ignore[arg-type]
    assert FanoutClient(real_redis_url)._link_class is HiredisLink


# -- batches and the lazy Event -----------------------------------------------------------------


async def test_batches_keep_order_respect_the_limit_skip_unsubscribed_and_end_on_close(
    r: aioredis.Redis, real_redis_url: str, keys: Keys
) -> None:
    other = "ticker:KRW-ETH"
    async with client(real_redis_url, keys) as c:
        with pytest.raises(ValueError, match="max_items"):
            c.batches(0)
        await c.subscribe(TOPIC, other)
        await wait_subscribed(r, keys.channel(other))
        async with r.pipeline(transaction=False) as pipe:
            for i in range(40):
                pipe.publish(keys.channel(TOPIC if i % 2 else other), b"%d" % i)
            await pipe.execute()

        async def buffered() -> bool:
            return len(c._stream) == 40

        await until(buffered, what="40 buffered items")
        await c.unsubscribe(other)  # buffered events of it are not delivered any more
        batches = c.batches(max_items=8)
        got: list[Any] = []
        async with asyncio.timeout(5):
            while len(got) < 20:
                batch = await anext(batches)
                assert 1 <= len(batch) <= 8
                got.extend(batch)
        assert [item.payload for item in got] == [b"%d" % i for i in range(1, 40, 2)]
        assert all(item.topic == TOPIC for item in got)
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # never an empty batch
        await c.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("type_name", ["ticker", "trade", "orderbook", "candle", "myOrder"])
def test_a_lazy_event_equals_the_eagerly_decoded_one(type_name: str, codec: Any) -> None:
    line = sample_line(type_name)
    data = payload(line, codec)
    eager = decode_event(data)
    topic = parse_topic(
        f"{eager['type']}:{eager['code']}" if type_name != "myOrder" else "myOrder:*"
    )
    event = Event(str(topic), topic, data)
    assert event.data == eager
    assert repr(event.data) == repr(eager)  # the same Decimals, digit for digit
    assert event.typed == parse_event(eager)
    assert event.typed is event.typed  # built once
    assert event.data is event.data
    assert event.code == eager["code"]


@pytest.mark.parametrize("reader", ["hiredis", "redis-py"])
def test_blocking_client_takes_the_reader_too(real_redis_url: str, keys: Keys, reader: Any) -> None:
    admin = redis.Redis.from_url(real_redis_url)
    try:
        with BlockingClient(real_redis_url, key_prefix=keys.prefix, pubsub_reader=reader) as c:
            c.subscribe(TOPIC)
            deadline = time.monotonic() + 5
            while admin.pubsub_numsub(keys.channel(TOPIC))[0][1] < 1:
                assert time.monotonic() < deadline, "not subscribed"
                time.sleep(0.02)
            admin.publish(keys.channel(TOPIC), TICKER)
            item = next(iter(c.events(timeout=5)))
            assert isinstance(item, Event)
            assert item.payload == TICKER
    finally:
        admin.close()
