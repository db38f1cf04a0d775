"""The private endpoint: JWT on the upgrade, myOrder/myAsset driven by place_order/cancel."""

from __future__ import annotations

import json
import logging
from decimal import ROUND_FLOOR, ROUND_UP, Decimal
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from tests.emulator.wsutil import (
    client,
    http_post,
    recv_json,
    recv_raw,
    recv_until,
    request,
    silent,
    started,
)
from upbit_fanout.emulator.auth import make_token
from upbit_fanout.emulator.simulation import tick_size

ACCESS = "emulator-access-key"
SECRET = "emulator-secret-key-" * 4  # 80 bytes: PyJWT's HS512 key-length check is satisfied
KEYS = {"access_key": ACCESS, "secret_key": SECRET}
INVALID_AUTH = {"error": {"name": "INVALID_AUTH", "message": "인증 정보가 올바르지 않습니다."}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fresh(algorithm: str = "HS512", **claims: Any) -> dict[str, str]:
    return bearer(make_token(ACCESS, SECRET, algorithm=algorithm, extra=claims or None))


def far_below_market_bid(emu: Any, code: str = "KRW-BTC") -> str:
    """A limit bid at half the market price: it rests (``wait``) until cancelled."""
    target = emu.simulator.last_price(code) * Decimal("0.5")
    tick = tick_size(code, target)
    price = (target / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
    volume = (Decimal(20_000) / price).quantize(Decimal("1E-8"), rounding=ROUND_UP)
    uuid: str = emu.place_order(code=code, side="bid", ord_type="limit", price=price, volume=volume)
    return uuid


@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
async def test_valid_tokens_from_pyjwt_are_accepted(algorithm: str) -> None:
    token = jwt.encode(
        {"access_key": ACCESS, "nonce": f"n-{algorithm}"}, SECRET, algorithm=algorithm
    )
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=bearer(token)):
        await emu.wait_connections(1)
        assert emu.connections[0].private


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer(make_token(ACCESS, "not-the-secret")),
        bearer(make_token("not-the-access-key", SECRET)),
        {"Authorization": "Bearer garbage"},
    ],
    ids=["missing", "wrong-secret", "wrong-access-key", "garbage"],
)
async def test_bad_credentials_get_http_401(headers: dict[str, str]) -> None:
    async with started(**KEYS) as emu:
        with pytest.raises(InvalidStatus) as caught:
            async with client(emu.private_url, additional_headers=headers):
                pass
        assert caught.value.response.status_code == 401
        assert json.loads(caught.value.response.body) == INVALID_AUTH
        assert emu.counters["auth_failures"] == 1


async def test_a_reused_nonce_is_refused() -> None:
    headers = fresh()
    async with started(**KEYS) as emu:
        async with client(emu.private_url, additional_headers=headers):
            pass
        with pytest.raises(InvalidStatus) as caught:
            async with client(emu.private_url, additional_headers=headers):
                pass
        assert caught.value.response.status_code == 401


async def test_without_keys_the_private_endpoint_refuses_everyone() -> None:
    async with started() as emu:
        with pytest.raises(InvalidStatus) as caught:
            async with client(emu.private_url, additional_headers=fresh()):
                pass
        assert caught.value.response.status_code == 401


async def test_my_order_and_my_asset_after_place_order_and_cancel() -> None:
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=fresh()) as ws:
        await ws.send(request({"type": "myOrder"}, {"type": "myAsset"}))
        assert await silent(ws, 0.1)  # realtime only: no snapshot
        uuid = far_below_market_bid(emu)
        by_type: dict[str, dict[str, Any]] = {}
        while len(by_type) < 2:
            frame = await recv_json(ws)
            by_type[frame["type"]] = frame
        order, asset = by_type["myOrder"], by_type["myAsset"]
        assert (order["uuid"], order["code"], order["stream_type"]) == (uuid, "KRW-BTC", "REALTIME")
        assert order["ask_bid"] == "BID"
        assert order["order_type"] == "limit"
        assert order["state"] == "wait"
        assert asset["stream_type"] == "REALTIME"
        assert asset["assets"][0]["currency"] == "KRW"
        assert {"currency", "balance", "locked"} <= set(asset["assets"][0])
        emu.cancel_order(uuid)
        cancelled = await recv_until(ws, lambda f: f.get("type") == "myOrder")
        assert (cancelled[-1]["uuid"], cancelled[-1]["state"]) == (uuid, "cancel")


async def test_my_order_codes_filter_and_simple_keys() -> None:
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=fresh()) as ws:
        await ws.send(request({"type": "myOrder", "codes": ["KRW-ETH"]}, fmt="SIMPLE"))
        await emu.wait_received(1)
        far_below_market_bid(emu, "KRW-BTC")
        assert await silent(ws, 0.15)  # not a KRW-ETH order; myAsset not subscribed
        uuid = far_below_market_bid(emu, "KRW-ETH")
        frame = await recv_json(ws)
        assert (frame["ty"], frame["cd"], frame["uid"], frame["st"]) == (
            "myOrder",
            "KRW-ETH",
            uuid,
            "REALTIME",
        )
        assert "uuid" not in frame
        assert "ab" in frame
        assert "ot" in frame


