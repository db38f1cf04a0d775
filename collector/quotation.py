"""Upbit's REST quotation API: cold snapshots and trade back-fill, in the stream's shape.

Two parts:

- pure: :func:`plan_calls` turns topics into the fewest REST calls (tickers and books of many
  markets in one call, docs/upbit-protocol.md §13.2), and :func:`stream_payload` maps one REST
  object to the WebSocket's DEFAULT shape (§4): ``market`` becomes ``code``, the trade's
  ``trade_date_utc``/``trade_time_utc`` become ``trade_date``/``trade_time``, fields REST does
  not carry are ``null`` (a ticker's ``ask_bid``, ``acc_ask_volume``, ``acc_bid_volume``,
  ``market_state``..., a trade's ``best_*``), ``stream_type`` says where it came from (``REST``
  for a snapshot, ``BACKFILL`` for a back-filled trade), and an orderbook cut to fewer units gets
  its totals recomputed exactly, as the router does for the stream. Every number keeps REST's
  text (:func:`subscriptions.jsontext.loads_exact`).
- I/O: :class:`QuotationClient`, unauthenticated GETs paced per rate-limit group (Upbit counts
  ``ticker``, ``orderbook``, ``trade``, ``candle`` and ``market`` separately, 10 per second each,
  §13.4): a sliding window per group, a pause to the next second when ``Remaining-Req`` says
  ``sec=0``, a 429 halves the group's pace and is retried after a pause, a 418 (blocked) stops the
  group for ``blocked_pause`` seconds. ``Remaining-Req`` is read by the same parser as the
  exchange client's (:func:`collector.private_sync.parse_remaining_req`) and errors are
  :class:`collector.exchange.ExchangeError` with Upbit's error name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import httpx

from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.exchange import ExchangeError, error_of
from upbit_fanout.collector.private_sync import parse_remaining_req, rest_query
from upbit_fanout.subscriptions.jsontext import EXACT_CONTEXT, RawNumber, loads_exact
from upbit_fanout.subscriptions.topics import Topic

__all__ = [
    "BACKFILL",
    "MAX_MARKETS_PER_CALL",
    "MAX_TRADES_PER_PAGE",
    "REST",
    "QuotationClient",
    "RestCall",
    "plan_calls",
    "stream_payload",
    "stream_trade",
]


REST: Final = "REST"
"""``stream_type`` of a snapshot answered from REST (docs/contract.md, "Cold snapshots")."""
BACKFILL: Final = "BACKFILL"
"""``stream_type`` of a trade back-filled after an upstream gap (docs/contract.md)."""
MAX_MARKETS_PER_CALL: Final = 100
"""Markets named in one ``/v1/ticker`` or ``/v1/orderbook`` call (keeps the URL short)."""
MAX_TRADES_PER_PAGE: Final = 500
"""The largest ``count`` of a ``/v1/trades/ticks`` page (docs/upbit-protocol.md §13.5)."""
QUOTATION_PER_SECOND: Final = 10
"""Upbit's quotation limit per group and second (docs/upbit-protocol.md §13.4)."""


_TICKER_FIELDS: Final = (
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "prev_closing_price",
    "change",
    "change_price",
    "signed_change_price",
    "change_rate",
    "signed_change_rate",
    "trade_volume",
    "acc_trade_volume",
    "acc_trade_volume_24h",
    "acc_trade_price",
    "acc_trade_price_24h",
    "trade_date",
    "trade_time",
    "trade_timestamp",
    "ask_bid",
    "acc_ask_volume",
    "acc_bid_volume",
    "highest_52_week_price",
    "highest_52_week_date",
    "lowest_52_week_price",
    "lowest_52_week_date",
    "market_state",
    "is_trading_suspended",
    "delisting_date",
    "market_warning",
    "timestamp",
)
_CANDLE_FIELDS: Final = (
    "candle_date_time_utc",
    "candle_date_time_kst",
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "candle_acc_trade_volume",
    "candle_acc_trade_price",
    "timestamp",
)


# -- which calls answer which topics ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestCall:
    """One GET: ``path?params`` in rate-limit ``group``, answering ``topics`` (canonical texts)."""

    path: str
    params: tuple[tuple[str, str], ...]
    group: str
    topics: tuple[Topic, ...] = field(default=())


def candle_path(type_name: str) -> str:
    """``candle.1s`` -> ``/v1/candles/seconds``; ``candle.5m`` -> ``/v1/candles/minutes/5``."""
    unit = type_name.removeprefix("candle.")
    if unit == "1s":
        return "/v1/candles/seconds"
    if unit.endswith("m") and unit[:-1].isdigit():
        return f"/v1/candles/minutes/{unit[:-1]}"
    raise ValueError(f"no REST candles for {type_name!r}")


