"""The leadership lease scripts against a real Redis, and the pure helpers around them."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from upbit_fanout.collector.upstream import retry_class
from upbit_fanout.commands import status as status_command
from upbit_fanout.commands.collector import collector_options
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import (
    REFRESH_SCRIPT,
    RELEASE_SCRIPT,
    TAKE_SCRIPT,
    leader_value,
    parse_leader,
)


async def _take(r: aioredis.Redis, keys: Keys, cid: str, *, reclaim: bool = False) -> list[object]:
    reply = await r.eval(
        TAKE_SCRIPT, 2, keys.leader, keys.leader_token, cid, 2000, "1" if reclaim else "0"
    )
    assert isinstance(reply, list)
    return reply


async def test_each_takeover_gets_a_new_token_and_only_a_free_lease_is_taken(
    r: aioredis.Redis, keys: Keys
) -> None:
    won, value, previous, seeded = await _take(r, keys, "a")
    assert (won, previous, seeded) == (1, b"", 1)  # a fresh counter starts at the server clock
    assert isinstance(value, bytes)
    token, holder = parse_leader(value)
    assert holder == "a"
    assert token is not None
    assert token > 1_700_000_000_000  # milliseconds: never below a token handed out earlier
    assert await r.pttl(keys.leader) > 1000

    lost, holder_value, pttl = await _take(r, keys, "b")
    assert (lost, holder_value) == (0, value)
    assert isinstance(pttl, int)
    assert 0 < pttl <= 2000
    # The same id without reclaim (a live twin in standby) cannot take it either.
    assert (await _take(r, keys, "a"))[0] == 0

    # Reclaim: a restarted process of the same id takes it back at once, with a new token.
    won, reclaimed, previous, seeded = await _take(r, keys, "a", reclaim=True)
    assert (won, previous, seeded) == (1, value, 0)
    assert isinstance(reclaimed, bytes)
    new_token = parse_leader(reclaimed)[0]
    assert new_token == token + 1
    # ... but another id cannot reclaim.
    assert (await _take(r, keys, "b", reclaim=True))[0] == 0


async def test_refresh_and_release_need_the_exact_value(r: aioredis.Redis, keys: Keys) -> None:
    _, value, _, _ = await _take(r, keys, "a")
    assert isinstance(value, bytes), value
    assert await r.eval(REFRESH_SCRIPT, 1, keys.leader, value, 5000) == 1
    assert await r.pttl(keys.leader) > 2000
    stale = leader_value(1, "a")  # the same id with another token
    assert await r.eval(REFRESH_SCRIPT, 1, keys.leader, stale, 5000) == value
    assert await r.eval(RELEASE_SCRIPT, 1, keys.leader, stale) == 0
    assert await r.get(keys.leader) == value
    assert await r.eval(RELEASE_SCRIPT, 1, keys.leader, value) == 1
    assert await r.eval(REFRESH_SCRIPT, 1, keys.leader, value, 5000) == b""
    # The counter survives the release: the next term's token is larger.
    _, again, previous, seeded = await _take(r, keys, "b")
    assert (previous, seeded) == (b"", 0)
    assert isinstance(again, bytes)
    assert isinstance(value, bytes)
    assert parse_leader(again)[0] == (parse_leader(value)[0] or 0) + 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"12 host-1-abc", (12, "host-1-abc")),
        ("7 a collector with spaces", (7, "a collector with spaces")),
        (b"old-style-id", (None, "old-style-id")),  # a value written before fencing
        (b"x y", (None, "x y")),
    ],
)
def test_parse_leader(value: bytes | str, expected: tuple[int | None, str]) -> None:
    assert parse_leader(value) == expected


def test_leader_value_round_trips() -> None:
    assert parse_leader(leader_value(42, "c-1")) == (42, "c-1")


@pytest.mark.parametrize(
    ("kind", "rate_limited", "expected"),
    [
        ("unreachable", False, "fast"),  # connection refused, reset
        ("unavailable", False, "fast"),  # HTTP 503
        ("timeout", False, "fast"),
        ("protocol", False, "fast"),
        ("lost", False, "fast"),
        ("rate_limited", False, "limited"),  # HTTP 429 / 418: keep waiting long
        ("lost", True, "limited"),  # the socket closed after a rate-limit error frame
        ("auth", False, "auth"),
    ],
)
def test_retry_class(kind: str, rate_limited: bool, expected: str) -> None:
    assert retry_class(kind, rate_limited=rate_limited) == expected  # type: ignore[arg-type]


async def test_status_shows_the_leader_and_its_token(
    real_redis_url: str, r: aioredis.Redis, keys: Keys
) -> None:
    await r.set(keys.leader, leader_value(41, "host-1-abc"), px=5000)
    report = await status_command.gather(real_redis_url, keys)
    leader = report["leader"]
    assert leader["collector_id"] == "host-1-abc"
    assert leader["token"] == 41
    assert 0 < leader["lease_remaining_seconds"] <= 5
    assert "Leader     host-1-abc  (lease " in status_command.render_text(report)
    assert ", token 41)" in status_command.render_text(report)


def test_the_new_settings_reach_the_collector() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, redis_grace=5, backoff_fast_max=1.5, collector_id="c-1"
    )
    options = collector_options(settings)
    assert options["redis_grace"] == 5
    assert options["backoff_fast_max"] == 1.5
    assert options["collector_id"] == "c-1"
    defaults = collector_options(Settings(_env_file=None))  # type: ignore[call-arg]
    assert defaults["redis_grace"] == 30.0  # at least one client lease (the client default)
    assert defaults["backoff_fast_max"] == 2.0
    assert defaults["leader_lease"] == 10.0
