"""The collector's upstream transports, websockets (the default) and picows, held to the same
behaviour: frames of one read in order (fragmented, compressed or not), deflate negotiated or
not, protocol violations closing the socket, handshake refusals classified, and the collector's
upstream life (events published, reconnects with a gap notice, a stalled socket found by its
missing pong, a rate-limit error and close) over a real emulator and Redis on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from tests.collector.service_support import (
    Listener,
    running_collector,
    sent_messages,
    topics_of,
)
from tests.helpers import COMMAND, command_env, scaled, until
from upbit_fanout.collector.transport import (
    TRANSPORTS,
    ConnectOptions,
    HandshakeError,
    Transport,
    UpstreamSocket,
    load_transport,
)
from upbit_fanout.collector.transport_picows import CHUNK, PicowsSocket
from upbit_fanout.collector.upstream import classify_connect_error
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

WANTED = {"ticker:KRW-BTC", "trade:KRW-ETH"}

transports = pytest.mark.parametrize("transport", TRANSPORTS)


class Sink:
    """Collects what a socket hands over, with the size of every call."""

    def __init__(self, expected: int) -> None:
        self.got: list[bytes] = []
        self.calls: list[int] = []
        self.expected = expected
        self.complete = asyncio.Event()
        self.pongs = 0

    def __call__(self, batch: list[bytes]) -> None:
        self.calls.append(len(batch))
        self.got.extend(batch)
        if len(self.got) >= self.expected:
            self.complete.set()

    def pong(self) -> None:
        self.pongs += 1


async def _open(transport: str, url: str, sink: Sink, **options: object) -> UpstreamSocket:
    chosen: Transport = load_transport(transport)
    return await chosen.connect(url, ConnectOptions(**options), sink, sink.pong)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def reading(socket: UpstreamSocket) -> AsyncIterator[asyncio.Task[None]]:
    """The socket's read loop running, the socket closed on the way out."""
    task = asyncio.create_task(socket.read())
    try:
        yield task
    finally:
        await socket.close()
        async with asyncio.timeout(scaled(5)):
            await task


# -- the transport on its own, against websockets' own server ------------------------------------
DEFLATE: dict[str, ServerPerMessageDeflateFactory | None] = {
    "off": None,
    "takeover": ServerPerMessageDeflateFactory(),
    "no-takeover": ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, server_max_window_bits=10
    ),
}


@transports
@pytest.mark.parametrize("deflate", list(DEFLATE))
async def test_messages_arrive_whole_and_in_order_batched_per_read(
    transport: str, deflate: str
) -> None:
    sent = [(f'{{"n":{i},"pad":"' + "ab" * (i % 7) * 40 + '"}').encode() for i in range(60)]
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        for index, payload in enumerate(sent):
            if index in (10, 25, 26):  # fragmented messages: three frames each
                await ws.send([payload[:2], payload[2:40], payload[40:]])
            elif index == 30:
                await ws.send(payload.decode())  # a text frame
            else:
                await ws.send(payload)
        await ws.wait_closed()

    extension = DEFLATE[deflate]
    sink = Sink(len(sent))
    async with serve(
        handler,
        "127.0.0.1",
        0,
        extensions=[extension] if extension is not None else None,
        compression=None,
    ) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        socket = await _open(transport, url, sink)
        async with reading(socket):
            if isinstance(socket, PicowsSocket):  # deflate negotiated exactly when offered back
                assert (socket.listener.inflater is None) == (extension is None)
            go.set()
            async with asyncio.timeout(scaled(10)):
                await sink.complete.wait()
    assert sink.got == sent  # nothing lost, nothing overtaken, fragments joined, all inflated
    assert max(sink.calls) > 1  # frames written together are handed over together


@transports
async def test_an_uncompressed_socket_when_compression_is_not_offered(transport: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b'{"a":1}')
        await ws.wait_closed()

    sink = Sink(1)
    async with serve(
        handler, "127.0.0.1", 0, extensions=[ServerPerMessageDeflateFactory()], compression=None
    ) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        socket = await _open(transport, url, sink, compression=False)
        async with reading(socket):
            async with asyncio.timeout(scaled(10)):
                await sink.complete.wait()
            answers = [c.response and c.response.headers.get("Sec-WebSocket-Extensions")
                       for c in server.connections]  # fmt: skip
            assert answers == [None]
    assert sink.got == [b'{"a":1}']