def plan_calls(topics: Iterable[Topic]) -> list[RestCall]:
    """The REST calls answering ``topics`` (public quotation topics only; others are ignored).

    Tickers and orderbooks of up to :data:`MAX_MARKETS_PER_CALL` markets share one call (every
    depth of a market's book comes from one 30-unit answer; a grouped book, ``@level``, from a
    call with that ``level``); a trade topic is one
    ``trades/ticks?count=1`` call, a candle topic one candle call (count 1). Calls come in a
    fixed order (type, then code), so the same topics always give the same calls.
    """
    tickers: dict[str, list[Topic]] = {}
    books: dict[str | None, dict[str, list[Topic]]] = {}  # level -> code -> topics
    singles: list[RestCall] = []
    for topic in sorted(set(topics), key=str):
        code = topic.code
        if topic.is_private or code is None:
            continue
        if topic.type == "ticker":
            tickers.setdefault(code, []).append(topic)
        elif topic.type == "orderbook":
            books.setdefault(topic.level, {}).setdefault(code, []).append(topic)
        elif topic.type == "trade":
            singles.append(
                RestCall("/v1/trades/ticks", (("market", code), ("count", "1")), "trade", (topic,))
            )
        elif topic.type.startswith("candle."):
            singles.append(
                RestCall(
                    candle_path(topic.type), (("market", code), ("count", "1")), "candle", (topic,)
                )
            )
    calls: list[RestCall] = []
    batches: list[tuple[str, str, dict[str, list[Topic]], tuple[tuple[str, str], ...]]] = [
        ("/v1/ticker", "ticker", tickers, ())
    ]
    for level in sorted(books, key=lambda value: value or ""):  # level None first: no grouping
        extra: tuple[tuple[str, str], ...] = (("level", level),) if level is not None else ()
        batches.append(("/v1/orderbook", "orderbook", books[level], extra))
    for path, group, by_code, extra in batches:
        codes = sorted(by_code)
        for start in range(0, len(codes), MAX_MARKETS_PER_CALL):
            chunk = codes[start : start + MAX_MARKETS_PER_CALL]
            calls.append(
                RestCall(
                    path,
                    (("markets", ",".join(chunk)), *extra),
                    group,
                    tuple(t for code in chunk for t in by_code[code]),
                )
            )
    return calls + singles


def answers(call: RestCall, body: Any, *, stream_type: str = REST) -> dict[Topic, dict[str, Any]]:
    """``{topic: payload}`` for the topics of ``call`` that ``body`` (its decoded JSON) answers.

    A topic whose market is missing from the answer, or whose object cannot be mapped, is left
    out (the caller reports it as not answered).
    """
    if not isinstance(body, list):
        return {}
    by_market: dict[str, Mapping[str, Any]] = {}
    for item in body:
        if isinstance(item, Mapping) and isinstance(item.get("market"), str):
            # trades/ticks answers newest first: the first object of a market is its latest
            by_market.setdefault(str(item["market"]).upper(), item)
    out: dict[Topic, dict[str, Any]] = {}
    for topic in call.topics:
        item = by_market.get(topic.code or "")
        if item is None:
            continue
        try:
            out[topic] = stream_payload(topic, item, stream_type=stream_type)
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue
    return out


# -- REST objects in the stream's shape ------------------------------------------------------------


def stream_payload(topic: Topic, rest: Mapping[str, Any], *, stream_type: str) -> dict[str, Any]:
    """One REST object (of ``topic``'s endpoint) as the stream's DEFAULT payload (§4, §13.2)."""
    code = str(rest["market"]).upper()
    if topic.type == "ticker":
        out: dict[str, Any] = {"type": "ticker", "code": code}
        for name in _TICKER_FIELDS:
            out[name] = rest.get(name)
        out["stream_type"] = stream_type
        return out
    if topic.type == "trade":
        return stream_trade(rest, stream_type=stream_type)
    if topic.type == "orderbook":
        units = rest["orderbook_units"]
        if not isinstance(units, list):
            raise TypeError("orderbook_units is not a list")
        book: dict[str, Any] = {
            "type": "orderbook",
            "code": code,
            "timestamp": rest.get("timestamp"),
            "total_ask_size": rest.get("total_ask_size"),
            "total_bid_size": rest.get("total_bid_size"),
            "orderbook_units": units,
        }
        if len(units) > topic.units:
            kept = units[: topic.units]
            book["orderbook_units"] = kept
            book["total_ask_size"] = _exact_sum(kept, "ask_size")
            book["total_bid_size"] = _exact_sum(kept, "bid_size")
        book["stream_type"] = stream_type
        book["level"] = rest.get("level", 0)
        return book
    if topic.type.startswith("candle."):
        candle: dict[str, Any] = {"type": topic.type, "code": code}
        for name in _CANDLE_FIELDS:
            candle[name] = rest[name] if name != "timestamp" else rest.get(name)
        candle["stream_type"] = stream_type
        return candle
    raise ValueError(f"no REST shape for {topic.type!r}")


