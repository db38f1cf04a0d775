"""The emulator's REST quotation API, answered from the same simulation as its streams.

``GET /v1/ticker?markets=``, ``GET /v1/orderbook?markets=``, ``GET /v1/trades/ticks?market=
&count=&cursor=&to=&days_ago=``, ``GET /v1/candles/seconds?market=&count=`` and
``GET /v1/candles/minutes/{unit}?market=&count=`` (docs/upbit-protocol.md §13.2, §13.5). The
answers come from :class:`emulator.simulation.MarketSimulator`: the ticker, the book and the
trades are the ones the WebSocket streams carry (the same ``sequential_id``, the same book), in
REST's field names (``market`` rather than ``code``, ``trade_date_utc``/``trade_time_utc`` for
trades, ``trade_date_kst`` and friends for tickers, ``unit`` for minute candles) and with exact
number text.

What the emulator cannot answer as Upbit would, and does instead (docs/emulator.md, "REST"):

- trades: the simulator remembers the last 10,000 trades of a ``trading`` market and only the
  last trade of any other, so paging back further returns an empty page; ``days_ago`` (1-7)
  asks for earlier days, which it does not keep: an empty list;
- candles: it keeps only the open candle of each unit, so any ``count`` gets at most one candle
  (the current one), and ``to`` before it gets an empty list.

Rate limit: Upbit's quotation groups (``ticker``, ``orderbook``, ``trade``, ``candle``; the
market list's ``market`` group is served by the server itself), ``per_second`` requests in any
second per group and client address (a sliding window). Every answer carries ``Remaining-Req:
group=<group>; min=<...>; sec=<left>``; a request over the limit gets HTTP 429 with
``{"error":{"name":"too_many_requests","message":...}}``, and ``block_after`` (10) of those in a
row block the group for that address: HTTP 418 for ``block_seconds`` (5 s), doubled at every
repeat. An unknown market is 404
``{"error":{"name":404,"message":"Code not found"}}``; bad parameters 400 ``validation_error``.

:class:`QuotationApi` is pure: the caller passes the clock (``now`` monotonic seconds for the
limit) and turns the answer into HTTP.
"""

from __future__ import annotations

import datetime as dt
import http
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final
from urllib.parse import parse_qs

from upbit_fanout.emulator.protocol import SlidingWindow, error_frame
from upbit_fanout.emulator.rest import RestAnswer, _bad, _int, _one, _Refused
from upbit_fanout.emulator.simulation import CANDLE_UNIT_MS, MarketSimulator
from upbit_fanout.subscriptions.jsontext import RawNumber, dumps_exact

__all__ = [
    "MAX_CANDLES",
    "MAX_MARKETS",
    "MAX_TRADES",
    "QUOTATION_PER_SECOND",
    "QuotationApi",
    "quotation_group",
    "rest_trade",
]

QUOTATION_PER_SECOND: Final = 10
"""Upbit's quotation limit: 10 requests per second per group (docs/upbit-protocol.md §13.4)."""
MAX_TRADES: Final = 500
"""The largest ``count`` of one ``trades/ticks`` page (docs/upbit-protocol.md §13.5)."""
MAX_CANDLES: Final = 200
"""The largest ``count`` of one candle request (docs/upbit-protocol.md §13.2)."""
MAX_MARKETS: Final = 200
"""Markets one ``ticker``/``orderbook`` request may name (the emulator's bound, §13.5)."""

_MINUTE_UNITS: Final = {1, 3, 5, 10, 15, 30, 60, 240}
_TIME: Final = re.compile(r"^(\d{2}):?(\d{2}):?(\d{2})$")
_KST: Final = dt.timezone(dt.timedelta(hours=9))

# ticker: REST names in Upbit's REST order; None marks the fields computed below
_TICKER_FIELDS: Final = (
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "prev_closing_price",
    "change",
    "change_price",
    "change_rate",
    "signed_change_price",
    "signed_change_rate",
    "trade_volume",
    "acc_trade_price",
    "acc_trade_price_24h",
    "acc_trade_volume",
    "acc_trade_volume_24h",
    "highest_52_week_price",
    "highest_52_week_date",
    "lowest_52_week_price",
    "lowest_52_week_date",
)


def quotation_group(path: str) -> str | None:
    """The rate-limit group of a quotation path, or None when the path is not one."""
    if path == "/v1/ticker":
        return "ticker"
    if path == "/v1/orderbook":
        return "orderbook"
    if path == "/v1/trades/ticks":
        return "trade"
    if path == "/v1/candles/seconds" or path.startswith("/v1/candles/minutes/"):
        return "candle"
    return None


def _num(value: Any) -> Any:
    """A simulator number (``Decimal`` or number text) as exact JSON number text."""
    return value if isinstance(value, int) else RawNumber(str(value))


def rest_trade(code: str, row: Sequence[Any]) -> dict[str, Any]:
    """One simulator trade row (``TRADE_ROW``) in ``trades/ticks``'s shape (§13.2)."""
    return {
        "market": code,
        "trade_date_utc": row[2],
        "trade_time_utc": row[3],
        "timestamp": row[4],
        "trade_price": RawNumber(row[5]),
        "trade_volume": RawNumber(row[6]),
        "prev_closing_price": RawNumber(row[8]),
        "change_price": RawNumber(row[10]),
        "ask_bid": row[7],
        "sequential_id": row[11],
    }