@contextlib.asynccontextmanager
async def raw_server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A loopback server that runs ``answer`` for every connection; yields its ws:// URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await answer(reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/websocket/v1"
    finally:
        server.close()
        await server.wait_closed()


def _frame(first: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((first, len(payload))) + payload


def _upgrade(extensions: str | None = None) -> Callable[[bytes], bytes]:
    def answer(head: bytes) -> bytes:
        found = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head)
        assert found is not None
        guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(found.group(1) + guid).digest())
        extra = f"Sec-WebSocket-Extensions: {extensions}\r\n".encode() if extensions else b""
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n"
        )

    return answer


VIOLATIONS = {
    # a compressed frame on a socket that negotiated no compression
    "rsv1-without-deflate": _frame(0xC2, b"\x00\x01"),
    "rsv2": _frame(0xA2, b'{"b":2}'),
    "continuation-of-nothing": _frame(0x80, b'{"b":2}'),
    "new-message-inside-a-fragmented-one": _frame(0x02, b'{"b"') + _frame(0x82, b'{"c":3}'),
}


@transports
@pytest.mark.parametrize("violation", list(VIOLATIONS))
async def test_a_protocol_violation_closes_the_socket_after_what_came_before(
    transport: str, violation: str
) -> None:
    closed = asyncio.Event()
    answered: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_upgrade()(await reader.readuntil(b"\r\n\r\n")))
        writer.write(_frame(0x82, b'{"a":1}') + VIOLATIONS[violation] + _frame(0x82, b'{"d":4}'))
        await writer.drain()
        answered.append(await reader.read(4096))  # the client's close frame
        closed.set()  # and the server closes the TCP connection, as a server does

    sink = Sink(1)
    async with raw_server(answer) as url:
        socket = await _open(transport, url, sink)
        task = asyncio.create_task(socket.read())
        async with asyncio.timeout(scaled(10)):
            await closed.wait()  # the client closed the socket, on its own
            await task
        await socket.close()
    assert sink.got == [b'{"a":1}']  # what came before, never what came after
    assert answered[0][:1] == b"\x88"  # a close frame, not a dropped socket
    assert socket.close_code is not None


