"""collector/backfill.py: which trades of a page are missing, and the bounded fill itself.

The fill runs against httpx's mock transport playing ``trades/ticks`` (pages newest first,
``cursor`` paging), with a real Router (its duplicate-trade filter) and a real Outbox.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import httpx
import orjson
import pytest

from upbit_fanout.collector.backfill import Backfiller, missing_trades
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.quotation import QuotationClient
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.collector.status import Status
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import parse_topic

TOPIC = parse_topic("trade:KRW-BTC")


def trade(sid: int, ts: int | None = None) -> dict[str, Any]:
    return {
        "market": "KRW-BTC",
        "trade_date_utc": "2026-12-01",
        "trade_time_utc": "00:00:01",
        "timestamp": ts if ts is not None else sid,
        "trade_price": 100,
        "trade_volume": "0.5",
        "prev_closing_price": 90,
        "change_price": 10,
        "ask_bid": "BID",
        "sequential_id": sid,
    }


@pytest.mark.parametrize(
    ("page", "anchor", "since", "missing", "reached"),
    [
        ([5, 4, 3, 2], 3, 0, [5, 4], True),
        ([5, 4], 3, 0, [5, 4], False),
        ([3, 2], 3, 0, [], True),
        ([5, 4, 3, 2], None, 4, [5, 4], True),  # no anchor: back to the gap's start
        ([9, 7, 8], 7, 0, [9], True),  # ids need not be ordered: the position counts
    ],
)
def test_missing_trades(
    page: list[int], anchor: int | None, since: int, missing: list[int], reached: bool
) -> None:
    found, done = missing_trades([trade(s) for s in page], anchor, since)
    assert [t["sequential_id"] for t in found] == missing
    assert done is reached


class Tape:
    """``trades/ticks`` over sequential ids 1..n (newest first), recording the cursors asked."""

    def __init__(self, n: int) -> None:
        self.sids = list(range(n, 0, -1))
        self.cursors: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = parse_qs(urlsplit(str(request.url)).query)
        cursor = query.get("cursor", [None])[0]
        self.cursors.append(cursor)
        count = int(query["count"][0])
        sids = [s for s in self.sids if cursor is None or s < int(cursor)][:count]
        return httpx.Response(200, content=orjson.dumps([trade(s) for s in sids]))


@pytest.fixture
def status() -> Status:
    return Status(fakeredis.FakeAsyncRedis(), Keys("t"), collector_id="c", version="0")


async def fill(
    tape: Tape, status: Status, *, anchor: int | None, live: list[int], max_trades: int = 2000
) -> tuple[list[Outgoing], dict[str, Any], Router]:
    router = Router(codec="json")
    router.set_topics([TOPIC], fresh_connection=True)
    router.claim_trades("KRW-BTC", ([anchor] if anchor else []) + live)
    router.trade_anchors = {"KRW-BTC": anchor} if anchor else {}
    outbox: Outbox[Outgoing] = Outbox(100_000)
    client = QuotationClient("http://127.0.0.1:1", transport=httpx.MockTransport(tape))
    backfiller = Backfiller(
        client=client,
        router=router,
        outbox=outbox,
        status=status,
        codec="json",
        published=lambda: 0,
        publish_wait=0.0,
        max_trades=max_trades,
    )
    try:
        backfiller.gap(0, [TOPIC, parse_topic("ticker:KRW-BTC")])
        hole = backfiller._pending.pop(str(TOPIC))
        assert not backfiller._pending  # only trade topics are filled
        await backfiller._fill(hole)
    finally:
        await client.aclose()
    notice = orjson.loads(status._notices[-1])
    return await outbox.get_batch(), notice, router


async def test_a_hole_is_filled_in_order_without_what_the_socket_already_sent(
    status: Status,
) -> None:
    tape = Tape(1200)  # the anchor is 100: 1,100 missed trades, 3 pages of 500
    items, notice, router = await fill(tape, status, anchor=100, live=[1199, 1200])
    sids = [decode_event(item.payload)["sequential_id"] for item in items]
    assert sids == list(range(101, 1199))
    assert all(item.last is False and item.topic == "trade:KRW-BTC" for item in items)
    assert decode_event(items[0].payload)["stream_type"] == "BACKFILL"
    assert tape.cursors == [None, "701", "201"]
    assert notice["event"] == "backfill"
    assert notice["complete"] is True
    assert notice["count"] == 1098
    assert router.claim_trades("KRW-BTC", [1100, 5000, 5000]) == [False, True, False]


async def test_a_hole_longer_than_the_cap_says_so(status: Status) -> None:
    items, notice, _ = await fill(Tape(5000), status, anchor=10, live=[], max_trades=600)
    assert len(items) == 600
    assert notice["complete"] is False
    assert "max_backfill_trades" in notice["reason"]


async def test_no_anchor_fills_back_to_the_gaps_start(status: Status) -> None:
    tape = Tape(50)
    router = Router(codec="json")
    router.set_topics([TOPIC], fresh_connection=True)
    outbox: Outbox[Outgoing] = Outbox(1000)
    client = QuotationClient("http://127.0.0.1:1", transport=httpx.MockTransport(tape))
    backfiller = Backfiller(
        client=client, router=router, outbox=outbox, status=status, codec="json",
        published=lambda: 0, publish_wait=0.0,
    )  # fmt: skip
    try:
        backfiller.gap(40, [TOPIC])  # since = 40 ms; trade timestamps here equal their ids
        await backfiller._fill(backfiller._pending.pop(str(TOPIC)))
    finally:
        await client.aclose()
    sids = [decode_event(item.payload)["sequential_id"] for item in await outbox.get_batch()]
    assert sids == list(range(40, 51))
    assert orjson.loads(status._notices[-1])["complete"] is True


async def test_a_rest_failure_is_announced(status: Status) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=b'{"error":{"name":"server_error","message":"x"}}')

    router = Router(codec="json")
    router.set_topics([TOPIC], fresh_connection=True)
    client = QuotationClient("http://127.0.0.1:1", transport=httpx.MockTransport(refuse))
    backfiller = Backfiller(
        client=client, router=router, outbox=Outbox(10), status=status, codec="json",
        published=lambda: 0, publish_wait=0.0,
    )  # fmt: skip
    try:
        backfiller.gap(0, [TOPIC])
        await backfiller._fill(backfiller._pending.pop(str(TOPIC)))
    finally:
        await client.aclose()
    notice = orjson.loads(status._notices[-1])
    assert notice["complete"] is False
    assert "server_error" in notice["reason"]
    assert notice["count"] == 0


@dataclass
class Takeover:
    """A back-filler with a Redis of its own (fakeredis) for the takeover tests."""

    backfiller: Backfiller
    redis: fakeredis.FakeAsyncRedis
    keys: Keys
    router: Router
    outbox: Outbox[Outgoing]


@contextlib.asynccontextmanager
async def takeover_backfiller(status: Status, trades: int = 300) -> AsyncIterator[Takeover]:
    """``trade:KRW-BTC`` live, ``trades/ticks`` over sequential ids 1..``trades``."""
    redis = fakeredis.FakeAsyncRedis()
    keys = Keys("t")
    router = Router(codec="json")
    router.set_topics([TOPIC], fresh_connection=True)
    outbox: Outbox[Outgoing] = Outbox(1000)
    client = QuotationClient("http://127.0.0.1:1", transport=httpx.MockTransport(Tape(trades)))
    backfiller = Backfiller(
        client=client, router=router, outbox=outbox, status=status, codec="json",
        published=lambda: 0, publish_wait=0.0, redis=redis, keys=keys,
    )  # fmt: skip
    try:
        yield Takeover(backfiller, redis, keys, router, outbox)
    finally:
        await client.aclose()


async def test_a_takeover_anchor_is_read_before_this_leaders_first_trade_overwrites_it(
    status: Status,
) -> None:
    """The socket's trades flow at once after a takeover, the hole waits its turn: the new
    leader's first live trade would overwrite the previous leader's last value before the
    back-fill reads it, and the hole would be filled from its start (trades published twice)."""
    async with takeover_backfiller(status) as t:
        backfiller, redis, keys = t.backfiller, t.redis, t.keys
        await redis.set(keys.last(TOPIC), orjson.dumps({"sequential_id": 250,
                                                        "trade_timestamp": 900}))  # fmt: skip
        backfiller.takeover(since=500, at=1000)
        first = orjson.dumps({"sequential_id": 300, "trade_timestamp": 1100})
        other = Outgoing("ticker:KRW-BTC", b"{}", "ticker")
        await backfiller.before_publish([other, Outgoing(str(TOPIC), first, "trade")], now=1100)
        await redis.set(keys.last(TOPIC), first)  # what the publisher then wrote
        # a later batch: the topic's anchor is kept, its last value is not read again
        await redis.set(keys.last(TOPIC), orjson.dumps({"sequential_id": 299,
                                                        "trade_timestamp": 1001}))  # fmt: skip
        await backfiller.before_publish([Outgoing(str(TOPIC), first, "trade")], now=1200)
        t.router.claim_trades("KRW-BTC", [300])  # the socket delivered it
        backfiller.subscribed([TOPIC], now=1500)
        await backfiller._fill(backfiller._pending.pop(str(TOPIC)))
        assert len(t.outbox) == 49  # (filled from the hole's start, none: the tape is older)
        sids = [decode_event(i.payload)["sequential_id"] for i in await t.outbox.get_batch()]
        assert sids == list(range(251, 300))  # from the previous leader's last trade on, once


async def test_before_publish_reads_nothing_outside_a_takeovers_window(status: Status) -> None:
    live = [Outgoing(str(TOPIC), b"{}", "trade")]
    backfilled = [Outgoing(str(TOPIC), b"{}", "trade", last=False)]
    async with takeover_backfiller(status) as t:
        backfiller = t.backfiller
        await backfiller.before_publish(live, now=1100)  # no takeover: nothing to keep
        backfiller.takeover(since=500, at=1000)
        await backfiller.before_publish(backfilled, now=1100)  # writes no last value
        assert backfiller._anchors == {}
        await backfiller.before_publish(live, now=1000 + 60_000)  # the window is over
        assert backfiller._anchors == {}
        assert backfiller._anchoring is None


async def test_after_a_takeover_the_anchor_is_the_previous_leaders_last_trade(
    status: Status,
) -> None:
    async with takeover_backfiller(status) as t:
        backfiller, redis, keys = t.backfiller, t.redis, t.keys
        # the previous leader's last trade: id 250, traded before the takeover at 1000 ms
        await redis.set(keys.last(TOPIC), orjson.dumps({"sequential_id": 250,
                                                        "trade_timestamp": 900}))  # fmt: skip
        backfiller.takeover(since=500, at=1000)
        backfiller.subscribed([TOPIC], now=1500)
        await backfiller._fill(backfiller._pending.pop(str(TOPIC)))
        sids = [decode_event(item.payload)["sequential_id"] for item in await t.outbox.get_batch()]
        assert sids == list(range(251, 301))
        # a last value this leader wrote itself (after the takeover) is no anchor
        await redis.set(keys.last(TOPIC), orjson.dumps({"sequential_id": 299,
                                                        "trade_timestamp": 1001}))  # fmt: skip
        backfiller.takeover(since=280, at=1000)  # trade timestamps here equal their ids
        backfiller.subscribed([TOPIC], now=1500)
        hole = backfiller._pending.pop(str(TOPIC))
        assert await backfiller._anchor_from_last(hole) is None
        # subscribed long after the takeover: those topics were not live across it
        backfiller.takeover(since=280, at=1000)
        backfiller.subscribed([TOPIC], now=1000 + 60_000)
        assert backfiller._pending == {}