class QuotationApi:
    """Answers the quotation endpoints from a simulator (``simulator()`` gives the current one)."""

    def __init__(
        self,
        simulator: Callable[[], MarketSimulator],
        *,
        per_second: int = QUOTATION_PER_SECOND,
        block_after: int = 10,
        block_seconds: float = 5.0,
    ) -> None:
        self._simulator = simulator
        self._per_second = per_second
        self._block_after = block_after
        self._block_seconds = block_seconds
        self._windows: dict[tuple[str, str], SlidingWindow] = {}
        # (group, address) -> [requests refused in a row, blocks so far, blocked until]
        self._strikes: dict[tuple[str, str], list[float]] = {}
        self.requests = 0
        self.refused: dict[str, int] = {}

    def handle(self, path: str, query: str, *, address: str, now: float, now_ms: int) -> RestAnswer:
        """Answer ``GET path?query`` from ``address``; never raises."""
        self.requests += 1
        group = quotation_group(path)
        remaining: str | None = None
        try:
            if group is None:
                raise _Refused(http.HTTPStatus.NOT_FOUND, "not_found", f"no endpoint {path}")
            window = self._window(group, address, now)
            strikes = self._strikes.get((group, address))
            if strikes is not None and strikes[2] > now:
                raise _Refused(
                    http.HTTPStatus.IM_A_TEAPOT,
                    "too_many_requests",
                    f"blocked for {strikes[2] - now:.0f} s more: requests went on after 429",
                )
            allowed = window.try_acquire(now)
            left = window.remaining(now, 1.0)
            remaining = f"group={group}; min={self._per_second * 60}; sec={left}"
            if not allowed:
                self._strike(group, address, now)
                raise _Refused(
                    http.HTTPStatus.TOO_MANY_REQUESTS,
                    "too_many_requests",
                    f"too many requests in the {group} group ({self._per_second} per second)",
                )
            if strikes is not None:
                strikes[0] = 0  # a request within the limit ends the streak
            params = parse_qs(query, keep_blank_values=True)
            body = self._answer(path, params, now_ms)
        except _Refused as refused:
            key = str(refused.name)
            self.refused[key] = self.refused.get(key, 0) + 1
            return RestAnswer(refused.status, _error(refused.name, refused.message), remaining)
        return RestAnswer(http.HTTPStatus.OK, dumps_exact(body), remaining)

    def _strike(self, group: str, address: str, now: float) -> None:
        """One more request over the limit; ``block_after`` in a row earn a block that doubles
        with every repeat (Upbit: 418, a block time that grows, docs/upbit-protocol.md §13.4)."""
        if len(self._strikes) > 10_000:  # bounded: forget addresses no longer blocked
            self._strikes = {k: v for k, v in self._strikes.items() if v[2] > now}
        strikes = self._strikes.setdefault((group, address), [0, 0, 0.0])
        strikes[0] += 1
        if self._block_after and strikes[0] >= self._block_after:
            strikes[2] = now + self._block_seconds * 2 ** min(int(strikes[1]), 10)
            strikes[1] += 1
            strikes[0] = 0

    def _window(self, group: str, address: str, now: float) -> SlidingWindow:
        key = (group, address)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) > 10_000:  # bounded: forget idle clients
                self._windows = {k: w for k, w in self._windows.items() if not w.idle(now)}
            window = self._windows[key] = SlidingWindow([(self._per_second, 1.0)])
        return window

    # -- endpoints ----------------------------------------------------------------------------

    def _answer(self, path: str, params: Mapping[str, list[str]], now_ms: int) -> Any:
        sim = self._simulator()
        if path == "/v1/ticker":
            return [self._ticker(sim, code, now_ms) for code in self._markets(sim, params)]
        if path == "/v1/orderbook":
            level = _one(params, "level")
            try:
                level_value = Decimal(level) if level else None
                if level_value is not None and (not level_value.is_finite() or level_value < 0):
                    raise ValueError(level)
            except (ValueError, ArithmeticError):
                raise _bad(f"level {level!r} is not a number") from None
            return [
                self._orderbook(sim, code, now_ms, level_value)
                for code in self._markets(sim, params)
            ]
        if path == "/v1/trades/ticks":
            return self._trades(sim, params)
        return self._candles(sim, path, params, now_ms)

    def _markets(self, sim: MarketSimulator, params: Mapping[str, list[str]]) -> list[str]:
        text = _one(params, "markets")
        if not text:
            raise _bad("markets is required (markets=KRW-BTC,KRW-ETH)")
        codes = [code.strip().upper() for code in text.split(",") if code.strip()]
        if len(codes) > MAX_MARKETS:
            raise _bad(f"at most {MAX_MARKETS} markets per request")
        for code in codes:
            _known(sim, code)
        return codes

    @staticmethod
    def _ticker(sim: MarketSimulator, code: str, now_ms: int) -> dict[str, Any]:
        stream = sim.snapshot("ticker", code, now_ms=now_ms)
        assert stream is not None
        out: dict[str, Any] = {
            "market": code,
            "trade_date": stream["trade_date"],
            "trade_time": stream["trade_time"],
        }
        kst = dt.datetime.fromtimestamp(int(stream["trade_timestamp"]) / 1000, _KST)
        out["trade_date_kst"] = kst.strftime("%Y%m%d")
        out["trade_time_kst"] = kst.strftime("%H%M%S")
        out["trade_timestamp"] = stream["trade_timestamp"]
        for name in _TICKER_FIELDS:
            value = stream[name]
            out[name] = value if isinstance(value, str) else _num(value)
        out["timestamp"] = stream["timestamp"]
        return out

    @staticmethod
    def _orderbook(
        sim: MarketSimulator, code: str, now_ms: int, level: Decimal | None
    ) -> dict[str, Any]:
        book = sim.orderbook(code, now_ms=now_ms, depth=30, level=level or 0)
        return {
            "market": code,
            "timestamp": book["timestamp"],
            "total_ask_size": _num(book["total_ask_size"]),
            "total_bid_size": _num(book["total_bid_size"]),
            "orderbook_units": [
                {key: _num(value) for key, value in unit.items()}
                for unit in book["orderbook_units"]
            ],
            "level": _num(book.get("level", 0)) if book.get("level") else 0,
        }

    @staticmethod
    def _trades(sim: MarketSimulator, params: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        code = (_one(params, "market") or "").strip().upper()
        if not code:
            raise _bad("market is required")
        _known(sim, code)
        count = _int(_one(params, "count"), default=1, low=1, high=MAX_TRADES)
        days_ago = _int(_one(params, "days_ago"), default=0, low=1, high=7)
        cursor_text = _one(params, "cursor")
        cursor = None
        if cursor_text:
            try:
                cursor = int(cursor_text)
            except ValueError:
                raise _bad(f"cursor {cursor_text!r} is not a sequential_id") from None
        to = _one(params, "to")
        to_text = None
        if to:
            match = _TIME.match(to)
            if match is None:
                raise _bad("to must be HHmmss or HH:mm:ss")
            to_text = ":".join(match.groups())
        if days_ago:
            return []  # earlier days are not kept (see the module docstring)
        rows = sim.trades(code)
        picked: list[dict[str, Any]] = []
        for row in reversed(rows):  # newest first, as Upbit answers
            if cursor is not None and row[11] >= cursor:
                continue
            if to_text is not None and row[3] > to_text:
                continue
            picked.append(rest_trade(code, row))
            if len(picked) == count:
                break
        return picked

    @staticmethod
    def _candles(
        sim: MarketSimulator, path: str, params: Mapping[str, list[str]], now_ms: int
    ) -> list[dict[str, Any]]:
        if path == "/v1/candles/seconds":
            type_, unit = "candle.1s", None
        else:
            text = path.rsplit("/", 1)[-1]
            if not text.isdigit() or int(text) not in _MINUTE_UNITS:
                raise _Refused(
                    http.HTTPStatus.NOT_FOUND, "not_found", f"no minute candles of unit {text!r}"
                )
            unit = int(text)
            type_ = f"candle.{unit}m"
        assert type_ in CANDLE_UNIT_MS
        code = (_one(params, "market") or "").strip().upper()
        if not code:
            raise _bad("market is required")
        _known(sim, code)
        _int(_one(params, "count"), default=1, low=1, high=MAX_CANDLES)
        candle = sim.snapshot(type_, code, now_ms=now_ms)
        assert candle is not None
        to = _one(params, "to")
        if to:
            try:
                moment = dt.datetime.fromisoformat(to.replace("Z", "+00:00"))
            except ValueError:
                raise _bad("to must be an ISO 8601 time") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            start = dt.datetime.fromisoformat(str(candle["candle_date_time_utc"]) + "+00:00")
            if start >= moment:
                return []  # only earlier candles would match: not kept
        out: dict[str, Any] = {
            "market": code,
            "candle_date_time_utc": candle["candle_date_time_utc"],
            "candle_date_time_kst": candle["candle_date_time_kst"],
            "opening_price": _num(candle["opening_price"]),
            "high_price": _num(candle["high_price"]),
            "low_price": _num(candle["low_price"]),
            "trade_price": _num(candle["trade_price"]),
            "timestamp": candle["timestamp"],
            "candle_acc_trade_price": _num(candle["candle_acc_trade_price"]),
            "candle_acc_trade_volume": _num(candle["candle_acc_trade_volume"]),
        }
        if unit is not None:
            out["unit"] = unit
        return [out]


def _known(sim: MarketSimulator, code: str) -> None:
    if code not in sim.codes:
        raise _Refused(http.HTTPStatus.NOT_FOUND, 404, "Code not found")


def _error(name: str | int, message: str) -> bytes:
    if isinstance(name, int):
        return dumps_exact({"error": {"name": name, "message": message}})
    return error_frame(name, message)
