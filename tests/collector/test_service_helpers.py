"""The collector's pure decisions, from tables: notification flags, reconciliation with and
without keys, connect-error classification, the outbox policy, the JWT, the public API."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.http11 import Response

from upbit_fanout import collector
from upbit_fanout.collector.auth import Credentials, authorization_header, mint_token
from upbit_fanout.collector.intents import (
    NO_KEYS_REASON,
    merge_notify_flags,
    newly_invalid,
    plan,
)
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.status import LogLimiter
from upbit_fanout.collector.upstream import classify_connect_error, is_rate_limit_error
from upbit_fanout.emulator.auth import AuthError, NonceMemory, verify_authorization
from upbit_fanout.subscriptions.topics import parse_topic


@pytest.mark.parametrize(
    ("current", "merged"),
    [
        ("", "Egsxe"),
        ("Ex", "Exgse"),
        ("Egsxe", "Egsxe"),
        ("Kgsx", "KgsxEe"),  # an older collector's keyspace flags stay (nothing removed)
        ("AE", "AE"),  # A = g$lshzxetd already covers g, s, x and e
        ("AK", "AKE"),
        ("KEA", "KEA"),
        ("gxK", "gxKEse"),
    ],
)
def test_notify_flags_are_merged_never_removed(current: str, merged: str) -> None:
    assert merge_notify_flags(current) == merged
    assert set(current) <= set(merged)


def test_the_plan_refuses_invalid_and_keyless_private_topics() -> None:
    intents = {
        "a": ["ticker:KRW-BTC", "ticker:krw-btc", "myAsset"],
        "b": ["orderbook:KRW-BTC.5", "myOrder:*", "bogus:KRW-BTC"],
    }
    without = plan(intents, private_allowed=False)
    assert {str(t) for t in without.public_topics} == {"ticker:KRW-BTC", "orderbook:KRW-BTC.5"}
    assert without.private.is_empty
    assert without.private_topics == frozenset()
    assert without.invalid[("a", "myAsset")] == NO_KEYS_REASON
    assert without.invalid[("b", "myOrder:*")] == NO_KEYS_REASON
    assert "upper case" in without.invalid[("a", "ticker:krw-btc")]
    assert ("b", "bogus:KRW-BTC") in without.invalid
    assert len(without.invalid) == 4

    with_keys = plan(intents, private_allowed=True)
    assert with_keys.private_topics == {parse_topic("myAsset"), parse_topic("myOrder:*")}
    assert [e.as_json() for e in with_keys.private.entries] == [
        {"type": "myOrder"},
        {"type": "myAsset"},
    ]
    assert len(with_keys.invalid) == 2
    assert with_keys.public == without.public


def test_newly_invalid_is_what_to_log_once() -> None:
    before = {("a", "x"): "bad"}
    after = {("a", "x"): "bad", ("b", "y"): "worse"}
    assert newly_invalid(before, after) == {("b", "y"): "worse"}
    assert newly_invalid(after, after) == {}


def _status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "x", Headers()))


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (_status(401), "auth", "HTTP 401"),
        (_status(403), "auth", "HTTP 403"),
        (_status(429), "rate_limited", "HTTP 429"),
        (_status(503), "unavailable", "HTTP 503"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable", "connection refused"),
        (OSError(101, "Network is unreachable"), "unreachable", "Network is unreachable"),
        (TimeoutError(), "timeout", "timed out"),
        (InvalidHandshake("bad upgrade"), "protocol", "bad upgrade"),
    ],
)
def test_connect_errors_are_classified(exc: BaseException, kind: str, text: str) -> None:
    got_kind, description = classify_connect_error(exc)
    assert got_kind == kind
    assert text in description


@pytest.mark.parametrize(
    ("name", "slow_down"),
    [
        ("TOO_MANY_REQUESTS", True),  # the emulator
        ("Too Many Requests", True),  # Upbit's docs
        ("I'm a teapot", True),  # blocked after repeated limits
        ("WRONG_FORMAT", False),
        ("INVALID_AUTH", False),
    ],
)
def test_rate_limit_errors_are_recognized(name: str, slow_down: bool) -> None:
    assert is_rate_limit_error(name) is slow_down


async def test_the_outbox_drops_the_oldest_and_counts() -> None:
    box: Outbox[int] = Outbox(3)
    assert box.put_many([1, 2]) == 0
    assert box.put_many([3, 4, 5]) == 2
    assert await box.get_batch() == [3, 4, 5]  # everything available, in order
    assert box.dropped_total == 2
    assert box.take_dropped() == 2
    assert box.take_dropped() == 0
    box.put_many([6])
    assert box.put_front([4, 5, 6]) == 1  # a failed batch goes back in front, still bounded
    assert await box.get_batch(limit=2) == [5, 6]
    assert await box.get_batch() == [6]


async def test_get_batch_waits_for_the_first_item() -> None:
    box: Outbox[str] = Outbox(10)
    waiter = asyncio.create_task(box.get_batch())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.put_many(["a", "b"])
    assert await asyncio.wait_for(waiter, 1) == ["a", "b"]


@given(
    maxsize=st.integers(1, 20),
    chunks=st.lists(st.lists(st.integers(), max_size=30), max_size=20),
)
def test_outbox_keeps_the_newest_items_in_order(maxsize: int, chunks: list[list[int]]) -> None:
    box: Outbox[int] = Outbox(maxsize)
    reference: deque[int] = deque(maxlen=maxsize)
    dropped = 0
    for chunk in chunks:
        dropped += box.put_many(chunk)
        reference.extend(chunk)
        assert len(box) <= maxsize
    assert list(box._items) == list(reference)
    assert dropped == box.dropped_total == sum(map(len, chunks)) - len(reference)


def test_a_jwt_per_attempt_that_the_emulator_accepts_once() -> None:
    creds = Credentials("A" * 40, "S" * 40)
    nonces = NonceMemory()
    header = authorization_header(creds)["Authorization"]
    payload = verify_authorization(header, access_key="A" * 40, secret_key="S" * 40, nonces=nonces)
    assert payload["access_key"] == "A" * 40
    assert jwt.get_unverified_header(header.removeprefix("Bearer "))["alg"] == "HS512"
    with pytest.raises(AuthError):  # the same token twice: refused
        verify_authorization(header, access_key="A" * 40, secret_key="S" * 40, nonces=nonces)
    tokens = {mint_token(creds) for _ in range(5)}
    assert len(tokens) == 5  # a fresh nonce every time


def test_credentials_never_show_their_keys() -> None:
    creds = Credentials("my-access-key-123", "my-secret-key-456")
    assert "my-secret-key-456" not in repr(creds)
    assert "my-access-key-123" not in repr(creds)
    with pytest.raises(ValueError, match="non-empty"):
        Credentials("", "x")


def test_log_limiter_holds_back_repeats() -> None:
    now = itertools.count(0.0, 1.0)
    limiter = LogLimiter(interval=10.0, clock=lambda: next(now))
    assert limiter.allow("k") == (True, 0)
    assert [limiter.allow("k")[0] for _ in range(8)] == [False] * 8
    assert limiter.allow("k") == (False, 0)  # t=9
    assert limiter.allow("k") == (True, 9)  # t=10: says how many were held back
    assert limiter.allow("other") == (True, 0)


def test_the_public_api_is_pinned() -> None:
    assert collector.__all__ == ["Collector", "Plan", "RateBudget", "State", "plan"]
    for name in collector.__all__:
        assert getattr(collector, name) is not None
