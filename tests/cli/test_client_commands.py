"""``upbit-fanout tail | status | check`` as real subprocesses of the installed console script.

``tail`` is fed by the test playing the collector (payloads published on the channels);
``status`` reads a status hash written by the test; ``check`` runs against nothing, a stale
status, and the real Collector with the emulator.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.client.support import sample_line, wait_subscribed
from tests.helpers import COMMAND, command_env, until
from upbit_fanout.collector import Collector
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.codec import encode_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

TICKER = sample_line("ticker")
MY_ASSET = sample_line("myAsset")


@pytest.fixture(autouse=True)
def _installed() -> None:
    if not COMMAND.exists():
        pytest.skip(f"{COMMAND} missing: run .venv/bin/pip install -e . --no-deps")


def env(url: str, keys: Keys) -> dict[str, str]:
    return command_env(
        redis_url=url, key_prefix=keys.prefix, lease_seconds="2", log_level="WARNING"
    )


def cli(*args: str, url: str, keys: Keys, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), *args],
        env=env(url, keys),
        cwd=cwd,  # no stray .env file from the checkout
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def start_tail(*args: str, url: str, keys: Keys, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(COMMAND),
        "tail",
        *args,
        env=env(url, keys),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def intent_keys(r: aioredis.Redis, keys: Keys) -> list[bytes]:
    return [key async for key in r.scan_iter(match=keys.intents_pattern)]


async def test_tail_prints_exact_json_lines_and_releases_its_intent(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    tail = await start_tail(
        "--count", "3", "--client-id", "tail-test", "ticker:KRW-BTC", "myAsset",
        url=real_redis_url, keys=keys, cwd=tmp_path,
    )  # fmt: skip
    try:

        async def intent_written() -> bool:
            return bool(await r.exists(keys.intents("tail-test")))

        await until(intent_written, within=10, what="tail's intent")
        await wait_subscribed(r, keys.channel("myAsset"))  # sent before the intent: done
        assert await r.smembers(keys.intents("tail-test")) == {b"ticker:KRW-BTC", b"myAsset"}
        await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        await r.publish(keys.channel("myAsset"), encode_event(loads_exact(MY_ASSET), "msgpack"))
        await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        stdout, stderr = await asyncio.wait_for(tail.communicate(), 15)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert tail.returncode == 0, stderr
    lines = stdout.decode().splitlines()
    assert len(lines) == 3
    parsed = [loads_exact(line) for line in lines]
    assert [p["topic"] for p in parsed] == ["ticker:KRW-BTC", "myAsset", "ticker:KRW-BTC"]
    assert parsed[0]["data"]["code"] == "KRW-BTC"
    assert '"balance":1386929.37231066771348207123' in lines[1]  # digits survive msgpack
    assert '"acc_trade_price":78039261076.51241000' in lines[0]  # Upbit's own text
    assert await intent_keys(r, keys) == []


async def test_tail_pretty_and_ctrl_c_leave_nothing_behind(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    tail = await start_tail(
        "--pretty", "ticker:KRW-BTC", url=real_redis_url, keys=keys, cwd=tmp_path
    )
    try:
        await wait_subscribed(r, keys.channel("ticker:KRW-BTC"))
        await r.publish(keys.channel("ticker:KRW-BTC"), TICKER)
        assert tail.stdout is not None
        line = (await asyncio.wait_for(tail.stdout.readline(), 10)).decode()
        assert "ticker:KRW-BTC" in line
        assert "32287000" in line
        assert "RISE" in line
        assert len(await intent_keys(r, keys)) == 1
        tail.send_signal(signal.SIGINT)
        await asyncio.wait_for(tail.wait(), 10)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert tail.returncode == 0
    assert await intent_keys(r, keys) == []


async def test_tail_refuses_an_invalid_topic_with_exit_2(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    result = cli("tail", "ticker:krw-btc", url=real_redis_url, keys=keys, cwd=tmp_path)
    assert result.returncode == 2
    assert "market codes are upper case: KRW-BTC" in result.stderr
    assert await intent_keys(r, keys) == []


async def test_status_text_and_json(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    await r.hset(
        keys.status,
        mapping={
            "state": "subscribed",
            "upstream": "ws://127.0.0.1:1/websocket/v1",
            "collector_id": "col-1",
            "events_total": "1234",
            "last_event_at": str(now_ms - 1500),
            "updated_at": str(now_ms),
            "last_error": "",
        },
    )
    await r.sadd(keys.union, "ticker:KRW-BTC", "trade:KRW-BTC")
    await r.sadd(keys.intents("bot-a"), "ticker:KRW-BTC", "trade:KRW-BTC")
    await r.pexpire(keys.intents("bot-a"), 20_000)
    await r.sadd(keys.intents("bot-b"), "ticker:krw-eth")
    await r.pexpire(keys.intents("bot-b"), 5_000)
    await r.hset(keys.invalid, "bot-b ticker:krw-eth", "market codes are upper case: KRW-ETH")

    result = cli("status", "--json", url=real_redis_url, keys=keys, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "redis_url", "key_prefix", "collector_listening", "collector", "status_age_seconds",
        "last_event_age_seconds", "union", "clients", "bad_keys", "invalid", "leader",
        "standbys", "private_down_seconds", "private_last_event_age_seconds",
        "redis_cluster_primaries",
    }  # fmt: skip
    assert report["redis_cluster_primaries"] is None
    assert report["key_prefix"] == keys.prefix
    assert report["collector"]["state"] == "subscribed"
    assert report["collector"]["events_total"] == 1234
    assert 1.0 <= report["last_event_age_seconds"] < 30
    assert report["union"] == ["ticker:KRW-BTC", "trade:KRW-BTC"]
    assert [c["client_id"] for c in report["clients"]] == ["bot-a", "bot-b"]
    assert report["clients"][0]["topics"] == ["ticker:KRW-BTC", "trade:KRW-BTC"]
    assert 15 < report["clients"][0]["lease_remaining_seconds"] <= 20
    assert report["invalid"] == [
        {
            "client_id": "bot-b",
            "topic": "ticker:krw-eth",
            "reason": "market codes are upper case: KRW-ETH",
        }
    ]
    assert report["collector_listening"] is False
    assert report["leader"] is None

    text = cli("status", url=real_redis_url, keys=keys, cwd=tmp_path)
    assert text.returncode == 0
    assert "subscribed" in text.stdout
    assert "col-1" in text.stdout
    assert "bot-a" in text.stdout
    assert "lease" in text.stdout
    assert "Invalid intents (1)" in text.stdout
    assert "upper case" in text.stdout
    assert "NOT RUNNING" in text.stdout  # nobody listens on P:control


async def test_status_and_check_fail_clearly_when_redis_is_unreachable(
    keys: Keys, tmp_path: Path
) -> None:
    status = cli("status", url="redis://127.0.0.1:1/0", keys=keys, cwd=tmp_path)
    assert status.returncode == 1
    assert status.stderr.startswith(
        "upbit-fanout status: Redis unreachable at redis://127.0.0.1:1/0"
    )
    assert "Traceback" not in status.stderr
    check = cli("check", url="redis://127.0.0.1:1/0", keys=keys, cwd=tmp_path)
    assert check.returncode == 1
    assert check.stdout.startswith("unhealthy: Redis unreachable")


async def test_an_unreachable_cluster_is_one_line_not_a_traceback(
    keys: Keys, tmp_path: Path
) -> None:
    """redis-py's RedisClusterUnreachableError is no RedisError: without care it escaped every
    command as a traceback. Each says it in one line, without the password."""
    url = "redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2/"
    shown = "redis+cluster://:***@127.0.0.1:1,127.0.0.1:2/"
    status = cli("status", url=url, keys=keys, cwd=tmp_path)
    assert status.returncode == 1
    assert status.stderr.startswith(f"upbit-fanout status: Redis unreachable at {shown}")
    check = cli("check", url=url, keys=keys, cwd=tmp_path)
    assert check.returncode == 1
    assert check.stdout.startswith(f"unhealthy: Redis unreachable at {shown}")
    tail = cli("tail", "ticker:KRW-BTC", "--count", "1", url=url, keys=keys, cwd=tmp_path)
    assert tail.returncode != 0
    assert tail.stderr.startswith("upbit-fanout tail: Redis unreachable while connecting to ")
    for run in (status, check, tail):
        assert "Traceback" not in run.stderr
        assert "s3cret" not in run.stdout + run.stderr
        assert len(run.stderr.strip().splitlines()) <= 1


async def test_check_without_a_collector_and_with_stale_events(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    none = cli("check", url=real_redis_url, keys=keys, cwd=tmp_path)
    assert none.returncode == 1
    assert none.stdout.strip() == (
        f"unhealthy: no collector status in Redis (is a collector running on prefix "
        f"{keys.prefix!r}?)"
    )
    # a collector that is listening but whose last event is old
    listener = r.pubsub()
    await listener.subscribe(keys.control)
    try:
        old = int(time.time() * 1000) - 120_000
        await r.hset(keys.status, mapping={"state": "subscribed", "last_event_at": str(old)})
        await r.sadd(keys.union, "ticker:KRW-BTC")
        stale = cli("check", "--max-age", "30", url=real_redis_url, keys=keys, cwd=tmp_path)
        assert stale.returncode == 1
        assert stale.stdout.startswith("unhealthy: last event 1")
        assert "--max-age 30" in stale.stdout
    finally:
        await listener.aclose()

    async def nobody_listens() -> bool:
        return int((await r.pubsub_numsub(keys.control))[0][1]) == 0

    await until(nobody_listens, what="the listener gone")
    dead = cli("check", url=real_redis_url, keys=keys, cwd=tmp_path)  # nobody listening now
    assert dead.returncode == 1
    assert "no collector is running" in dead.stdout


async def test_check_is_healthy_with_a_running_collector(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    async with Emulator(port=0, seed=3, rate=200) as emu:
        redis = aioredis.Redis.from_url(real_redis_url)
        try:
            async with Collector(
                redis=redis, key_prefix=keys.prefix, upstream_url=emu.public_url, sweep_interval=0.3
            ) as collector:

                async def idle() -> bool:
                    return (await r.hget(keys.status, "state")) == b"idle"

                await until(idle, what="the collector's status written")
                idle_check = await asyncio.to_thread(
                    cli, "check", url=real_redis_url, keys=keys, cwd=tmp_path
                )
                assert idle_check.returncode == 0, idle_check.stdout
                assert idle_check.stdout.strip() == "ok: connected/idle: no topics requested"

                await r.sadd(keys.intents("bot-c"), "ticker:KRW-BTC")
                await r.expire(keys.intents("bot-c"), 10)
                await r.publish(keys.control, "bot-c")
                await collector.wait_subscribed(lambda union: "ticker:KRW-BTC" in union)

                async def fresh_event() -> bool:
                    return bool(await r.hget(keys.status, "last_event_at"))

                await until(fresh_event, what="an event counted in the status")
                healthy = await asyncio.to_thread(
                    cli, "check", url=real_redis_url, keys=keys, cwd=tmp_path
                )
                assert healthy.returncode == 0, healthy.stdout
                assert healthy.stdout.startswith("ok: subscribed: 1 topic(s), last event")
        finally:
            await redis.aclose()


async def test_status_shows_the_private_side_and_check_fails_when_it_is_down_too_long(
    real_redis_url: str, keys: Keys, r: aioredis.Redis, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    await r.hset(
        keys.status,
        mapping={
            "state": "subscribed",
            "collector_id": "col-p",
            "last_event_at": str(now_ms - 200),
            "updated_at": str(now_ms),
            "last_error": "",
            "private": "enabled",
            "private_recording": "on",
            "private_upstream_state": "reconnecting",
            "private_down_since": str(now_ms - 90_000),
            "private_last_event_at": str(now_ms - 95_000),
            "private_gaps": "2",
            "private_last_gap": f"{now_ms - 200_000}-{now_ms - 190_000}",
            "private_last_reconcile_at": str(now_ms - 189_000),
            "private_last_reconcile": "ok: 12 orders, 6 balances, 3 appended",
        },
    )
    await r.sadd(keys.union, "ticker:KRW-BTC")
    listener = r.pubsub()
    await listener.subscribe(keys.control)  # a collector is "running"
    try:
        text = cli("status", url=real_redis_url, keys=keys, cwd=tmp_path)
        assert text.returncode == 0
        assert "Private    enabled  (recording on)" in text.stdout
        assert "reconnecting, down for 9" in text.stdout
        assert "gaps          2" in text.stdout
        assert "ok: 12 orders, 6 balances, 3 appended" in text.stdout
        check = cli("check", url=real_redis_url, keys=keys, cwd=tmp_path)
        assert check.returncode == 1
        assert check.stdout.startswith("unhealthy: the private socket has been down for 9")
        lenient = cli(
            "check", "--private-max-down", "300", url=real_redis_url, keys=keys, cwd=tmp_path
        )
        assert lenient.returncode == 0, lenient.stdout
    finally:
        await listener.aclose()
