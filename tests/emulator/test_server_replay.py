"""Replay mode and ``inject``: recorded frames served byte for byte, or converted with the
same number text."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.wsutil import (
    client,
    http_get,
    recv_json,
    recv_raw,
    request,
    silent,
    started,
)
from tests.helpers import SAMPLES
from upbit_fanout.emulator.server import Emulator
from upbit_fanout.subscriptions import upbit_fields

SAMPLE_FILES = [
    "trade.jsonl",
    "ticker.jsonl",
    "orderbook.jsonl",
    "candle.jsonl",
    "errors.jsonl",
    "status.jsonl",
    "list_subscriptions.jsonl",
]
SUBSCRIBE = (
    {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH", "BTC-BCH"]},
    {"type": "ticker", "codes": ["KRW-BTC", "BTC-ETH"]},
    {"type": "orderbook", "codes": ["KRW-BTC", "USDT-BTC"]},
    {"type": "candle.1s", "codes": ["KRW-BTC"]},
    {"type": "candle.1m", "codes": ["KRW-BTC"]},
)


@pytest.fixture
def replay_file(tmp_path: Path) -> Path:
    path = tmp_path / "replay.jsonl"
    path.write_bytes(b"".join((SAMPLES / name).read_bytes() for name in SAMPLE_FILES))
    return path


def data_lines(path: Path) -> list[bytes]:
    """Lines that are data frames (what a subscriber of everything gets), in file order."""
    lines = []
    for line in path.read_bytes().splitlines():
        obj = json.loads(line)
        if isinstance(obj, dict) and ({"error", "status", "method"} & obj.keys()):
            continue
        lines.append(line)
    return lines


def is_simple(line: bytes) -> bool:
    obj = json.loads(line)
    return "ty" in obj or "mk" in obj


NUMBER = re.compile(rb'"(\w+)":(-?[0-9][0-9.eE+-]*)')


def numbers(frame: bytes) -> list[tuple[bytes, bytes]]:
    """(key, number text) pairs, in order."""
    return NUMBER.findall(frame)


def type_of(line: bytes) -> str:
    obj = json.loads(line)
    inferred = upbit_fields.infer_type(obj)
    assert inferred is not None
    return inferred


def full_names(type_: str) -> dict[bytes, bytes]:
    table = {
        **upbit_fields.table_for(type_),
        **{k: v for t in upbit_fields.nested_tables(type_).values() for k, v in t.items()},
    }
    return {short.encode(): full.encode() for full, short in table.items()}


async def replayed(emu: Emulator, fmt: str, *objects: dict[str, Any]) -> list[bytes]:
    async with client(emu.public_url) as ws:
        await ws.send(request(*objects, fmt=fmt))
        await emu.wait_connections(1)
        conn = emu.connections[0]
        await conn.replay_done.wait()
        frames = [await recv_raw(ws) for _ in range(conn.replay_frames)]
        assert await silent(ws, 0.1)  # no invented snapshot, nothing after the file
        return frames


async def test_default_subscriber_gets_default_lines_byte_for_byte(replay_file: Path) -> None:
    lines = data_lines(replay_file)
    async with started(replay=replay_file, rate=0) as emu:
        frames = await replayed(emu, "DEFAULT", *SUBSCRIBE)
    assert len(frames) == len(lines)  # every data line, legacy ones included, once
    for line, frame in zip(lines, frames, strict=True):
        if not is_simple(line):
            assert frame == line
            continue
        # a SIMPLE line converted to DEFAULT keys, every number with the same text
        names = full_names(type_of(line))
        assert numbers(frame) == [(names.get(k, k), v) for k, v in numbers(line)]
        assert b'"ty"' not in frame


async def test_simple_subscriber_gets_converted_frames_with_the_same_number_text(
    replay_file: Path,
) -> None:
    lines = data_lines(replay_file)
    async with started(replay=replay_file, rate=0) as emu:
        frames = await replayed(emu, "SIMPLE", *SUBSCRIBE)
    assert len(frames) == len(lines)
    converted = 0
    for line, frame in zip(lines, frames, strict=True):
        if is_simple(line):
            assert frame == line
            continue
        converted += 1
        short = {v: k for k, v in full_names(type_of(line)).items()}
        assert numbers(frame) == [(short.get(k, k), v) for k, v in numbers(line)]
        obj = json.loads(frame)
        assert "type" not in obj
        assert "stream_type" not in obj
    assert converted > 5
    # a number text a float would change survives: 1.16539E8, 0.00077720, 8.428e-05
    joined = b"\n".join(frames)
    assert b'"ap":1.16539E8' in joined
    assert b'"as":0.00077720' in joined
    assert b'"tv":8.428e-05' in joined


async def test_list_subscriber_gets_each_line_in_an_array(replay_file: Path) -> None:
    lines = data_lines(replay_file)
    async with started(replay=replay_file, rate=0) as emu:
        frames = await replayed(emu, "JSON_LIST", *SUBSCRIBE)
    for line, frame in zip(lines, frames, strict=True):
        if not is_simple(line):
            assert frame == b"[" + line + b"]"


async def test_replay_follows_the_subscription_and_its_flags(replay_file: Path) -> None:
    async with started(replay=replay_file, rate=0) as emu:
        frames = await replayed(
            emu, "DEFAULT", {"type": "trade", "codes": ["KRW-BTC"], "is_only_snapshot": True}
        )
    objects = [json.loads(f) for f in frames]
    assert objects
    assert all(o.get("stream_type", o.get("st")) == "SNAPSHOT" for o in objects)
    assert all(o.get("code", o.get("market")) == "KRW-BTC" for o in objects)


async def test_replay_codes_are_known_markets(replay_file: Path) -> None:
    async with started(replay=replay_file, rate=0) as emu:
        assert "BTC-BCH" in emu.known_codes  # only in the file (a 2018 SIMPLE trade)
        frames = await replayed(emu, "SIMPLE", {"type": "trade", "codes": ["BTC-BCH"]})
    assert [json.loads(f)["mk"] for f in frames] == ["BTC-BCH"]

    # ... and the market list says so, so a client that checks codes (the collector) serves it.
    async with started(replay=replay_file, rate=0) as emu:
        status, body, _ = await http_get(f"{emu.http_url}/v1/market/all")
    assert status == 200
    listed = {item["market"] for item in json.loads(body)}
    assert "BTC-BCH" in listed
    assert "KRW-BTC" in listed


async def test_paced_replay_and_loop(replay_file: Path) -> None:
    async with (
        started(replay=replay_file, rate=200, replay_loop=True) as emu,
        client(emu.public_url) as ws,
    ):
        await ws.send(request({"type": "candle.1s", "codes": ["KRW-BTC"]}))
        frames = [json.loads(await recv_raw(ws)) for _ in range(4)]
    # the file has two candle.1s lines; looping serves them again, in order
    assert [f.get("tms", f.get("timestamp")) for f in frames] == [
        1735792085824,
        1751855364161,
        1735792085824,
        1751855364161,
    ]


async def test_inject_delivers_to_matching_subscribers_in_their_format() -> None:
    async with (
        started(rate=0.001) as emu,
        client(emu.public_url) as simple_ws,
        client(emu.public_url) as other_ws,
    ):
        await simple_ws.send(
            request({"type": "trade", "codes": ["KRW-BTC"], "is_only_realtime": True}, fmt="SIMPLE")
        )
        await other_ws.send(
            request({"type": "trade", "codes": ["KRW-ETH"], "is_only_realtime": True})
        )
        await emu.wait_received(2)
        delivered = await emu.inject(
            {
                "type": "trade",
                "code": "KRW-BTC",
                "trade_price": Decimal("1.16539E+8"),
                "trade_volume": Decimal("0.00077720"),
                "stream_type": "REALTIME",
            }
        )
        assert delivered == 1
        assert await recv_raw(simple_ws) == (
            b'{"ty":"trade","cd":"KRW-BTC","tp":1.16539E+8,"tv":0.00077720,"st":"REALTIME"}'
        )
        assert await silent(other_ws, 0.1)
        # not a data frame: sent as it is to everyone
        assert await emu.inject(b'{"error":{"name":"X","message":"y"}}') == 2
        assert await recv_json(other_ws) == {"error": {"name": "X", "message": "y"}}
        assert await recv_json(simple_ws) == {"error": {"name": "X", "message": "y"}}
