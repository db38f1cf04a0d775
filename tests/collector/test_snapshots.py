"""collector/snapshots.py: requests are validated and bounded before anything reaches Upbit.

Hostile input is normal input: oversized requests, too many topics, private or unknown topics,
a flood from one client id, a flood from many. Pure parts from tables; the server's bounds with
a real Status on fakeredis and a REST client that must never be called.
"""

from __future__ import annotations

import fakeredis
import httpx
import orjson
import pytest

from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.quotation import QuotationClient
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.collector.snapshots import SnapshotRequest, SnapshotServer, parse_request
from upbit_fanout.collector.status import Status
from upbit_fanout.subscriptions.keys import Keys


def request(topics: object, **extra: object) -> bytes:
    return orjson.dumps({"id": "r1", "client": "bot-1.snap1", "topics": topics, **extra})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"x" * 9000, "more than 8192"),
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (orjson.dumps({"id": "r1", "topics": ["ticker:KRW-BTC"]}), "id and client must be"),
        (orjson.dumps({"id": "a b", "client": "c", "topics": ["ticker:KRW-BTC"]}), "1-128 of"),
        (orjson.dumps({"id": "x" * 129, "client": "c", "topics": ["ticker:KRW-BTC"]}), "1-128"),
        (request([]), "non-empty list"),
        (request("ticker:KRW-BTC"), "non-empty list"),
        (request([f"ticker:KRW-C{i}" for i in range(101)]), "more than the 100"),
    ],
)
def test_requests_refused_whole(data: bytes, reason: str) -> None:
    refused = parse_request(data)
    assert isinstance(refused, str)
    assert reason in refused


def test_topics_refused_alone_with_their_reason() -> None:
    parsed = parse_request(
        request(
            [
                "ticker:KRW-BTC",
                "ticker:KRW-BTC",
                "ticker:krw-btc",
                "myAsset",
                "myOrder:KRW-BTC",
                "trade:KRW-NOPE",
                7,
            ]
        ),
        markets=frozenset({"KRW-BTC"}),
    )
    assert isinstance(parsed, SnapshotRequest)
    assert [str(t) for t in parsed.topics] == ["ticker:KRW-BTC"]
    assert parsed.refused["ticker:krw-btc"] == "market codes are upper case: KRW-BTC"
    assert "private" in parsed.refused["myAsset"]
    assert "private" in parsed.refused["myOrder:KRW-BTC"]
    assert parsed.refused["trade:KRW-NOPE"] == "unknown market KRW-NOPE"
    assert parsed.refused["7"] == "not a topic"


def never(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not be called
    raise AssertionError(f"Upbit was asked {request.url}")


async def test_a_flood_is_bounded_per_client_and_overall() -> None:
    status = Status(fakeredis.FakeAsyncRedis(), Keys("t"), collector_id="c", version="0")
    client = QuotationClient("http://127.0.0.1:1", transport=httpx.MockTransport(never))
    now = [0.0]
    server = SnapshotServer(
        redis=fakeredis.FakeAsyncRedis(),
        keys=Keys("t"),
        client=client,
        outbox=Outbox[Outgoing](100),
        status=status,
        codec="json",
        live=frozenset,
        markets=lambda: None,
        per_client=2,
        max_pending=5,
        notices_per_second=3,
        clock=lambda: now[0],
    )
    try:
        for _ in range(10):  # one client: 2 may wait, the rest are refused with a notice
            server.receive(request(["ticker:KRW-BTC"]))
        assert len(server._pending) == 2
        assert server.refused == 8
        for i in range(20):  # many clients: at most max_pending wait
            server.receive(orjson.dumps({"id": "r", "client": f"c{i}", "topics": ["trade:A-B"]}))
        assert len(server._pending) == 5
        # refusal notices are limited too: 3 per second, whatever the flood
        assert len(status._notices) == 3
        notice = orjson.loads(status._notices[0])
        assert notice["event"] == "snapshot"
        assert notice["failed"] == {
            "ticker:KRW-BTC": "too many snapshot requests waiting from this client"
        }
        assert server._waiting == {"bot-1.snap1": 2, "c0": 1, "c1": 1, "c2": 1}
    finally:
        await client.aclose()


async def test_a_client_asking_one_after_the_other_is_never_refused() -> None:
    """Answered requests stop counting as waiting (here every REST call fails: no server)."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no Upbit here")

    status = Status(fakeredis.FakeAsyncRedis(), Keys("t"), collector_id="c", version="0")
    client = QuotationClient("http://127.0.0.1:1", transport=httpx.MockTransport(down))
    server = SnapshotServer(
        redis=fakeredis.FakeAsyncRedis(), keys=Keys("t"), client=client,
        outbox=Outbox[Outgoing](100), status=status, codec="json", live=frozenset,
        markets=lambda: None, per_client=1,
    )  # fmt: skip
    try:
        for _ in range(3):
            server.receive(request(["ticker:KRW-BTC"]))
            batch, server._pending = server._pending, []
            await server._answer(batch)
            for item in batch:  # what the worker does after answering
                server._waiting.pop(item.client, None)
        assert server.refused == 0
        assert server.rest_calls == 3
        notice = orjson.loads(status._notices[-1])
        assert notice["failed"]["ticker:KRW-BTC"].startswith("REST: unreachable")
    finally:
        await client.aclose()
