"""The emulator's frames have the keys and JSON types of Upbit's current frames (upbit-samples)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulator.shapes import json_type
from tests.emulator.wsutil import client, recv_json, request, started
from tests.helpers import SAMPLES


def sample(name: str, predicate: Any) -> dict[str, Any]:
    for line in (SAMPLES / name).read_text().splitlines():
        obj = json.loads(line)
        if isinstance(obj, dict) and predicate(obj):
            return obj
    raise AssertionError(f"no such sample line in {name}")


def shape(obj: dict[str, Any]) -> dict[str, str]:
    return {key: json_type(key, value) for key, value in obj.items()}


def assert_same_shape(frame: dict[str, Any], reference: dict[str, Any]) -> None:
    assert set(frame) == set(reference), set(frame) ^ set(reference)
    got, want = shape(frame), shape(reference)
    for key, kind in want.items():
        if kind == "null":  # documented "string or null" (delisting_date)
            assert got[key] in ("null", "string"), key
        else:
            assert got[key] == kind, (key, got[key], kind)


CURRENT_DEFAULT = {
    "ticker": sample("ticker.jsonl", lambda o: o.get("stream_type") and o["code"] == "KRW-BTC"),
    "trade": sample("trade.jsonl", lambda o: o.get("type") == "trade"),
    "orderbook": sample("orderbook.jsonl", lambda o: o.get("level") == 0),
    "candle.1s": sample("candle.jsonl", lambda o: o.get("type") == "candle.1s"),
}


@pytest.mark.parametrize("type_", sorted(CURRENT_DEFAULT))
async def test_default_frames_match_the_current_samples(type_: str) -> None:
    reference = CURRENT_DEFAULT[type_]
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(request({"type": type_, "codes": ["KRW-BTC"]}))
        for stream_type in ("SNAPSHOT", "REALTIME"):
            frame = await recv_json(ws, within=5)
            assert frame["stream_type"] == stream_type
            assert_same_shape(frame, reference)
            if type_ == "orderbook":
                assert_same_shape(frame["orderbook_units"][0], reference["orderbook_units"][0])
                assert len(frame["orderbook_units"]) == 30


async def test_simple_frames_match_the_simple_samples() -> None:
    current_candle = sample("candle.jsonl", lambda o: o.get("ty") == "candle.1s")
    old_trade = sample("trade.jsonl", lambda o: o.get("ty") == "trade")  # 2020: no best_*
    async with started(rate=5000) as emu, client(emu.public_url) as ws:
        await ws.send(
            request(
                {"type": "candle.1s", "codes": ["KRW-BTC"]},
                {"type": "trade", "codes": ["KRW-BTC"]},
                fmt="SIMPLE",
            )
        )
        frames: dict[str, dict[str, Any]] = {}
        while len(frames) < 2:
            frame = await recv_json(ws)
            frames[frame["ty"]] = frame
        assert_same_shape(frames["candle.1s"], current_candle)
        trade = frames["trade"]
        assert set(old_trade) <= set(trade)
        assert set(trade) - set(old_trade) == {"bap", "bas", "bbp", "bbs"}
        assert {k: v for k, v in shape(trade).items() if k in old_trade} == shape(old_trade)