@transports
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("401 Unauthorized", "auth"),
        ("429 Too Many Requests", "rate_limited"),
        ("418 I'm a teapot", "rate_limited"),
        ("503 Service Unavailable", "unavailable"),
    ],
)
async def test_a_refused_handshake_is_classified_by_its_status(
    transport: str, status: str, kind: str
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()

    async with raw_server(answer) as url:
        with pytest.raises((HandshakeError, InvalidStatus)) as caught:
            await _open(transport, url, Sink(1))
    found, text = classify_connect_error(caught.value)
    assert found == kind
    assert status.split(maxsplit=1)[0] in text


@pytest.mark.parametrize(
    "answer",
    [
        "x-webkit-deflate-frame",  # not offered
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate, permessage-deflate",
    ],
)
async def test_picows_refuses_an_extension_answer_it_cannot_honour(answer: str) -> None:
    async def serve_it(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_upgrade(answer)(await reader.readuntil(b"\r\n\r\n")))
        await writer.drain()
        await reader.read(4096)

    async with raw_server(serve_it) as url:
        with pytest.raises(HandshakeError) as caught:
            await _open("picows", url, Sink(1))
    assert classify_connect_error(caught.value)[0] == "protocol"


async def test_the_private_streams_token_never_reaches_picows_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heard.append(head)
        writer.write(_upgrade()(head))
        await writer.drain()
        await reader.read(4096)

    caplog.set_level(1, logger="picows")
    async with raw_server(answer) as url:
        socket = await _open("picows", url, Sink(1), headers={"Authorization": "Bearer s3cr3t"})
        await socket.close()
    assert b"Authorization: Bearer s3cr3t" in heard[0]  # sent to the server ...
    assert b"Origin" not in heard[0]  # (no Origin: docs/upbit-protocol.md §6)
    assert any("Send upgrade request" in r.getMessage() for r in caplog.records)
    assert "s3cr3t" not in caplog.text  # ... and never logged


# -- the collector over each transport ------------------------------------------------------------
pytestmark = pytest.mark.emulator(seed=3, rate=300)


@pytest.fixture
async def wanting(r: aioredis.Redis, keys: Keys) -> aioredis.Redis:
    """The shared real-Redis fixture, with a client "bot" wanting WANTED."""
    await r.sadd(keys.intents("bot"), *WANTED)
    await r.expire(keys.intents("bot"), 60)
    return r


@transports
@pytest.mark.usefixtures("real_redis_url", "wanting")
async def test_a_dropped_connection_reconnects_resends_and_announces_a_gap(
    transport: str, real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    btc = keys.channel("ticker:KRW-BTC")
    async with (
        Listener(real_redis_url, [keys.notices, btc]) as listener,
        running_collector(real_redis_url, keys, emu.public_url, upstream_transport=transport) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        assert c.public.transport.name == transport
        await listener.wait(lambda: listener.messages[btc])
        before = len(sent_messages(emu))
        await emu.drop_all()
        await listener.wait(
            lambda: any(n["event"] == "gap" for n in listener.notices(keys.notices))
        )
        await until(lambda: len(sent_messages(emu)) > before)
        assert topics_of(sent_messages(emu)[-1]) == WANTED
        lost = [n for n in listener.notices(keys.notices) if n["event"] == "disconnected"]
        assert "close code 1006" in lost[0]["reason"]
        seen = len(listener.messages[btc])
        await listener.wait(lambda: len(listener.messages[btc]) > seen)
        assert c.counters["reconnects"] == 1


@transports
@pytest.mark.usefixtures("real_redis_url", "wanting")
async def test_a_stalled_upstream_is_found_by_its_missing_pong(
    transport: str, real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    async with (
        Listener(real_redis_url, [keys.notices]) as listener,
        running_collector(
            real_redis_url,
            keys,
            emu.public_url,
            ping_interval=0.2,
            ping_timeout=0.3,
            upstream_transport=transport,
        ) as c,
    ):
        await c.wait_subscribed(lambda union: union == WANTED)
        await until(lambda: c.status.snapshot().get("upstream_alive_at"))  # pongs are seen
        stalled_at = time.monotonic()
        emu.stall(1.5)
        await listener.wait(
            lambda: any(n["event"] == "disconnected" for n in listener.notices(keys.notices))
        )
        assert time.monotonic() - stalled_at < scaled(1.5)  # the pong timeout, not the stall's end


@transports
@pytest.mark.emulator(seed=3, rate=300, messages_per_s=1, error_close_delay=0.05)
@pytest.mark.usefixtures("real_redis_url", "wanting")
async def test_a_rate_limit_error_and_close_are_read_in_order(
    transport: str, real_redis_url: str, keys: Keys, emu: Emulator
) -> None:
    async with (
        Listener(real_redis_url, [keys.notices]) as listener,
        running_collector(
            real_redis_url,
            keys,
            emu.public_url,
            verify_delay=0.0,  # a LIST_SUBSCRIPTIONS right after the subscribe: 2 messages in 1 s
            upstream_transport=transport,
        ),
    ):

        def events() -> list[str]:
            return [str(n["event"]) for n in listener.notices(keys.notices)]

        await listener.wait(lambda: "disconnected" in events())
        notices = listener.notices(keys.notices)
        error = next(n for n in notices if n["event"] == "error")
        assert error["name"] == "TOO_MANY_REQUESTS"
        lost = next(n for n in notices if n["event"] == "disconnected")
        assert "close code 1000" in lost["reason"]  # Upbit's close after its error frame
        assert events().index("error") < events().index("disconnected")


@pytest.mark.parametrize(
    "case",  # (transport, compression, event loop, read coalescing)
    [
        ("websockets", "deflate", "asyncio", "0"),
        ("websockets", None, "asyncio", "0"),
        ("picows", "deflate", "asyncio", "0"),
        ("picows", None, "asyncio", "0"),
        ("picows", "deflate", "uvloop", "0"),
        ("websockets", "deflate", "asyncio", "0.001"),
        ("picows", "deflate", "uvloop", "0.001"),
    ],
)
async def test_the_collector_command_over_wss_with_each_transport(
    case: tuple[str, str | None, str, str], real_redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """The real command follows a ``wss://`` upstream trusted through ``SSL_CERT_FILE`` (as it
    would trust Upbit's), with each transport, deflate on and off, read coalescing on and off,
    and reports the upstream."""
    transport, compression, loop, read_coalesce = case
    if not COMMAND.exists():
        pytest.skip("the upbit-fanout command is not installed")
    r = aioredis.Redis.from_url(real_redis_url)
    try:
        async with Emulator(port=0, seed=4, rate=200, tls=True, compression=compression) as emu:
            assert emu.certificates is not None
            ca = emu.certificates.write_ca(tmp_path / "ca.pem")
            env = command_env(
                key_prefix=keys.prefix,
                sweep_interval="0.3",
                upstream_transport=transport,
                event_loop=loop,
                read_coalesce=read_coalesce,
            )
            env["SSL_CERT_FILE"] = str(ca)
            await r.sadd(keys.intents("tls"), "ticker:KRW-BTC")
            await r.expire(keys.intents("tls"), 30)
            collector = await asyncio.create_subprocess_exec(
                str(COMMAND), "collector", "--redis-url", real_redis_url,
                "--upstream", emu.public_url,
                env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                async with asyncio.timeout(scaled(20)):
                    while await r.get(keys.last("ticker:KRW-BTC")) is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                negotiated = [not c.raw for c in emu.connections]  # raw: no deflate
                assert (await r.hget(keys.status, "upstream")) == emu.public_url.encode()
            finally:
                collector.terminate()
                _, stderr = await asyncio.wait_for(collector.communicate(), 15)
            assert collector.returncode == 0
            assert b"Traceback" not in stderr, stderr.decode()
            assert negotiated == [compression is not None]
    finally:
        async for key in r.scan_iter(match=f"{keys.prefix}:*"):
            await r.delete(key)
        await r.aclose()


@pytest.mark.parametrize(
    ("package", "variable", "value"),
    [("picows", "UPSTREAM_TRANSPORT", "picows"), ("uvloop", "EVENT_LOOP", "uvloop")],
)
def test_a_fast_package_chosen_but_not_installed_is_one_line_at_start(
    package: str, variable: str, value: str, tmp_path: Path
) -> None:
    if not COMMAND.exists():
        pytest.skip("the upbit-fanout command is not installed")
    hidden = tmp_path / "hidden" / package
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = command_env(
        **{variable.lower(): value}, redis_url="redis://127.0.0.1:1/0"
    )  # never reached
    env["PYTHONPATH"] = str(hidden.parent)
    done = subprocess.run(
        [str(COMMAND), "collector"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("upbit-fanout collector: ")
    assert f"needs the {package} package (pip install 'upbit-fanout[fast]')" in lines[0]


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="websockets, picows"):
        load_transport("aiohttp")


async def test_picows_hands_a_big_read_over_in_chunks_between_other_tasks() -> None:
    sent = [b'{"n":%d}' % i for i in range(40_000)]
    wire = b"".join(_frame(0x82, payload) for payload in sent)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_upgrade()(await reader.readuntil(b"\r\n\r\n")))
        writer.write(wire)  # far more than one read of picows' first buffers
        await writer.drain()
        await reader.read(4096)

    turns = 0
    seen_at: list[int] = []  # the other task's turns at each hand-over

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    class Counting(Sink):
        def __call__(self, batch: list[bytes]) -> None:
            seen_at.append(turns)
            super().__call__(batch)

    sink = Counting(len(sent))
    async with raw_server(answer) as url:
        ticker = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        try:
            socket = await _open("picows", url, sink)
            async with reading(socket), asyncio.timeout(scaled(20)):
                await sink.complete.wait()
        finally:
            ticker.cancel()
            await asyncio.wait([ticker])
    assert sink.got == sent  # in order, nothing lost
    assert max(sink.calls) <= CHUNK
    big = [i for i, size in enumerate(sink.calls) if size == CHUNK]
    assert len(big) > 10  # reads grew beyond one chunk ...
    assert all(seen_at[i] > seen_at[i - 1] for i in big if i > 0)  # ... others ran between
