"""``upbit-fanout tail TOPIC...``: subscribe as a client and print the events, one per line.

Default output is JSON lines, exact numbers (Upbit's own digits), Upbit's DEFAULT field names::

    {"topic":"ticker:KRW-BTC","data":{...the event...}}
    {"topic":"ticker:KRW-BTC","cached":true,"data":{...}}     (a last value, after a reconnect)
    {"gap":{"reason":...,"started_at":...,"ended_at":...,"topics":[...],"source":...}}
    {"notice":{...}}                                            (only with --notices)

``--pretty`` prints a compact human view instead. Runs until SIGINT/SIGTERM or ``--count N``
events, then releases its intent (no lease is left behind). Exit status: 0; 2 for an invalid
topic; 1 when Redis is unreachable or the client gives up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, BinaryIO

from upbit_fanout.commands.status import add_redis_arguments, redis_target
from upbit_fanout.validate import arg, at_least, client_id

if TYPE_CHECKING:
    from upbit_fanout.client import FanoutClient, Item
    from upbit_fanout.settings import Settings
    from upbit_fanout.subscriptions.topics import Topic

# The client library, its codecs and redis are imported inside the functions that use them, so
# that ``upbit-fanout --help`` does not pay for them.

HELP = "Print the events of TOPICs as JSON lines (or --pretty) until Ctrl-C or --count."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="e.g. ticker:KRW-BTC")
    add_redis_arguments(parser)
    parser.add_argument(
        "--count",
        type=arg(at_least(1, kind=int)),
        default=None,
        metavar="N",
        help="stop after N events",
    )
    parser.add_argument("--pretty", action="store_true", help="compact human-readable lines")
    parser.add_argument("--notices", action="store_true", help="also print collector notices")
    parser.add_argument(
        "--client-id", type=arg(client_id), default=None, help="intent key id (default: generated)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from upbit_fanout.client import RedisUnavailableError  # noqa: PLC0415
    from upbit_fanout.subscriptions.errors import InvalidTopicError  # noqa: PLC0415
    from upbit_fanout.subscriptions.redis_errors import (  # noqa: PLC0415
        describe_redis_error,
        is_auth_error,
    )
    from upbit_fanout.subscriptions.topics import parse_topic  # noqa: PLC0415

    try:
        topics = [parse_topic(text) for text in args.topics]
    except InvalidTopicError as exc:
        print(f"upbit-fanout tail: {exc}", file=sys.stderr)
        return 2
    url, keys = redis_target(args, settings)
    out = sys.stdout.buffer
    write = _pretty_line if args.pretty else _json_line
    try:
        return asyncio.run(
            _tail(
                url,
                prefix=keys.prefix,
                topics=topics,
                count=args.count,
                notices=args.notices,
                client_id=args.client_id,
                lease=settings.lease_seconds,
                write=lambda item: _emit(out, write(item)),
            )
        )
    except RedisUnavailableError as exc:
        cause = exc.__cause__
        if cause is not None and is_auth_error(cause):
            print(f"upbit-fanout tail: {describe_redis_error(cause, url)}", file=sys.stderr)
        else:
            print(f"upbit-fanout tail: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (tail ... | head): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _tail(
    url: str,
    *,
    prefix: str,
    topics: list[Topic],
    count: int | None,
    notices: bool,
    client_id: str | None,
    lease: float,
    write: Callable[[Item], None],
) -> int:
    from upbit_fanout.client import FanoutClient  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with FanoutClient(
            url, key_prefix=prefix, client_id=client_id, lease_seconds=lease, notices=notices
        ) as client:
            await client.subscribe(*topics)
            consume = asyncio.create_task(_consume(client, count, write))
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({consume, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (consume, stopped):
                    task.cancel()
                await asyncio.wait({consume, stopped})
            if not consume.cancelled() and consume.exception() is not None:
                raise consume.exception()  # type: ignore[misc]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _consume(client: FanoutClient, count: int | None, write: Callable[[Item], None]) -> None:
    seen = 0
    async for item in client:
        write(item)
        if item.kind == "event":
            seen += 1
            if count is not None and seen >= count:
                return


def _emit(out: BinaryIO, line: bytes) -> None:
    out.write(line)
    out.flush()


def _json_line(item: Item) -> bytes:
    from upbit_fanout.client import Gap, Notice  # noqa: PLC0415
    from upbit_fanout.subscriptions.errors import CodecError  # noqa: PLC0415
    from upbit_fanout.subscriptions.jsontext import dumps_exact  # noqa: PLC0415

    if isinstance(item, Gap):
        body: dict[str, Any] = {
            "reason": item.reason,
            "started_at": item.started_at,
            "ended_at": item.ended_at,
            "topics": list(item.topics),
            "source": item.source,
        }
        if item.connection is not None:
            body["connection"] = item.connection
        return dumps_exact({"gap": body}) + b"\n"
    if isinstance(item, Notice):
        return dumps_exact({"notice": dict(item.data)}) + b"\n"
    head = dumps_exact({"topic": item.topic})[:-1]  # '{"topic":"..."'
    if item.cached:
        head += b',"cached":true'
    payload = item.payload
    if payload[:1] != b"{" or b"\n" in payload:
        try:
            payload = dumps_exact(item.data)  # msgpack (or odd JSON): re-encode, digits kept
        except CodecError as exc:
            payload = dumps_exact({"undecodable": str(exc)})
    return head + b',"data":' + payload + b"}\n"


def _pretty_line(item: Item) -> bytes:
    from upbit_fanout.client import Gap, Notice  # noqa: PLC0415
    from upbit_fanout.subscriptions.errors import CodecError  # noqa: PLC0415

    if isinstance(item, Gap):
        text = f"-- gap of {item.duration:.1f} s ({item.reason}); refreshed {len(item.topics)}"
        return (text + " topic(s) from the last values --\n").encode()
    if isinstance(item, Notice):
        details = " ".join(f"{k}={v}" for k, v in item.data.items() if k not in ("event", "at"))
        return f"-- collector {item.event}: {details} --\n".encode()
    try:
        data = item.data
    except CodecError as exc:
        return f"{item.topic}  <undecodable: {exc}>\n".encode()
    stamp = data.get("timestamp")
    when = _hms(stamp) if isinstance(stamp, int) else "--:--:--.---"
    cached = " (cached)" if item.cached else ""
    return f"{when} {item.topic:<22} {_summary(item.type, data)}{cached}\n".encode()


def _summary(type_name: str, d: Mapping[str, Any]) -> str:
    from upbit_fanout.subscriptions.jsontext import dumps_exact  # noqa: PLC0415

    g = d.get
    if type_name == "ticker":
        rate = g("signed_change_rate")
        pct = f"{rate * 100:+.2f}%" if isinstance(rate, Decimal | int) else "?"
        return f"{g('trade_price')} {g('change', '')} {pct}  vol24h {g('acc_trade_volume_24h')}"
    if type_name == "trade":
        side = "BUY " if g("ask_bid") == "BID" else "SELL"
        return f"{side} {g('trade_volume')} @ {g('trade_price')}"
    if type_name == "orderbook":
        units = g("orderbook_units") or []
        first = units[0] if units and isinstance(units[0], Mapping) else {}
        return (
            f"bid {first.get('bid_price')} x {first.get('bid_size')} | "
            f"ask {first.get('ask_price')} x {first.get('ask_size')}  ({len(units)} units)"
        )
    if type_name.startswith("candle."):
        return (
            f"{g('candle_date_time_kst')} O {g('opening_price')} H {g('high_price')} "
            f"L {g('low_price')} C {g('trade_price')} V {g('candle_acc_trade_volume')}"
        )
    if type_name == "myOrder":
        return (
            f"{g('code')} {g('state')} {g('ask_bid')} {g('order_type')} "
            f"{g('volume')} @ {g('price')} (executed {g('executed_volume')})"
        )
    if type_name == "myAsset":
        assets = g("assets") or []
        return ", ".join(
            f"{a.get('currency')} {a.get('balance')} (+{a.get('locked')} locked)"
            for a in assets
            if isinstance(a, Mapping)
        )
    return dumps_exact(dict(d)).decode()


def _hms(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"