def stream_trade(rest: Mapping[str, Any], *, stream_type: str) -> dict[str, Any]:
    """A ``trades/ticks`` object as a trade event (§4.2): ``change`` is derived from the price
    against ``prev_closing_price`` and ``change_price`` is its magnitude (the stream's
    convention); the ``best_*`` fields, which REST does not carry, are null."""
    price = rest["trade_price"]
    previous = rest["prev_closing_price"]
    difference = _decimal(price) - _decimal(previous)
    change = "RISE" if difference > 0 else "FALL" if difference < 0 else "EVEN"
    change_price = rest.get("change_price")
    if isinstance(change_price, RawNumber) and change_price.startswith("-"):
        change_price = RawNumber(change_price[1:])
    elif isinstance(change_price, int) and change_price < 0:
        change_price = -change_price
    return {
        "type": "trade",
        "code": str(rest["market"]).upper(),
        "timestamp": rest.get("timestamp"),
        "trade_date": rest.get("trade_date_utc"),
        "trade_time": rest.get("trade_time_utc"),
        "trade_timestamp": rest.get("timestamp"),
        "trade_price": price,
        "trade_volume": rest["trade_volume"],
        "ask_bid": rest.get("ask_bid"),
        "prev_closing_price": previous,
        "change": change,
        "change_price": change_price,
        "sequential_id": int(rest["sequential_id"]),
        "best_ask_price": None,
        "best_ask_size": None,
        "best_bid_price": None,
        "best_bid_size": None,
        "stream_type": stream_type,
    }


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{value!r} is not a number")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None


def _exact_sum(units: Sequence[Any], name: str) -> Decimal:
    total = Decimal(0)
    for unit in units:
        total = EXACT_CONTEXT.add(total, _decimal(unit[name]))
    return total


# -- the client ------------------------------------------------------------------------------------


class _Group:
    __slots__ = ("blocked_until", "budget", "exhausted_until", "lock")

    def __init__(self, per_second: int) -> None:
        self.budget = RateBudget([(per_second, 1.0)], slack=0.05, recovery=30.0)
        self.lock = asyncio.Lock()
        self.exhausted_until = 0.0
        self.blocked_until = 0.0


class QuotationClient:
    """Unauthenticated GETs on Upbit's quotation API at ``base_url`` (``https://api.upbit.com``).

    Counters: ``requests``, ``rate_waits`` (pauses for the pace, ``Remaining-Req`` or a 429),
    ``failures`` (requests that raised).
    """

    def __init__(
        self,
        base_url: str,
        *,
        per_second: int = QUOTATION_PER_SECOND,
        timeout: float = 5.0,
        retries: int = 2,
        blocked_pause: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if per_second < 1:
            raise ValueError("per_second must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._per_second = per_second
        self._retries = retries
        self._blocked_pause = blocked_pause
        self._clock = clock
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._groups: dict[str, _Group] = {}
        self.requests = 0
        self.rate_waits = 0
        self.failures = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group(self._per_second)
        return group

    async def get(self, call: RestCall) -> Any:
        """The decoded JSON answer of ``call`` (numbers as :class:`RawNumber` / ``int``).

        Raises :class:`ExchangeError` (a refusal, a 418 block, unreachable, not JSON).
        """
        group = self._group(call.group)
        query = rest_query(call.params)
        url = f"{self.base_url}{call.path}" + (f"?{query}" if query else "")
        try:
            for attempt in range(self._retries + 1):
                async with group.lock:
                    await self._pace(group, call.group)
                    self.requests += 1
                    try:
                        response = await self._client.get(
                            url, headers={"Accept": "application/json"}
                        )
                    except httpx.HTTPError as exc:
                        raise ExchangeError(0, "unreachable", type(exc).__name__) from None
                    now = self._clock()
                    _, left = parse_remaining_req(response.headers.get("Remaining-Req"))
                    if left == 0:
                        group.exhausted_until = now + 1.0
                    status = response.status_code
                    if status == 429:
                        group.budget.penalize(now)
                        group.exhausted_until = now + 1.0 + attempt
                        if attempt < self._retries:
                            continue
                    if status == 418:
                        group.blocked_until = now + self._blocked_pause
                    if status != 200:
                        raise error_of(response)
                try:
                    return loads_exact(response.content)
                except ValueError:
                    raise ExchangeError(status, "bad_answer", "not JSON") from None
            raise ExchangeError(429, "too_many_requests", "still limited after retries")
        except ExchangeError:
            self.failures += 1
            raise

    async def _pace(self, group: _Group, name: str) -> None:
        now = self._clock()
        if group.blocked_until > now:
            raise ExchangeError(
                418, "blocked", f"the {name} group is paused after a 418 from Upbit"
            )
        wait = max(group.budget.delay(now), group.exhausted_until - now)
        while wait > 0:
            self.rate_waits += 1
            await self._sleep(wait)
            now = self._clock()
            wait = max(group.budget.delay(now), group.exhausted_until - now)
        group.budget.record(now)
