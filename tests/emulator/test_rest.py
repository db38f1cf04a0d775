"""The emulator's REST exchange API over real HTTP: data from the account, Upbit's auth rules."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.emulator.test_server_private import ACCESS, SECRET, far_below_market_bid
from tests.emulator.wsutil import http_get, started
from upbit_fanout.emulator.auth import make_token, query_hash
from upbit_fanout.emulator.rest import iso_kst, parse_time

KEYS = {"access_key": ACCESS, "secret_key": SECRET}


def auth(query: str = "", **claims: Any) -> dict[str, str]:
    extra: dict[str, Any] = {}
    if query:
        extra = {"query_hash": query_hash(query), "query_hash_alg": "SHA512"}
    extra.update(claims)
    return {"Authorization": f"Bearer {make_token(ACCESS, SECRET, extra=extra or None)}"}


async def get(emu: Any, path: str, query: str = "", headers: dict[str, str] | None = None) -> Any:
    url = f"{emu.http_url}{path}" + (f"?{query}" if query else "")
    status, body, head = await http_get(url, auth(query) if headers is None else headers)
    return status, json.loads(body), head


async def test_accounts_are_the_account_balances_with_exact_digits() -> None:
    async with started(**KEYS) as emu:
        status, body, head = await get(emu, "/v1/accounts")
    assert status == 200
    by_currency = {row["currency"]: row for row in body}
    assert by_currency["KRW"]["balance"] == "10000000.38271506438112906"
    assert by_currency["KRW"]["locked"] == "0"
    assert set(by_currency["BTC"]) == {
        "currency", "balance", "locked", "avg_buy_price", "avg_buy_price_modified", "unit_currency",
    }  # fmt: skip
    assert "remaining-req: group=default; min=1800; sec=29" in head.lower()


async def test_order_open_and_closed_follow_the_account() -> None:
    async with started(**KEYS) as emu:
        resting = far_below_market_bid(emu)
        second = far_below_market_bid(emu)
        emu.cancel_order(second)
        bought = emu.place_order(code="KRW-BTC", side="bid", ord_type="price", price="10000")

        status, one, _ = await get(emu, "/v1/order", f"uuid={resting}")
        assert status == 200
        assert one["uuid"] == resting
        assert one["state"] == "wait"
        assert one["side"] == "bid"
        assert one["market"] == "KRW-BTC"
        assert one["ord_type"] == "limit"
        assert Decimal(one["locked"]) == emu.account.order_record(resting)["locked"]

        _, open_orders, _ = await get(emu, "/v1/orders/open", "market=KRW-BTC")
        assert [o["uuid"] for o in open_orders] == [resting]

        _, closed, _ = await get(emu, "/v1/orders/closed", "states[]=done&states[]=cancel")
        assert {o["uuid"]: o["state"] for o in closed} == {second: "cancel", bought: "done"}
        _, only_done, _ = await get(emu, "/v1/orders/closed", "state=done&order_by=asc&limit=1")
        assert [o["uuid"] for o in only_done] == [bought]

        # the window is on creation time: a window ending before the orders finds none
        created = emu.account.order_record(bought)["created_at"]
        query = f"start_time={iso_kst(created - 3_600_000)}&end_time={iso_kst(created - 60_000)}"
        _, none, _ = await get(emu, "/v1/orders/closed", query.replace("+", "%2B"))
        assert none == []

        status, missing, _ = await get(emu, "/v1/order", "uuid=no-such-order")
        assert status == 404
        assert missing["error"]["name"] == "order_not_found"
        status, bad, _ = await get(emu, "/v1/orders/closed", "limit=5000")
        assert status == 400
        assert bad["error"]["name"] == "validation_error"


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({}, "jwt_verification"),
        ({"Authorization": "Bearer not.a.jwt"}, "jwt_verification"),
        (
            {"Authorization": f"Bearer {make_token(ACCESS, 'wrong-secret')}"},
            "jwt_verification",
        ),
        ({"Authorization": f"Bearer {make_token('other-key', SECRET)}"}, "invalid_access_key"),
    ],
)
async def test_bad_credentials_get_401_with_upbits_error_names(
    headers: dict[str, str], name: str
) -> None:
    async with started(**KEYS) as emu:
        status, body, _head = await get(emu, "/v1/accounts", headers=headers)
    assert status == 401
    assert body["error"]["name"] == name
    assert set(body["error"]) == {"name", "message"}
    assert SECRET not in json.dumps(body)


async def test_query_hash_must_match_the_query_string_and_nonces_are_single_use() -> None:
    async with started(**KEYS) as emu:
        query = "uuid=abc"
        # no query_hash at all
        status, body, _ = await get(emu, "/v1/order", query, headers=auth())
        assert (status, body["error"]["name"]) == (401, "invalid_query_payload")
        # the hash of another query
        status, body, _ = await get(emu, "/v1/order", query, headers=auth("uuid=abd"))
        assert (status, body["error"]["name"]) == (401, "invalid_query_payload")
        # a right hash with a wrong algorithm name
        headers = auth(query, query_hash_alg="SHA256")
        status, body, _ = await get(emu, "/v1/order", query, headers=headers)
        assert (status, body["error"]["name"]) == (401, "invalid_query_payload")
        # a good token works once, then its nonce is used
        token = auth(query)
        status, _, _ = await get(emu, "/v1/order", query, headers=token)
        assert status == 404  # authenticated: the order does not exist
        status, body, _ = await get(emu, "/v1/order", query, headers=token)
        assert (status, body["error"]["name"]) == (401, "nonce_used")


async def test_over_thirty_requests_a_second_get_429_and_remaining_req_counts_down() -> None:
    async with started(**KEYS, rest_per_second=5) as emu:
        seen: list[tuple[int, str]] = []
        for _ in range(7):
            status, _, head = await get(emu, "/v1/accounts")
            line = next(h for h in head.lower().splitlines() if h.startswith("remaining-req"))
            seen.append((status, line.rsplit("sec=", 1)[1].strip()))
    assert seen[:5] == [(200, "4"), (200, "3"), (200, "2"), (200, "1"), (200, "0")]
    assert seen[5][0] == 429
    assert seen[6][0] == 429


def test_parse_time_accepts_iso_and_epoch_ms() -> None:
    assert parse_time("1764590400000") == 1764590400000
    assert parse_time("2025-12-01T21:00:00+09:00") == 1764590400000
    assert parse_time("2025-12-01T12:00:00Z") == 1764590400000
    assert parse_time("2025-12-01T21:00:00") == 1764590400000  # no offset: KST, as Upbit
    assert iso_kst(1764590400123) == "2025-12-01T21:00:00+09:00"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")
