"""The public endpoint over real loopback WebSockets: requests, formats, errors, keep-alive."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect as sync_connect

from tests.emulator.wsutil import (
    client,
    http_get,
    recv_json,
    recv_raw,
    recv_until,
    request,
    silent,
    started,
)
from tests.helpers import scaled
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.upbit_fields import to_default


def is_snapshot(code: str, type_: str | None = None) -> Any:
    def check(frame: Any) -> bool:
        obj = frame[0] if isinstance(frame, list) else frame
        return bool(
            obj.get("stream_type", obj.get("st")) == "SNAPSHOT"
            and obj.get("code", obj.get("cd")) == code
            and (type_ is None or obj.get("type", obj.get("ty")) == type_)
        )

    return check


async def test_snapshot_first_then_realtime_in_binary_frames() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}))
        first = await recv_json(ws)
        assert first["type"] == "ticker"
        assert first["code"] == "KRW-BTC"
        assert first["stream_type"] == "SNAPSHOT"
        for _ in range(3):
            frame = await recv_json(ws)
            assert (frame["type"], frame["code"], frame["stream_type"]) == (
                "ticker",
                "KRW-BTC",
                "REALTIME",
            )


async def test_binary_request_frames_are_accepted() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "trade", "codes": ["KRW-ETH"]}).encode())
        frame = await recv_json(ws)
        assert (frame["type"], frame["code"]) == ("trade", "KRW-ETH")


@pytest.mark.parametrize(
    ("message", "name"),
    [
        ("not json", "WRONG_FORMAT"),
        ('{"ticket":"t","type":"ticker"}', "WRONG_FORMAT"),
        ('[{"type":"ticker","codes":["KRW-BTC"]}]', "NO_TICKET"),
        ('[{"ticket":"t"}]', "NO_TYPE"),
        ('[{"ticket":"t"},{"type":"ticker"}]', "NO_CODES"),
        ('[{"ticket":"t"},{"type":"ticker","codes":[]}]', "NO_CODES"),
        ('[{"ticket":"t"},{"type":"nope","codes":["KRW-BTC"]}]', "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"trade","codes":["KRW-A"],"isOnlyRealtime":1}]', "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"trade","codes":["KRW-BTC"]},{"format":"CSV"}]', "INVALID_PARAM"),
        ('[{"ticket":"t"},{"type":"myAsset"}]', "INVALID_PARAM"),
    ],
)  # fmt: skip
async def test_every_error_is_a_frame_then_close_1000(message: str, name: str) -> None:
    async with started(error_close_delay=0.1) as emu, client(emu.public_url) as ws:
        await ws.send(message)
        sent = time.monotonic()
        frame = await recv_json(ws)
        assert list(frame) == ["error"]
        assert frame["error"]["name"] == name
        assert frame["error"]["message"]
        with pytest.raises(ConnectionClosedOK):
            await recv_raw(ws)
        assert ws.close_code == 1000
        assert time.monotonic() - sent >= 0.09  # the short delay Upbit leaves (~150 ms)
        assert emu.received[-1].error == name
        assert emu.counters[f"error:{name}"] == 1


async def test_an_error_ends_the_running_streams_too() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"]}))
        await recv_json(ws)
        await ws.send("oops")
        frames = await recv_until(ws, lambda f: "error" in f)
        assert frames[-1]["error"]["name"] == "WRONG_FORMAT"
        with pytest.raises(ConnectionClosedOK):
            await recv_raw(ws)  # nothing but the close after the error


async def test_new_request_replaces_the_whole_subscription() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"]}))
        await recv_until(ws, lambda f: f["stream_type"] == "REALTIME")
        await ws.send(request({"type": "ticker", "codes": ["KRW-ETH"]}, ticket="second"))
        await recv_until(ws, is_snapshot("KRW-ETH", "ticker"))
        after = [await recv_json(ws) for _ in range(20)]
        assert {(f["type"], f["code"]) for f in after} == {("ticker", "KRW-ETH")}
        assert emu.subscriptions()[emu.connections[0].id] is not None


async def test_snapshots_again_on_every_request() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        for ticket in ("one", "two"):
            await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}, ticket=ticket))
            await recv_until(ws, is_snapshot("KRW-BTC"))


async def test_depth_suffixes_and_codes_without_suffix() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        codes = ["KRW-BTC.5", "KRW-ETH.15", "KRW-XRP.20", "KRW-SOL.1", "KRW-DOGE"]
        await ws.send(request({"type": "orderbook", "codes": codes}))
        snapshots = [await recv_json(ws) for _ in codes]
        units = {s["code"]: len(s["orderbook_units"]) for s in snapshots}
        assert units == {"KRW-BTC": 5, "KRW-ETH": 15, "KRW-XRP": 30, "KRW-SOL": 1, "KRW-DOGE": 30}
        for snap in snapshots:
            total = sum(float(u["ask_size"]) for u in snap["orderbook_units"])
            assert snap["total_ask_size"] == pytest.approx(total)
        realtime = await recv_until(
            ws, lambda f: f["code"] == "KRW-BTC" and f["stream_type"] == "REALTIME"
        )
        assert len(realtime[-1]["orderbook_units"]) == 5
        assert all("." not in f["code"] for f in realtime)


async def test_same_code_at_two_depths_is_served_at_both() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(
            request(
                {"type": "orderbook", "codes": ["KRW-BTC.5"]},
                {"type": "orderbook", "codes": ["KRW-BTC.15"]},
            )
        )
        depths = []
        for _ in range(2):
            frame = await recv_json(ws)
            depths.append((frame["stream_type"], len(frame["orderbook_units"])))
        assert depths == [("SNAPSHOT", 5), ("SNAPSHOT", 15)]
        seen: set[int] = set()
        while len(seen) < 2:
            frame = await recv_json(ws)
            seen.add(len(frame["orderbook_units"]))
        assert seen == {5, 15}


async def test_level_on_krw_only() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(
            request({"type": "orderbook", "codes": ["KRW-BTC.5", "USDT-BTC"], "level": 100000})
        )
        snap = await recv_json(ws)
        assert (snap["code"], snap["level"]) == ("KRW-BTC", 100000)
        prices = [u["ask_price"] for u in snap["orderbook_units"] if u["ask_price"]]
        assert prices  # all() of nothing would pass
        assert all(p % 100000 == 0 for p in prices)
        frames = [await recv_json(ws) for _ in range(10)]
        assert {f["code"] for f in frames} == {"KRW-BTC"}  # USDT-BTC with a level: nothing


@pytest.mark.parametrize("fmt", ["DEFAULT", "SIMPLE", "JSON_LIST", "SIMPLE_LIST"])
async def test_all_four_formats(fmt: str) -> None:
    simple = fmt.startswith("SIMPLE")
    listed = fmt.endswith("LIST")
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(
            request(
                {"type": "ticker", "codes": ["KRW-BTC"]},
                {"type": "orderbook", "codes": ["KRW-BTC.5"]},
                fmt=fmt,
            )
        )
        for _ in range(6):
            frame = await recv_json(ws)
            assert isinstance(frame, list) is listed
            obj = frame[0] if listed else frame
            if listed:
                assert len(frame) == 1
            if simple:
                assert {"ty", "cd", "st", "tms"} <= obj.keys()
                assert "type" not in obj
                assert "code" not in obj
                if obj["ty"] == "orderbook":
                    assert set(obj["obu"][0]) == {"ap", "bp", "as", "bs"}
                    assert {"tas", "tbs", "lv"} <= obj.keys()
                else:
                    assert {"tp", "scr", "atv24h", "tdt"} <= obj.keys()
            else:
                assert {"type", "code", "stream_type", "timestamp"} <= obj.keys()
                if obj["type"] == "orderbook":
                    assert set(obj["orderbook_units"][0]) == {
                        "ask_price",
                        "bid_price",
                        "ask_size",
                        "bid_size",
                    }


async def test_a_later_format_switches_the_running_streams() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"]}))
        assert "type" in await recv_json(ws)
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"]}, fmt="SIMPLE"))
        frames = await recv_until(ws, lambda f: "ty" in f)
        assert frames[-1]["st"] == "SNAPSHOT"
        for _ in range(5):
            assert "ty" in await recv_json(ws)


@pytest.mark.parametrize("spelling", ["is_only_snapshot", "isOnlySnapshot"])
async def test_only_snapshot(spelling: str) -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"], spelling: True}))
        frames = [await recv_json(ws) for _ in range(2)]
        assert [(f["code"], f["stream_type"]) for f in frames] == [
            ("KRW-BTC", "SNAPSHOT"),
            ("KRW-ETH", "SNAPSHOT"),
        ]
        assert await silent(ws, 0.3)


@pytest.mark.parametrize("spelling", ["is_only_realtime", "isOnlyRealtime"])
async def test_only_realtime(spelling: str) -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "trade", "codes": ["KRW-BTC"], spelling: True}))
        for _ in range(5):
            assert (await recv_json(ws))["stream_type"] == "REALTIME"


async def test_unknown_and_lower_case_codes_are_ignored_without_error() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "ticker", "codes": ["krw-btc", "KRW-NOPE", "KRW-ETH"]}))
        frames = [await recv_json(ws) for _ in range(10)]
        assert {f["code"] for f in frames} == {"KRW-ETH"}
        await ws.send(request({"type": "ticker", "codes": ["KRW-NOPE"]}))
        await ws.send(json.dumps([{"ticket": "l"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        # frames already in flight may arrive before the answer; none after it
        answer = await recv_until(ws, lambda f: "method" in f)
        assert answer[-1]["result"] == [{"type": "ticker", "codes": ["KRW-NOPE"]}]
        assert await silent(ws, 0.3)


async def test_list_subscriptions() -> None:
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(json.dumps([{"ticket": "first"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        assert await recv_json(ws) == {
            "method": "LIST_SUBSCRIPTIONS",
            "result": [],
            "ticket": "first",
        }
        await ws.send(
            request(
                {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"], "is_only_snapshot": True},
                {"type": "orderbook", "codes": ["KRW-BTC", "KRW-ETH"]},
                ticket="unique uuid",
            )
        )
        await ws.send(json.dumps([{"ticket": "unique uuid"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        answer = (await recv_until(ws, lambda f: "method" in f))[-1]
        # the shape of upbit-samples/list_subscriptions.jsonl line 1, exactly
        assert answer == {
            "method": "LIST_SUBSCRIPTIONS",
            "result": [
                {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
                {"type": "orderbook", "codes": ["KRW-BTC", "KRW-ETH"], "level": 0},
            ],
            "ticket": "unique uuid",
        }
        # the subscription is unchanged: orderbook frames keep coming
        frame = await recv_json(ws)
        assert frame["type"] == "orderbook"
        # a format object in the LIST request switches the connection (docs/upbit-protocol.md §2.7)
        await ws.send(
            json.dumps([{"ticket": "s"}, {"method": "LIST_SUBSCRIPTIONS"}, {"format": "SIMPLE"}])
        )
        simple = (await recv_until(ws, lambda f: "mthd" in f))[-1]
        assert simple["rslt"][1] == {"ty": "orderbook", "cds": ["KRW-BTC", "KRW-ETH"], "lv": 0}
        assert simple["tckt"] == "s"
        assert "ty" in await recv_json(ws)


async def test_list_subscriptions_counts_against_the_message_limit() -> None:
    async with started(messages_per_s=2) as emu, client(emu.public_url) as ws:
        listing = json.dumps([{"ticket": "l"}, {"method": "LIST_SUBSCRIPTIONS"}])
        await ws.send(listing)
        await ws.send(listing)
        await ws.send(listing)
        frames = [await recv_json(ws) for _ in range(3)]
        assert frames[2] == {"error": {"name": "TOO_MANY_REQUESTS", "message": "Too Many Requests"}}
        with pytest.raises(ConnectionClosedOK):
            await recv_raw(ws)
        assert emu.counters["rate_limited_messages"] == 1


async def test_message_rate_limit_error_then_close() -> None:
    async with started(messages_per_s=5, messages_per_min=100) as emu, client(emu.public_url) as ws:
        sub = request({"type": "ticker", "codes": ["KRW-NOPE"]})
        for _ in range(5):
            await ws.send(sub)
        await ws.send("PING")  # CHOICE: a text PING does not count
        await ws.send(sub)
        frame = await recv_until(ws, lambda f: "error" in f)
        assert frame[-1]["error"]["name"] == "TOO_MANY_REQUESTS"
        with pytest.raises(ConnectionClosedOK):
            await recv_raw(ws)
        assert [r.error for r in emu.received] == [None] * 6 + ["TOO_MANY_REQUESTS"]


async def test_connect_rate_limit_gives_http_429() -> None:
    async with started(connect_limit_per_s=2) as emu:
        async with client(emu.public_url), client(emu.public_url):
            with pytest.raises(InvalidStatus) as caught:
                async with client(emu.public_url):
                    pass
            response = caught.value.response
            assert response.status_code == 429
            assert json.loads(response.body) == {
                "error": {"name": "TOO_MANY_REQUESTS", "message": "Too Many Requests"}
            }
        assert emu.counters["rate_limited_connects"] == 1


async def test_text_ping_starts_status_up_every_interval() -> None:
    async with started(status_interval=0.05) as emu, client(emu.public_url) as ws:
        assert await silent(ws, 0.15)  # nothing before the PING
        await ws.send("PING")
        started_at = time.monotonic()
        for _ in range(3):
            assert await recv_raw(ws) == b'{"status":"UP"}'
        assert time.monotonic() - started_at >= 0.09


async def test_idle_connection_is_aborted_without_close_frame() -> None:
    async with started(idle_timeout=0.3) as emu, client(emu.public_url, ping_interval=None) as ws:
        opened = time.monotonic()
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(ws.recv(), 3)
        assert caught.value.rcvd is None  # no close frame
        assert ws.close_code == 1006
        assert 0.25 < time.monotonic() - opened < scaled(2)
        assert emu.counters["idle_closes"] == 1


async def test_protocol_pings_are_answered_and_keep_the_socket_alive() -> None:
    async with started(idle_timeout=0.4) as emu, client(emu.public_url, ping_interval=None) as ws:
        for _ in range(8):  # 0.8 s, twice the idle timeout
            waiter = await ws.ping()
            await asyncio.wait_for(waiter, 1)
            await asyncio.sleep(0.1)
        assert emu.counters["idle_closes"] == 0
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}))
        assert (await recv_json(ws))["stream_type"] == "SNAPSHOT"


async def test_received_records_every_message() -> None:
    async with started() as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": "ticker", "codes": ["KRW-BTC"]}))
        await ws.send("PING")
        records = await emu.wait_received(2)
        assert [r.connection_id for r in records] == [emu.connections[0].id] * 2
        assert records[0].raw == request({"type": "ticker", "codes": ["KRW-BTC"]})
        assert records[0].request is not None
        assert records[0].error is None
        assert repr(records[1].request) == "PING"
        assert records[0].monotonic <= records[1].monotonic


async def test_upgrade_response_carries_remaining_req() -> None:
    async with started(connect_limit_per_s=5) as emu, client(emu.public_url) as ws:
        assert ws.response is not None
        assert ws.response.headers["Remaining-Req"] == "group=websocket; min=300; sec=4"


async def test_market_all() -> None:
    async with started(markets=None) as emu:
        status, body, head = await http_get(emu.http_url + "/v1/market/all")
        assert status == 200
        assert "application/json" in head
        markets = json.loads(body)
        assert len(markets) == 855
        assert {
            "market": "KRW-BTC",
            "korean_name": "비트코인",
            "english_name": "Bitcoin",
        } in markets
        quotes = [m["market"].split("-")[0] for m in markets]
        assert (quotes.count("KRW"), quotes.count("BTC"), quotes.count("USDT")) == (289, 328, 238)
        status, body, _ = await http_get(emu.http_url + "/v1/market/all?is_details=true")
        detailed = json.loads(body)
        assert status == 200
        assert len(detailed) == 855
        assert set(detailed[0]["market_event"]) == {"warning", "caution"}
        status, _, _ = await http_get(emu.http_url + "/v1/nothing")
        assert status == 404


def _collect(url: str, message: str, count: int, compression: str | None) -> list[bytes]:
    """A client in its own thread: in-loop clients get one frame per step of the firehose."""
    with sync_connect(
        url, compression=compression, max_size=None, open_timeout=10, close_timeout=1
    ) as ws:
        ws.send(message)
        frames = [ws.recv(timeout=20, decode=False) for _ in range(count)]
    return frames


def _follow(
    url: str, message: str, subscribed: threading.Event, until: list[int], limit: int
) -> list[bytes]:
    """A SIMPLE_LIST client in its own thread: subscribed (its first frame is in) before the
    other client subscribes; reads until it has passed the trade ``until[0]`` once it is set."""
    frames: list[bytes] = []
    with sync_connect(url, max_size=None, open_timeout=10, close_timeout=1) as ws:
        ws.send(message)
        frames.append(ws.recv(timeout=20, decode=False))
        subscribed.set()
        while len(frames) < limit:
            frame = ws.recv(timeout=20, decode=False)
            frames.append(frame)
            if until:
                obj = json.loads(frame)[0]
                if obj["ty"] == "trade" and obj["sid"] >= until[0]:
                    break
    return frames


async def test_firehose_sends_the_same_events_to_every_format_and_connection() -> None:
    # rate=0: trades, tickers and books are written from the simulator's rows by template, for
    # one subscriber inline and for several shared; a raw and a deflate connection in different
    # formats must see the same events with the same number text, and a cut depth its own totals.
    async with started(rate=0) as emu:
        raw_request = request(
            {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"]},
            {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
            {"type": "orderbook", "codes": ["KRW-BTC", "KRW-ETH.5"]},
            {"is_only_realtime": True, "type": "trade", "codes": ["KRW-XRP"]},
        )
        listed_request = request(
            {"type": "trade", "codes": ["KRW-BTC"]},
            {"type": "ticker", "codes": ["KRW-BTC"]},
            {"type": "orderbook", "codes": ["KRW-BTC"]},
            fmt="SIMPLE_LIST",
        )
        subscribed = threading.Event()
        until: list[int] = []
        follower = asyncio.ensure_future(
            asyncio.to_thread(_follow, emu.public_url, listed_request, subscribed, until, 200_000)
        )
        assert await asyncio.to_thread(subscribed.wait, 20)
        raw_bytes = await asyncio.to_thread(_collect, emu.public_url, raw_request, 6000, None)
        last_trade = max(
            f["sequential_id"] for f in map(loads_exact, raw_bytes) if f["type"] == "trade"
        )
        until.append(last_trade)
        listed_bytes = await follower
    raw_frames = [loads_exact(f) for f in raw_bytes]
    listed = [loads_exact(f) for f in listed_bytes]
    assert emu.counters["events_generated"] > 6000
    assert all(isinstance(f, list) and len(f) == 1 for f in listed)
    assert all("ty" in f[0] and "type" not in f[0] for f in listed)
    simple = [to_default(f[0]["ty"], f[0]) for f in listed]
    ours = [f for f in raw_frames if f["code"] == "KRW-BTC" and f["stream_type"] == "REALTIME"]
    theirs = [f for f in simple if f["stream_type"] == "REALTIME"]
    # align on the first trade both saw, then event for event
    common = {f["sequential_id"] for f in ours if f["type"] == "trade"} & {
        f["sequential_id"] for f in theirs if f["type"] == "trade"
    }
    assert common
    first = min(common)
    start_ours = next(i for i, f in enumerate(ours) if f.get("sequential_id") == first)
    start_theirs = next(i for i, f in enumerate(theirs) if f.get("sequential_id") == first)
    pairs = list(zip(ours[start_ours:], theirs[start_theirs:], strict=False))
    assert len(pairs) > 500
    assert {f["type"] for f, _ in pairs} >= {"trade", "ticker"}
    for a, b in pairs:
        assert a == b
        assert list(a) == list(b)
    # books go out at most every 100 ms per market: compare those both connections got
    books = {f["timestamp"]: f for f in ours if f["type"] == "orderbook"}
    for book in (f for f in theirs if f["type"] == "orderbook" and f["timestamp"] in books):
        assert book == books[book["timestamp"]]
    types = {(f["type"], f["code"]) for f in raw_frames}
    assert {("trade", "KRW-ETH"), ("ticker", "KRW-ETH"), ("orderbook", "KRW-ETH")} <= types
    assert ("trade", "KRW-XRP") in types
    realtime_books = {
        f["code"] for f in raw_frames if f["type"] == "orderbook" and f["stream_type"] == "REALTIME"
    }
    assert realtime_books == {"KRW-BTC", "KRW-ETH"}
    for book in (f for f in raw_frames if f["type"] == "orderbook"):
        units = book["orderbook_units"]
        assert len(units) == (5 if book["code"] == "KRW-ETH" else 30)
        assert Decimal(book["total_ask_size"]) == sum(Decimal(u["ask_size"]) for u in units)
        assert Decimal(book["total_bid_size"]) == sum(Decimal(u["bid_size"]) for u in units)
        assert list(book)[-2:] == ["stream_type", "level"]
    # each ticker follows its trade and agrees with it (the shared and the inline paths alike)
    last: dict[str, Any] = {}
    checked = 0
    for frame in (f for f in raw_frames if f["stream_type"] == "REALTIME"):
        if frame["type"] == "trade":
            last[frame["code"]] = frame
        elif frame["type"] == "ticker" and frame["code"] in last:
            trade = last[frame["code"]]
            fields = ("trade_price", "trade_volume", "ask_bid", "trade_timestamp", "timestamp")
            assert [frame[k] for k in fields] == [trade[k] for k in fields]
            checked += 1
    assert checked > 1000
    sids = [
        f["sequential_id"]
        for f in raw_frames
        if f["type"] == "trade" and f["stream_type"] == "REALTIME"
    ]
    assert sids == sorted(sids)
    assert len(set(sids)) == len(sids)
