"""Hostile intents, drilled as an operator would: plain Redis commands against a running
collector (a real ``upbit-fanout collector`` process where its log matters), the emulator as
Upbit, and a Redis subscription counting what the other clients receive.

Each test turns a failure once measured into an assertion a user would notice: market data
stopping for everybody, 28 MB of log, 29 MB of ``P:invalid``, a key pinning the union forever,
``check`` failing on a wrong-type key, a typo silently "served".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.collector.process_support import collector_env
from tests.collector.service_support import (
    Listener,
    client_processes,
    running_collector,
    sent_messages,
    status_of,
    topics_of,
    union_becomes,
)
from tests.helpers import COMMAND, command_env, free_port, text_map, until
from upbit_fanout.collector.intents import Limits
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.keys import Keys

needs_command = pytest.mark.skipif(
    not COMMAND.exists(), reason="run `make .venv/.installed-dev` (the console script)"
)


pytestmark = [pytest.mark.usefixtures("real_redis_url"), pytest.mark.emulator(seed=11, rate=300)]


async def _invalid(r: aioredis.Redis, keys: Keys) -> dict[str, str]:
    return text_map(await r.hgetall(keys.invalid), errors="replace")


async def _sadd_many(r: aioredis.Redis, key: str, members: list[str], lease: int = 60) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for start in range(0, len(members), 5000):
            pipe.sadd(key, *members[start : start + 5000])
        pipe.expire(key, lease)
        await pipe.execute()


@needs_command
@pytest.mark.slow
@pytest.mark.timeout(180)  # about 20 s alone; generous for a loaded machine
async def test_a_hostile_client_never_stops_market_data_and_its_junk_stays_small(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis, tmp_path: Path
) -> None:
    """100,000 valid-looking unknown codes in one key, 100,000 junk members over 100 keys and a
    1 MB member, while a normal client keeps receiving its ticker without a pause."""
    log_path = tmp_path / "collector.log"
    channel = keys.channel("ticker:KRW-BTC")
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(COMMAND), "collector", "--redis-url", real_redis_url, "--upstream",
            emu.public_url, env=collector_env(keys, sweep_interval="0.5", leader_lease="0"),
            cwd=tmp_path, stderr=log_file,
        )  # fmt: skip
    try:
        async with (
            Listener(real_redis_url, [channel]) as listener,
            client_processes(real_redis_url, keys, {"good": ["ticker:KRW-BTC"]}, lease=3),
        ):
            await union_becomes(r, keys, {"ticker:KRW-BTC"}, within=20)
            await listener.wait(lambda: len(listener.messages[channel]) > 0, within=10)
            await until(lambda: _markets_loaded(r, keys), within=10)
            log_before = log_path.stat().st_size

            # The drills: one key of 100,000 unknown codes, 100 keys of 1,000 junk members
            # each (every one of them parsed and refused), one 1 MB member.
            await _sadd_many(
                r, keys.intents("hostile"), [f"ticker:KRW-ZZ{n:07d}" for n in range(100_000)]
            )
            await _sadd_many(r, keys.intents("huge"), ["ticker:KRW-" + "B" * 1_000_000])
            for n in range(100):
                await _sadd_many(
                    r, keys.intents(f"junk{n:03d}"), [f"junk{n}-{m}" for m in range(1000)]
                )
            await until(
                lambda: _status_is(r, keys, invalid_intents=str(100_000 + 100_000 + 1)), within=60
            )

            # The other client kept receiving: events in every 2-s window over 8 s.
            windows = []
            for _ in range(4):
                start = len(listener.messages[channel])
                await asyncio.sleep(2.0)
                windows.append(len(listener.messages[channel]) - start)
            assert all(count > 0 for count in windows), windows
            assert await r.smembers(keys.union) == {b"ticker:KRW-BTC"}
            # Nothing hostile reached Upbit, and the socket was never dropped for it.
            for message in sent_messages(emu):
                assert topics_of(message) == {"ticker:KRW-BTC"}
            assert emu.counters["connections"] == 1

            # P:invalid stays small: a count and a few examples per client (was 29 MB).
            invalid = await _invalid(r, keys)
            assert invalid["hostile"].startswith("100000 refused: ")
            assert "more than the 1000 a client may ask for" in invalid["hostile"]
            assert invalid["junk007"] == "1000 refused (5 shown)"
            assert len([f for f in invalid if f.startswith("hostile")]) <= 6
            assert len(invalid) <= 102 * 6
            size = sum(len(k) + len(v) for k, v in invalid.items())
            assert size < 150_000, size
            assert all(len(k) + len(v) < 600 for k, v in invalid.items())
            huge = [v for k, v in invalid.items() if k.startswith("huge ")]
            assert huge == ["longer than 64 bytes (max_topic_length)"]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)

    # The log stays small: a line per client at most, none long (was 100,000 lines, 28 MB).
    written = log_path.read_bytes()[log_before:].decode(errors="replace")
    refusing = [line for line in written.splitlines() if "refusing" in line]
    assert 3 <= len(refusing) <= 30, refusing
    assert len(written) < 20_000, len(written)
    assert max(len(line) for line in written.splitlines()) < 600
    huge_lines = [line for line in refusing if "client huge" in line]
    assert len(huge_lines) == 1
    assert len(huge_lines[0]) < 400  # the 1 MB member, shown in 60 characters
    assert any("not logging them for" in line for line in written.splitlines())
    assert process.returncode == 0


async def _markets_loaded(r: aioredis.Redis, keys: Keys) -> bool:
    return (await status_of(r, keys)).get("markets", "").startswith("855 markets")


async def _status_is(r: aioredis.Redis, keys: Keys, **fields: str) -> bool:
    status = await status_of(r, keys)
    return all(status.get(name) == value for name, value in fields.items())


async def test_a_typo_is_refused_with_the_closest_market_and_never_sent(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await until(lambda: c.markets is not None and c.markets.current is not None)
        await r.sadd(keys.intents("typo"), "ticker:KRW-BTC", "ticker:KRW-BTX")
        await r.expire(keys.intents("typo"), 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await until(lambda: _has_field(r, keys, "typo ticker:KRW-BTX"))
        status = await status_of(r, keys)
        assert status["markets"].startswith("855 markets, loaded ")
        assert status["limits"] == (
            "topics/client 1000, union 5000, request 131072 B, topic 64 B, client id 128, "
            "lease <= 300 s (grace 10 s)"
        )
        invalid = await _invalid(r, keys)
        assert invalid["typo ticker:KRW-BTX"] == "unknown market KRW-BTX; did you mean KRW-BTC?"
        assert invalid["typo"] == "1 refused"
        assert all("KRW-BTX" not in str(message) for message in sent_messages(emu))


async def _has_field(r: aioredis.Redis, keys: Keys, name: str) -> bool:
    return bool(await r.hexists(keys.invalid, name))


async def test_without_the_market_list_it_serves_says_so_and_checks_once_it_loads(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    port = free_port()  # nothing listens there yet: REST is down at start
    markets_url = f"http://127.0.0.1:{port}/v1/market/all"
    async with running_collector(
        real_redis_url, keys, emu.public_url, markets_url=markets_url
    ) as c:
        await r.sadd(keys.intents("typo"), "ticker:KRW-BTC", "ticker:KRW-BTX")
        await r.expire(keys.intents("typo"), 60)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC", "ticker:KRW-BTX"})
        status = await status_of(r, keys)
        assert status["markets"].startswith("not loaded (")
        assert "market codes are not checked, retrying" in status["markets"]
        async with Emulator(port=port, seed=2, rate=10):  # REST is back
            await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=30)
        assert (await status_of(r, keys))["markets"].startswith("855 markets, loaded ")
        assert "did you mean KRW-BTC?" in (await _invalid(r, keys))["typo ticker:KRW-BTX"]


async def test_a_key_without_a_lease_leaves_the_union_after_the_grace_period(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    limits = Limits(lease_grace=1.5, max_lease=60)
    async with running_collector(real_redis_url, keys, emu.public_url, limits=limits) as c:
        await r.sadd(keys.intents("leased"), "ticker:KRW-BTC")
        await r.expire(keys.intents("leased"), 30)
        await r.sadd(keys.intents("pinned"), "ticker:KRW-ETH")  # SADD, no EXPIRE
        await r.sadd(keys.intents("forever"), "trade:KRW-ETH")
        await r.expire(keys.intents("forever"), 86_400)  # a TTL, but no lease
        both = {"ticker:KRW-BTC", "ticker:KRW-ETH", "trade:KRW-ETH"}
        # Within the grace period it is served (SADD then EXPIRE from a shell must work) ...
        await c.wait_subscribed(lambda union: union == both)
        # ... then it leaves the union, and the report says what to do.
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"}, timeout=10)
        await union_becomes(r, keys, {"ticker:KRW-BTC"})
        invalid = await _invalid(r, keys)
        pinned = keys.intents("pinned")
        assert invalid["pinned"].startswith(f"1 refused: no TTL: {pinned} is not a lease")
        assert f"EXPIRE it (EXPIRE {pinned} 30)" in invalid["pinned"]
        assert "above the maximum lease of 60 s; EXPIRE it" in invalid["forever"]
        assert invalid["pinned ticker:KRW-ETH"].startswith("no TTL")
        # Given a lease, it is served again.
        await r.expire(pinned, 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC", "ticker:KRW-ETH"})
        await until(lambda: _no_field(r, keys, "pinned"))


async def _no_field(r: aioredis.Redis, keys: Keys, name: str) -> bool:
    return not await r.hexists(keys.invalid, name)


BAD_IDS = [b"", b"bad\nid", b"\xff\xfe", b"has space", b"x" * 200, b"colon:id"]


async def test_client_ids_outside_the_contract_are_refused_and_reported_escaped(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    prefix = keys.intents_pattern[:-1].encode()  # Keys.intents() refuses these ids, rightly
    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await r.sadd(keys.intents("ok"), "ticker:KRW-BTC")
        await r.expire(keys.intents("ok"), 30)
        for n, raw in enumerate(BAD_IDS):
            await r.sadd(prefix + raw, f"trade:{['KRW-ETH', 'KRW-XRP', 'KRW-SOL'][n % 3]}")
            await r.expire(prefix + raw, 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await until(lambda: _refused_count(r, keys, len(BAD_IDS)), within=10)
        invalid = await _invalid(r, keys)
        summaries = {k: v for k, v in invalid.items() if " " not in k}
        assert set(summaries) == {
            "", "bad\\x0aid", "\\xff\\xfe", "has\\x20space", "x" * 80 + "...[200B]", "colon:id",
        }  # fmt: skip
        assert all("client id not served" in v for v in summaries.values())
        assert "this one is empty" in summaries[""]
        assert all("\n" not in k + v for k, v in invalid.items())
        sent = " ".join(str(message) for message in sent_messages(emu))
        assert "trade" not in sent


async def _refused_count(r: aioredis.Redis, keys: Keys, count: int) -> bool:
    return (await status_of(r, keys)).get("invalid_intents") == str(count)


@needs_command
async def test_a_wrong_type_key_leaves_check_healthy_and_status_working(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis, tmp_path: Path
) -> None:
    async with running_collector(real_redis_url, keys, emu.public_url) as c:
        await r.sadd(keys.intents("good"), "ticker:KRW-BTC")
        await r.expire(keys.intents("good"), 30)
        await r.set(keys.intents("x"), "foo")  # SET upbit:intents:x foo
        await r.hset(keys.intents("h"), "a", "b")
        bad_key = keys.intents_pattern[:-1].encode() + b"bad\nid"
        await r.sadd(bad_key, "ticker:KRW-ETH")
        await r.expire(bad_key, 30)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await until(lambda: _has_field(r, keys, "x"))
        await until(lambda: _has_field(r, keys, "h"))
        await until(lambda: _has_field(r, keys, "bad\\x0aid"))
        invalid = await _invalid(r, keys)
        assert invalid["x"] == (
            f"1 refused: {keys.intents('x')} is a string, not a SET of topics: nothing of it "
            "is served; DEL it"
        )
        assert "is a hash" in invalid["h"]
        await until(lambda: _status_is(r, keys, state="subscribed"))
        await until(lambda: _fresh_event(r, keys))

        check = _cli("check", url=real_redis_url, keys=keys, cwd=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.startswith("ok: subscribed: 1 topic(s)")
        assert "3 bad intent key(s) ignored (see upbit-fanout status)" in check.stdout

        status = _cli("status", "--json", url=real_redis_url, keys=keys, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert [client["client_id"] for client in report["clients"]] == ["good"]
        bad = {item["key"]: item for item in report["bad_keys"]}
        assert set(bad) == {
            keys.intents("x"),
            keys.intents("h"),
            keys.intents_pattern[:-1] + "bad\\x0aid",
        }
        assert bad[keys.intents("x")]["type"] == "string"
        assert "DEL it" in bad[keys.intents("x")]["reason"]

        text = _cli("status", url=real_redis_url, keys=keys, cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        assert "Bad intent keys (3), ignored" in text.stdout
        assert "bad\\x0aid" in text.stdout
        assert "bad\\\\x0aid" not in text.stdout  # escaped once, not twice
        assert any(item["client_id"] == "bad\\x0aid" for item in report["invalid"])
        # The newline in that id did not split a line: every line is one the report made.
        assert not any(line.startswith("id") for line in text.stdout.splitlines())


async def _fresh_event(r: aioredis.Redis, keys: Keys) -> bool:
    return bool((await status_of(r, keys)).get("last_event_at"))


def _cli(*args: str, url: str, keys: Keys, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = command_env(redis_url=url, key_prefix=keys.prefix)
    return subprocess.run(
        [str(COMMAND), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_without_market_checks_the_union_limit_keeps_the_request_small_and_data_flowing(
    real_redis_url: str, keys: Keys, emu: Emulator, r: aioredis.Redis
) -> None:
    """100 clients of 1,000 well-formed unknown codes each, nothing to check them against: the
    union stops at its limit (the oldest client first), every message stays below the request
    limit, the upstream never closes the socket and the first client keeps receiving."""
    channel = keys.channel("ticker:KRW-BTC")
    limits = Limits(max_union_topics=2000, max_request_bytes=64 * 1024)
    async with (
        Listener(real_redis_url, [channel]) as listener,
        running_collector(
            real_redis_url, keys, emu.public_url, validate_markets=False, limits=limits
        ) as c,
    ):
        await r.sadd(keys.intents("first"), "ticker:KRW-BTC")
        await r.expire(keys.intents("first"), 60)
        await c.wait_subscribed(lambda union: union == {"ticker:KRW-BTC"})
        await listener.wait(lambda: len(listener.messages[channel]) > 0, within=10)
        for n in range(100):
            codes = [f"ticker:KRW-Z{n:03d}{m:04d}" for m in range(1000)]
            await _sadd_many(r, keys.intents(f"flood{n:03d}"), codes)
        await until(lambda: _refused_count(r, keys, 100_000 - 1999), within=60)
        await c.wait_subscribed(lambda union: len(union) == 2000, timeout=30)
        assert "ticker:KRW-BTC" in c.union
        # The oldest flood clients got in first; the newest got nothing.
        assert any(topic.startswith("ticker:KRW-Z000") for topic in c.union)
        assert not any(topic.startswith("ticker:KRW-Z099") for topic in c.union)
        invalid = await _invalid(r, keys)
        assert invalid["flood099"] == "1000 refused (5 shown)"
        assert "the union is full (2000 topics" in invalid["flood099 ticker:KRW-Z0990000"]

        start = len(listener.messages[channel])
        await listener.wait(lambda: len(listener.messages[channel]) > start + 20, within=10)
        sizes = [len(json.dumps(m, separators=(",", ":"))) for m in sent_messages(emu)]
        assert 25_000 < max(sizes) <= 64 * 1024, sizes  # the big union went out, within limit
        assert emu.counters["connections"] == 1  # never closed for a frame too big