async def test_my_asset_in_simple_list() -> None:
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=fresh()) as ws:
        await ws.send(request({"type": "myAsset"}, fmt="SIMPLE_LIST"))
        await emu.wait_received(1)
        far_below_market_bid(emu)
        frame = await recv_json(ws)
        assert isinstance(frame, list)
        assert frame[0]["ty"] == "myAsset"
        assert set(frame[0]["ast"][0]) == {"cu", "b", "l"}


@pytest.mark.parametrize(
    ("message", "name"),
    [
        (request({"type": "ticker", "codes": ["KRW-BTC"]}), "INVALID_PARAM"),
        (request({"type": "myAsset", "codes": ["KRW-BTC"]}), "WRONG_FORMAT"),
    ],
)
async def test_private_request_errors(message: str, name: str) -> None:
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=fresh()) as ws:
        await ws.send(message)
        assert (await recv_json(ws))["error"]["name"] == name
        with pytest.raises(ConnectionClosedOK):
            await recv_raw(ws)


async def test_list_subscriptions_on_the_private_endpoint() -> None:
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=fresh()) as ws:
        await ws.send(
            request({"type": "myAsset"}, {"type": "myOrder", "codes": ["KRW-BTC", "KRW-ETH"]})
        )
        await ws.send(json.dumps([{"ticket": "unique uuid"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        # upbit-samples/list_subscriptions.jsonl line 2
        assert await recv_json(ws) == {
            "method": "LIST_SUBSCRIPTIONS",
            "result": [{"type": "myAsset"}, {"type": "myOrder", "codes": ["KRW-BTC", "KRW-ETH"]}],
            "ticket": "unique uuid",
        }


async def test_admin_order_and_cancel_paths() -> None:
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=fresh()) as ws:
        await ws.send(request({"type": "myOrder"}))
        await emu.wait_received(1)
        price = (emu.simulator.last_price("KRW-BTC") * Decimal("0.5")) // 1000 * 1000
        status, body, _ = await http_post(
            f"{emu.http_url}/_emulator/order?code=KRW-BTC&side=bid&ord_type=limit"
            f"&price={price}&volume=0.01"
        )
        assert status == 200
        uuid = json.loads(body)["uuid"]
        assert (await recv_json(ws))["uuid"] == uuid
        status, body, _ = await http_post(f"{emu.http_url}/_emulator/cancel?uuid={uuid}")
        assert status == 200
        assert (await recv_json(ws))["state"] == "cancel"
        status, body, _ = await http_post(f"{emu.http_url}/_emulator/order?code=KRW-BTC&side=up")
        assert status == 400
        assert json.loads(body)["error"]["name"] in (
            "ORDER_REJECTED",
            "BAD_REQUEST",
        )


async def test_a_resting_limit_order_fills_as_the_market_trades() -> None:
    async with (
        started(rate=5000, **KEYS) as emu,
        client(emu.private_url, additional_headers=fresh()) as ws,
    ):
        await ws.send(request({"type": "myOrder", "codes": ["KRW-BTC"]}))
        await emu.wait_received(1)
        # at the best bid, under the last price: it rests, then sellers trade into it
        last = emu.simulator.last_price("KRW-BTC")
        best_bid = emu.simulator.best_prices("KRW-BTC")[1]
        price = best_bid if best_bid < last else best_bid - tick_size("KRW-BTC", best_bid)
        uuid = emu.place_order(
            code="KRW-BTC", side="bid", ord_type="limit", price=price, volume=Decimal("0.0001")
        )
        assert (await recv_json(ws))["state"] == "wait"
        # no public subscriber: the market trades anyway because an order rests there
        fill = (await recv_until(ws, lambda f: f["state"] in ("trade", "done"), limit=50))[-1]
        assert (fill["uuid"], fill["state"], fill["is_maker"]) == (uuid, "trade", True)
        assert Decimal(str(fill["price"])) == price


async def test_bearer_tokens_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    # websockets logs every handshake header at DEBUG; the Authorization header carries a JWT
    # signed with the user's secret, so both ends hand websockets a redacting logger.
    token = make_token(ACCESS, SECRET)
    caplog.set_level(logging.DEBUG)
    async with started(**KEYS) as emu, client(emu.private_url, additional_headers=bearer(token)):
        await emu.wait_connections(1)
    # (the test's own websockets client logs with a plain logger: look at the emulator's records)
    server_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("emulator"))
    assert "Authorization" in server_log  # the header was logged ...
    assert token not in server_log  # ... without its value
    assert SECRET not in caplog.text
