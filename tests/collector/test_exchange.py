"""The REST client's own rules, against a scripted transport: query_hash over the query string
as sent, a pause after ``Remaining-Req: sec=0``, 429 retried, refusals with Upbit's names."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import jwt
import pytest

from upbit_fanout.collector.auth import Credentials
from upbit_fanout.collector.exchange import ExchangeClient, ExchangeError

CREDS = Credentials("access-key-0123456789", "secret-key-" * 7)  # 77 bytes: PyJWT decodes quietly


def client(
    handler: Callable[[httpx.Request], httpx.Response], slept: list[float]
) -> ExchangeClient:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return ExchangeClient(
        "http://127.0.0.1:9", CREDS, sleep=sleep, transport=httpx.MockTransport(handler)
    )


async def test_the_token_hashes_exactly_the_query_string_sent() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, CREDS.secret_key, algorithms=["HS512"])
        claims["sent_query"] = request.url.query.decode()
        seen.append(claims)
        return httpx.Response(200, json=[], headers={"Remaining-Req": "group=default; sec=29"})

    slept: list[float] = []
    rest = client(handler, slept)
    await rest.get("/v1/orders/closed", [("states[]", "done"), ("states[]", "cancel")])
    await rest.get("/v1/accounts")
    await rest.aclose()
    query = "states[]=done&states[]=cancel"
    assert seen[0]["sent_query"] == query
    assert seen[0]["query_hash"] == hashlib.sha512(query.encode()).hexdigest()
    assert seen[0]["query_hash_alg"] == "SHA512"
    assert "query_hash" not in seen[1]
    assert seen[0]["nonce"] != seen[1]["nonce"]
    assert slept == []


async def test_remaining_zero_waits_and_429_is_retried() -> None:
    answers = [
        httpx.Response(200, json=[], headers={"Remaining-Req": "group=default; min=1800; sec=0"}),
        httpx.Response(429, json={"error": {"name": "too_many_requests", "message": "slow"}}),
        httpx.Response(200, json=[{"currency": "KRW"}], headers={"Remaining-Req": "sec=12"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    slept: list[float] = []
    rest = client(handler, slept)
    assert await rest.get("/v1/accounts") == []
    assert await rest.get("/v1/accounts") == [{"currency": "KRW"}]
    await rest.aclose()
    assert slept == [1.0, 1.0]  # the next second after sec=0, then the 429 pause
    assert rest.rate_waits == 2
    assert rest.requests == 3


@pytest.mark.parametrize(
    ("status", "name"), [(401, "jwt_verification"), (401, "nonce_used"), (418, "blocked")]
)
async def test_refusals_raise_with_upbits_error_name_and_no_secret(status: int, name: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"name": name, "message": "no"}})

    rest = client(handler, [])
    with pytest.raises(ExchangeError) as caught:
        await rest.get("/v1/accounts")
    await rest.aclose()
    assert caught.value.name == name
    assert caught.value.status == status
    assert CREDS.secret_key not in str(caught.value)
    assert "eyJ" not in str(caught.value)
