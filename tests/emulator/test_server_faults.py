"""Fault injection (drop, stall, malformed frame, refused handshakes), from Python and over the
admin HTTP paths."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.emulator.wsutil import (
    client,
    drain,
    http_get,
    http_post,
    recv_json,
    recv_raw,
    recv_until,
    request,
    silent,
    started,
)


async def test_drop_all_is_an_abnormal_close() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}))
        await recv_json(ws)
        assert await emu.drop_all() == 1
        with pytest.raises(ConnectionClosedError) as caught:
            await drain(ws)
        assert caught.value.rcvd is None
        assert ws.close_code == 1006
        await emu.wait_connections(0)
        assert emu.counters["drops"] == 1


async def test_stall_sends_nothing_and_leaves_pings_unanswered_until_resume() -> None:
    async with started(rate=3000) as emu, client(emu.public_url, ping_interval=None) as ws:
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"]}))
        await recv_json(ws)
        emu.stall()
        assert emu.state()["stalled"] is True
        # frames already on the wire may still arrive; then silence
        while not await silent(ws, 0.2):
            pass
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pong), 0.3)
        emu.resume()
        await asyncio.wait_for(pong, 2)  # answered once the server runs again
        frame = await recv_json(ws)
        assert frame["type"] == "trade"


async def test_stall_with_a_duration_resumes_by_itself() -> None:
    async with started() as emu, client(emu.public_url, ping_interval=None) as ws:
        emu.stall(0.2)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 2)
        assert not emu.stalled


async def test_a_handshake_waits_during_a_stall() -> None:
    async with started() as emu:
        emu.stall()
        with pytest.raises(TimeoutError):
            async with client(emu.public_url, open_timeout=0.3):
                pass
        emu.resume()
        async with client(emu.public_url) as ws:
            await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}))
            assert (await recv_json(ws))["stream_type"] == "SNAPSHOT"


async def test_malformed_frame_arrives() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        assert await emu.send_malformed(b"\x00garbage{") == 1
        assert await recv_raw(ws) == b"\x00garbage{"
        await emu.send_malformed()
        assert await recv_raw(ws) == b'\x00{"type":"tick'  # the default: truncated JSON


async def test_refused_handshakes_then_accepted_again() -> None:
    async with started() as emu:
        emu.refuse_connections(0.3)
        with pytest.raises(InvalidStatus) as caught:
            async with client(emu.public_url):
                pass
        assert caught.value.response.status_code == 503
        await asyncio.sleep(0.35)
        async with client(emu.public_url) as ws:
            await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}))
            assert (await recv_json(ws))["code"] == "KRW-BTC"
        assert emu.counters["refused_connections"] == 1


async def test_admin_paths() -> None:
    async with started(rate=3000) as emu, client(emu.public_url, ping_interval=None) as ws:
        base = emu.http_url + "/_emulator/"
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"]}, ticket="admin"))
        await recv_json(ws)

        # State-changing paths take POST only; the read-only ones GET only.
        for path in (
            "drop",
            "stall?seconds=5",
            "resume",
            "malformed",
            "refuse?seconds=5",
            "inject?frame=x",
            "order?code=KRW-BTC",
            "cancel?uuid=x",
        ):
            status, body, head = await http_get(base + path)
            assert status == 405, path
            assert "Allow: POST" in head
        for path in ("state", "received"):
            status, body, head = await http_post(base + path)
            assert status == 405, path
            assert "Allow: GET" in head
        assert not emu.stalled
        assert emu.counters["drops"] == 0
        assert emu.counters["malformed_sent"] == 0

        status, body, head = await http_get(base + "state")
        state = json.loads(body)
        assert status == 200
        assert "application/json" in head
        assert state["mode"] == "simulated"
        assert state["stalled"] is False
        (conn,) = state["connections"]
        assert conn["ticket"] == "admin"
        assert conn["format"] == "DEFAULT"
        assert conn["subscription"] == [{"type": "trade", "codes": ["KRW-BTC"]}]
        assert state["counters"]["subscriptions"] == 1

        status, body, _ = await http_post(base + "stall?seconds=5")
        assert status == 200
        assert emu.stalled
        status, _, _ = await http_post(base + "resume")
        assert status == 200
        assert not emu.stalled

        frame = quote(json.dumps({"error": {"name": "X", "message": "m"}}))
        status, body, _ = await http_post(base + "inject?frame=" + frame)
        assert json.loads(body) == {"delivered": 1}
        await recv_until(ws, lambda f: "error" in f)

        status, body, _ = await http_post(base + "malformed")
        assert json.loads(body) == {"sent": 1}

        status, body, _ = await http_get(base + "received")
        assert json.loads(body)[0]["raw"] == request(
            {"type": "trade", "codes": ["KRW-BTC"]}, ticket="admin"
        )

        status, body, _ = await http_post(base + "refuse?seconds=5")
        assert json.loads(body) == {"refusing": True}
        with pytest.raises(InvalidStatus):
            async with client(emu.public_url):
                pass
        await http_post(base + "refuse?seconds=0")

        status, body, _ = await http_post(base + "drop")
        assert json.loads(body) == {"dropped": 1}
        with pytest.raises(ConnectionClosedError):
            await drain(ws)

        status, _, _ = await http_post(base + "nope")
        assert status == 404
        status, _, _ = await http_post(base + "stall?seconds=abc")
        assert status == 400


async def test_admin_paths_can_be_disabled() -> None:
    async with started(admin=False) as emu:
        status, _, _ = await http_get(emu.http_url + "/_emulator/state")
        assert status == 404


async def test_drop_code_applies_the_next_request_in_part() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        status, body, _ = await http_post(f"{emu.http_url}/_emulator/drop_code?code=KRW-ETH")
        assert status == 200
        assert json.loads(body) == {"armed": True, "code": "KRW-ETH"}
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]}))
        first = await recv_json(ws)
        assert first["code"] == "KRW-BTC"
        await ws.send(json.dumps([{"ticket": "t"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        listing = await recv_until(ws, lambda f: "method" in f)
        assert listing[-1]["result"] == [{"type": "ticker", "codes": ["KRW-BTC"]}]
        assert emu.counters["codes_dropped"] == 1
        assert emu.connections[0].snapshots_sent == 1  # none for the dropped code
        state = emu.state()
        assert state["connections"][0]["snapshots_sent"] == 1

        # armed once: the next request is applied whole
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]}))
        await ws.send(json.dumps([{"ticket": "t"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        listing = await recv_until(ws, lambda f: "method" in f)
        assert listing[-1]["result"] == [{"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]}]
        assert emu.connections[0].snapshots_sent == 3


async def test_realtime_only_objects_get_no_snapshot() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        await ws.send(
            request(
                {"type": "ticker", "codes": ["KRW-BTC"], "is_only_realtime": True},
                {"type": "ticker", "codes": ["KRW-ETH"]},
            )
        )
        snapshot = await recv_until(ws, lambda f: f.get("stream_type") == "SNAPSHOT")
        assert snapshot[-1]["code"] == "KRW-ETH"
        await asyncio.sleep(0.2)
        assert emu.connections[0].snapshots_sent == 1
