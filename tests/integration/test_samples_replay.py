"""Every frame in tests/data/upbit-samples, replayed by the emulator, comes out of the collector on
the right channel with DEFAULT field names and exactly the number text that went in.

Real parts only: the emulator serves the sample lines over a loopback WebSocket (public and
private endpoints), the collector reads them, and a Redis pub/sub subscriber collects what was
published. The samples hold several SNAPSHOT frames for the same topic (they come from different
sources and years), while Upbit sends one per code and subscribe message and the collector passes
one per topic and message; so the lines are replayed in rounds with at most one SNAPSHOT per topic
each, and every line of every round must come out.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import SAMPLES
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions import Keys, decode_event
from upbit_fanout.subscriptions.codec import CodecName
from upbit_fanout.subscriptions.jsontext import RawNumber
from upbit_fanout.subscriptions.upbit_fields import infer_type, inverse, nested_tables, table_for

DATA_FILES = ("ticker", "trade", "orderbook", "candle", "myOrder", "myAsset")
ACCESS, SECRET = "replay-access-key", "replay-secret-key-0123456789abcdef0123"


def _text_numbers(value: Any) -> Any:
    """Numbers as their text, so comparisons are about digits, not values."""
    if isinstance(value, dict):
        return {key: _text_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_text_numbers(item) for item in value]
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return _canonical_number(str(value))
    if isinstance(value, RawNumber):
        return _canonical_number(str(value))
    return value


def _canonical_number(text: str) -> str:
    # Python writes Decimal('1.16539E8') as '1.16539E+8' and Decimal('8.428e-05') as '0.00008428';
    # the digits and exponent are what must survive, so compare Decimal's own tuple form.
    return repr(Decimal(text).as_tuple())


def _to_default(obj: dict[str, Any]) -> dict[str, Any]:
    """The sample as the contract says consumers must see it: DEFAULT names, type and code."""
    type_name = infer_type(obj)
    assert type_name is not None, obj
    names = inverse(table_for(type_name))
    nested = {names.get(k, k): inverse(t) for k, t in nested_tables(type_name).items()}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = names.get(key, key)
        if name in nested and isinstance(value, list):
            out[name] = [{nested[name].get(k, k): v for k, v in item.items()} for item in value]
        else:
            out[name] = value
    if "market" in out:
        out["code"] = out.pop("market")
    out["type"] = type_name
    return out


def _topic_of(event: dict[str, Any]) -> str:
    type_name = event["type"]
    if type_name == "myAsset":
        return "myAsset"
    if type_name == "myOrder":
        return "myOrder:*"
    return f"{type_name}:{event['code']}"


def _sample_events() -> list[tuple[str, str, dict[str, Any]]]:
    """(line text, topic, expected DEFAULT object) for every event in every data sample line."""
    events = []
    for name in DATA_FILES:
        for line in (Path(SAMPLES) / f"{name}.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            parsed = json.loads(line, parse_float=RawNumber)
            for obj in parsed if isinstance(parsed, list) else [parsed]:
                expected = _to_default(obj)
                events.append((line, _topic_of(expected), expected))
    return events


def _rounds(events: list[tuple[str, str, dict[str, Any]]]) -> list[list[tuple[str, str, Any]]]:
    rounds: list[list[tuple[str, str, Any]]] = []
    used: list[set[str]] = []
    for event in events:
        _, topic, expected = event
        index = 0
        if expected.get("stream_type") == "SNAPSHOT":
            while index < len(used) and topic in used[index]:
                index += 1
        while len(rounds) <= index:
            rounds.append([])
            used.append(set())
        rounds[index].append(event)
        if expected.get("stream_type") == "SNAPSHOT":
            used[index].add(topic)
    return rounds


SAMPLE_EVENTS = _sample_events()


def test_every_data_sample_is_covered() -> None:
    counts = {name: 0 for name in DATA_FILES}
    for _, topic, _ in SAMPLE_EVENTS:
        counts[topic.split(":")[0].split(".")[0]] += 1
    assert counts == {
        "ticker": 3, "trade": 7, "orderbook": 5, "candle": 3, "myOrder": 2, "myAsset": 2,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("codec", "transport"),
    [("json", "websockets"), ("msgpack", "websockets"), ("json", "picows")],
)
async def test_samples_come_out_on_their_channels_with_exact_digits(
    codec: CodecName, transport: str, real_redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """Public and private endpoints (the JWT in the handshake), deflate negotiated, over each
    upstream transport (collector/transport.py)."""
    for number, round_events in enumerate(_rounds(SAMPLE_EVENTS)):
        replay = tmp_path / f"round{number}.jsonl"
        lines = list(dict.fromkeys(line for line, _, _ in round_events))
        replay.write_text("\n".join(lines) + "\n")
        await _replay_round(codec, real_redis_url, Keys(f"{keys.prefix}r{number}"), replay,
                            round_events, transport=transport)  # fmt: skip


async def _replay_round(
    codec: CodecName,
    redis_url: str,
    keys: Keys,
    replay: Path,
    expected: list[tuple[str, str, dict[str, Any]]],
    *,
    transport: str = "websockets",
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    listener = redis.pubsub()
    try:
        topics = sorted({topic for _, topic, _ in expected})
        await redis.sadd(keys.intents("replay"), *topics)
        await redis.expire(keys.intents("replay"), 60)
        await listener.psubscribe(f"{keys.prefix}:*")
        async with (
            Emulator(replay=replay, access_key=ACCESS, secret_key=SECRET) as emu,
            Collector(
                redis=redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                private_url=emu.private_url,
                access_key=ACCESS,
                secret_key=SECRET,
                codec=codec,
                sweep_interval=0.3,
                upstream_transport=transport,
            ),
        ):
            got: dict[str, list[Any]] = {}
            received = 0
            async with asyncio.timeout(20):
                while received < len(expected):
                    message = await listener.get_message(timeout=1.0)
                    if message is None or message["type"] != "pmessage":
                        continue
                    channel = message["channel"].decode()
                    if channel in (keys.notices, keys.control, keys.canary):
                        continue
                    topic = channel[len(keys.prefix) + 1 :]
                    got.setdefault(topic, []).append(decode_event(message["data"]))
                    received += 1
        want: dict[str, list[Any]] = {}
        for _, topic, obj in expected:
            want.setdefault(topic, []).append(_text_numbers(obj))
        assert {topic: [_text_numbers(e) for e in events] for topic, events in got.items()} == want
    finally:
        await listener.aclose()
        async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
