"""The collector's lean read path: every complete frame of one socket read in one call, in
order, fragmented messages through websockets' own queue without overtaking. A real websockets
server on loopback writes the frames."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from upbit_fanout.collector.transport_websockets import _KeepAliveConnection


async def test_frames_of_one_read_come_as_one_batch_in_order_with_fragments_in_between() -> None:
    sent = [f'{{"n":{i}}}'.encode() for i in range(40)]
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        for index, payload in enumerate(sent):
            if index in (10, 25):  # a fragmented message: three frames
                await ws.send([payload[:2], payload[2:4], payload[4:]])
            elif index == 30:
                await ws.send(payload.decode())  # a text frame
            else:
                await ws.send(payload)
        await ws.wait_closed()

    got: list[bytes] = []
    batches: list[int] = []
    complete = asyncio.Event()

    def on_frames(batch: list[bytes]) -> None:
        batches.append(len(batch))
        got.extend(batch)
        if len(got) >= len(sent):
            complete.set()

    async with (
        serve(handler, "127.0.0.1", 0) as server,
        connect(
            f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}",
            create_connection=_KeepAliveConnection,
        ) as ws,
    ):
        assert isinstance(ws, _KeepAliveConnection)
        ws.on_frames = on_frames

        async def reader() -> None:
            with contextlib.suppress(Exception):
                async for data in ws:
                    ws.message_taken()
                    got.append(data if isinstance(data, bytes) else data.encode())
                    if len(got) >= len(sent):
                        complete.set()

        task = asyncio.create_task(reader())
        go.set()
        async with asyncio.timeout(10):
            await complete.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert got == sent  # nothing lost, nothing overtaken, whichever path each frame took
    assert sum(batches) < len(sent)  # the fragmented ones went through recv()
    assert max(batches) > 1  # frames written together are handled together


async def test_without_a_sink_it_is_an_ordinary_websockets_connection() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b'{"a":1}')
        await ws.send([b'{"b"', b":2}"])
        await ws.wait_closed()

    async with (
        serve(handler, "127.0.0.1", 0) as server,
        connect(
            f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}",
            create_connection=_KeepAliveConnection,
        ) as ws,
    ):
        assert await ws.recv() == b'{"a":1}'
        assert await ws.recv() == b'{"b":2}'
