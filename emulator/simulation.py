"""A deterministic market simulation behind the emulator's public streams.

Pure code: no sockets, no clock. Time always comes in as ``now_ms`` (epoch milliseconds), and the
same seed with the same sequence of calls gives the same events.

Each market has an order book (asks ascending, bids descending, prices on Upbit's tick grid), a
last trade, a day (00:00 UTC) of ticker statistics, 52-week extremes and one open candle per unit.
A trade is a taker order against the best level: it may consume the level (the price moves), after
which the opposite side may follow (momentum) or the level may refill (reversion); a weak pull
toward a per-market anchor keeps prices plausible over long runs, and rare bursts sweep several
levels in one direction. Markets trade in proportion to heavy-tailed activity weights
(KRW-BTC, KRW-XRP, KRW-ETH and USDT-BTC are the busiest).

Payloads use Upbit's DEFAULT field names with every documented field present (docs/upbit-protocol.md
§4.1-§4.4) and no ``stream_type`` (the server adds it). Prices, sizes, amounts and rates are
``Decimal``; timestamps, ``sequential_id`` and counts are ``int``; dates are ``str``.

Internally prices and sizes are integers in units of 1e-8 (amounts, price x size, in 1e-16) and
become number text at the edge, cached where values repeat (price levels, changes). The hot path
never makes a ``Decimal``: :meth:`MarketSimulator.next_rows` returns trades, tickers and books as
rows of that text (:data:`ROW_SPECS`, written by template with
:func:`~upbit_fanout.emulator.protocol.render_row`), and :meth:`MarketSimulator.next_events` turns
the same rows into the dicts of Decimals described above.

Events per trade, in order: ``trade``, ``ticker``, an ``orderbook`` (30 units, level 0) if the
market has not sent its book in the last 100 ms (Upbit sends busy books about every 100 ms, 4),
then any candle updates. Candle events (4.4): a candle is sent only after a trade changed it,
and at most once per second per (code, unit); trades later in the same second are folded into
the next update, which the next trade in a later second or the next
:meth:`MarketSimulator.next_events` call sends. When a bucket closes with unsent trades, its
final state is sent before the new bucket's first update.

Payloads (and the Decimals and unit dicts inside them) may be shared with the simulator's own
state and with other events: treat them as read-only.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from decimal import Context, Decimal
from typing import Any, Final

import orjson

from upbit_fanout.emulator.markets import KNOWN_BASES, Market, default_markets, reference_krw_price
from upbit_fanout.emulator.protocol import BookUnits, RowSpec
from upbit_fanout.subscriptions.upbit_fields import CANDLE_TYPES

__all__ = [
    "CANDLE_UNIT_MS",
    "DEFAULT_TAPE",
    "ORDERBOOK_ROW",
    "ROW_SPECS",
    "TICKER_ROW",
    "TRADE_ROW",
    "MarketSimulator",
    "RowEvent",
    "SimEvent",
    "is_valid_price",
    "min_order_total",
    "orderbook_at_depth",
    "tick_size",
]

SimEvent = tuple[str, str, dict[str, Any]]
"""``(type, code, payload)``, e.g. ``("trade", "KRW-BTC", {...})``."""
RowEvent = tuple[str, str, dict[str, Any] | tuple[Any, ...]]
"""``(type, code, payload or row)``: what :meth:`MarketSimulator.next_rows` returns."""

DEFAULT_TAPE: Final = 0
"""Trades remembered per market for ``GET /v1/trades/ticks`` (:meth:`MarketSimulator.trades`)
beyond the last one; :meth:`MarketSimulator.keep_trades` gives one market a memory. None by
default: remembering costs the trade loop about 8% (200 trades per market; 10,000 on each of
289 firehose markets would also hold some 900 MB)."""

_SCALE: Final = 100_000_000  # internal units per 1 (prices and sizes: 1e-8)
_DAY_MS: Final = 86_400_000
_KST_MS: Final = 9 * 3_600_000
_E8: Final = Decimal("1E-8")
_E10: Final = Decimal("1E-10")
_ZERO: Final = Decimal(0)
_WIDE: Final = Context(prec=80)  # exact products for long amounts
_POW10: Final = tuple(10**i for i in range(9))

#: Candle type -> bucket length in ms (buckets are aligned on the UTC epoch).
CANDLE_UNIT_MS: dict[str, int] = {
    "candle.1s": 1_000,
    "candle.1m": 60_000,
    "candle.3m": 180_000,
    "candle.5m": 300_000,
    "candle.10m": 600_000,
    "candle.15m": 900_000,
    "candle.30m": 1_800_000,
    "candle.60m": 3_600_000,
    "candle.240m": 14_400_000,
}
_UNITS: Final = tuple((t, CANDLE_UNIT_MS[t]) for t in CANDLE_TYPES)
_ALL_TYPES: Final = frozenset(("ticker", "trade", "orderbook", *CANDLE_TYPES))

# Probabilities of the price process.
_DEPTH: Final = 30  # units in an orderbook event (Upbit's default)
_BOOK_EVERY_MS: Final = 100  # a market sends its (changed) book at most this often (4: ~100 ms)
_P_FOLLOW: Final = 0.45  # after a level is consumed, the other side steps in behind it
_P_REFILL: Final = 0.20  # ... or the consumed level refills at the same price
_P_BURST: Final = 0.002  # a trade starts a sweep of several levels in one direction
_REVERSION: Final = 2.0  # pull toward the anchor price: P(buy) = 0.5 - k * relative deviation

# Reference rates used to quote every coin in BTC and USDT consistently with its KRW price.
_KRW_PER_BTC: Final = reference_krw_price("BTC")
_KRW_PER_USDT: Final = reference_krw_price("USDT")

# Busiest markets (relative trade rates); everything else gets a heavy-tailed random weight.
_TOP_WEIGHTS: Final = {
    "KRW-BTC": 100.0,
    "KRW-XRP": 85.0,
    "KRW-ETH": 70.0,
    "USDT-BTC": 45.0,
    "KRW-SOL": 30.0,
    "KRW-DOGE": 28.0,
    "KRW-USDT": 25.0,
    "USDT-ETH": 14.0,
    "KRW-ADA": 12.0,
    "USDT-XRP": 10.0,
    "KRW-SUI": 10.0,
    "KRW-TRX": 8.0,
    "BTC-ETH": 6.0,
    "BTC-XRP": 5.0,
}


def _multipliers() -> tuple[int, ...]:
    rng = random.Random("upbit-fanout/sizes")
    return tuple(
        max(8, min(1024 * 300, int(1024 * rng.lognormvariate(0, 1.3)))) for _ in range(4096)
    )


# A fixed heavy-tailed table of size multipliers (x1024, median 1024), drawn once.
_MULT: Final = _multipliers()


# --------------------------------------------------------------------------------------------
# Tick grids


class _Ticks:
    """A price grid: band lower bounds and tick per band, all in 1e-8 units."""

    __slots__ = ("bounds", "decimals", "ticks")

    def __init__(self, bands: Iterable[tuple[str, str]], *, decimals: int | None = None) -> None:
        pairs = [(int(Decimal(lo) * _SCALE), int(Decimal(t) * _SCALE)) for lo, t in bands]
        self.bounds = [lo for lo, _ in pairs]
        self.ticks = [t for _, t in pairs]
        # decimals shown for a price in each band (BTC prices always show 8)
        self.decimals = [
            decimals if decimals is not None else max(0, 8 - len(str(t)) + 1) for t in self.ticks
        ]

    def tick_at(self, p: int) -> int:
        return self.ticks[bisect_right(self.bounds, p) - 1]

    def next_up(self, p: int) -> int:
        """The smallest valid price above ``p``."""
        q = p + 1
        t = self.ticks[bisect_right(self.bounds, q) - 1]
        return -(-q // t) * t

    def next_down(self, p: int) -> int:
        """The largest valid price below ``p``, or 0 if there is none."""
        q = p - 1
        if q <= 0:
            return 0
        t = self.ticks[bisect_right(self.bounds, q) - 1]
        q = q // t * t
        return q if q > 0 else 0

    def snap_down(self, p: int) -> int:
        t = self.tick_at(p)
        return max(t, p // t * t)

    def snap_up(self, p: int) -> int:
        t = self.tick_at(p)
        return -(-p // t) * t

    def places(self, p: int) -> int:
        return self.decimals[bisect_right(self.bounds, p) - 1]

    def fmt(self, p: int, places: int | None = None) -> Decimal:
        """``p`` as a Decimal with the decimals of its band (or ``places``)."""
        if p == 0:
            return _ZERO
        d = self.decimals[bisect_right(self.bounds, p) - 1] if places is None else places
        if d == 0:
            return Decimal(p // _SCALE)
        return Decimal(p // _POW10[8 - d]).scaleb(-d, _WIDE)


# Upbit's KRW grid (docs.upbit.com, KRW market info, since 2025-07-31 for >= 100 KRW; the bands
# below 100 KRW as documented in 2024).
_KRW_BANDS = (
    ("0", "0.00000001"),
    ("0.0001", "0.0000001"),
    ("0.001", "0.000001"),
    ("0.01", "0.00001"),
    ("0.1", "0.0001"),
    ("1", "0.001"),
    ("10", "0.01"),
    ("100", "1"),
    ("5000", "5"),
    ("10000", "10"),
    ("50000", "50"),
    ("100000", "100"),
    ("500000", "500"),
    ("1000000", "1000"),
)
_KRW = _Ticks(_KRW_BANDS)
# KRW-USDT and KRW-USDC trade in 0.5 KRW steps between 1,000 and 10,000 KRW (since 2025-03-21).
_KRW_STABLE = _Ticks(
    (
        *(b for b in _KRW_BANDS if Decimal(b[0]) < 100),
        ("100", "0.1"),
        ("1000", "0.5"),
        ("10000", "10"),
        ("100000", "100"),
        ("500000", "500"),
        ("1000000", "1000"),
    )
)
_BTC = _Ticks((("0", "0.00000001"),), decimals=8)
_USDT = _Ticks(
    (
        ("0", "0.00000001"),
        ("0.0001", "0.0000001"),
        ("0.001", "0.000001"),
        ("0.01", "0.00001"),
        ("0.1", "0.0001"),
        ("1", "0.001"),
        ("10", "0.01"),
    )
)
_MIN_TOTAL: Final = {"KRW": Decimal(5000), "BTC": Decimal("0.00005"), "USDT": Decimal("0.5")}


def _grid(code: str) -> _Ticks:
    quote = code.partition("-")[0]
    if quote == "KRW":
        return _KRW_STABLE if code in ("KRW-USDT", "KRW-USDC") else _KRW
    if quote == "BTC":
        return _BTC
    return _USDT


def tick_size(code: str, price: Decimal) -> Decimal:
    """The price step of ``code`` at ``price`` (Upbit's KRW/BTC/USDT grids)."""
    return _grid(code).tick_at(int(price * _SCALE)) * _E8


def is_valid_price(code: str, price: Decimal) -> bool:
    """True if ``price`` is positive and on ``code``'s tick grid."""
    if not price.is_finite() or price <= 0:
        return False
    units = price * _SCALE
    if units != units.to_integral_value():
        return False
    u = int(units)
    return u % _grid(code).tick_at(u) == 0


def min_order_total(quote: str) -> Decimal:
    """Upbit's minimum order total per quote currency (5,000 KRW, 0.00005 BTC, 0.5 USDT)."""
    return _MIN_TOTAL.get(quote, Decimal("0.5"))


def _size(u: int) -> Decimal:
    return Decimal(u) * _E8 if u else _ZERO


def _amount(u: int) -> Decimal:
    """An amount (price x size, in 1e-16 units) as an exact Decimal."""
    return Decimal(u).scaleb(-16, _WIDE) if u else _ZERO


_SIZE_EXACT: Final = 10**28  # sizes from here on are rounded by Decimal's default context


def _size_text(u: int) -> str:
    """``str(_size(u))`` without making a Decimal (u >= 0)."""
    if u >= 100_000_000:
        if u >= _SIZE_EXACT:  # the default context's 28 digits round these
            return str(_size(u))
        s = str(u)
        return s[:-8] + "." + s[-8:]
    if u >= 100:  # from 1e-6 up, Decimal writes plain notation with all 8 places
        return f"0.{u:08d}"
    return str(_size(u))


def _amount_text(u: int) -> str:
    """``str(_amount(u))`` without making a Decimal (u >= 0)."""
    if u >= 10_000_000_000_000_000:
        s = str(u)
        if len(s) <= 80:  # _WIDE's precision: longer ones are rounded by Decimal
            return s[:-16] + "." + s[-16:]
    elif u >= 10_000_000_000:
        return f"0.{u:016d}"
    return str(_amount(u))


#: The shapes of the events carried as rows (see :meth:`MarketSimulator.next_rows`).
TRADE_ROW: Final = RowSpec(
    "trade",
    (
        ("type", "const", "trade"),
        ("code", "json", None),
        ("timestamp", "int", None),
        ("trade_date", "str", None),
        ("trade_time", "str", None),
        ("trade_timestamp", "int", None),
        ("trade_price", "num", None),
        ("trade_volume", "num", None),
        ("ask_bid", "str", None),
        ("prev_closing_price", "num", None),
        ("change", "str", None),
        ("change_price", "num", None),
        ("sequential_id", "int", None),
        ("best_ask_price", "num", None),
        ("best_ask_size", "num", None),
        ("best_bid_price", "num", None),
        ("best_bid_size", "num", None),
    ),
)
TICKER_ROW: Final = RowSpec(
    "ticker",
    (
        ("type", "const", "ticker"),
        ("code", "json", None),
        ("opening_price", "num", None),
        ("high_price", "num", None),
        ("low_price", "num", None),
        ("trade_price", "num", None),
        ("prev_closing_price", "num", None),
        ("change", "str", None),
        ("change_price", "num", None),
        ("signed_change_price", "num", None),
        ("change_rate", "num", None),
        ("signed_change_rate", "num", None),
        ("trade_volume", "num", None),
        ("acc_trade_volume", "num", None),
        ("acc_trade_volume_24h", "num", None),
        ("acc_trade_price", "num", None),
        ("acc_trade_price_24h", "num", None),
        ("trade_date", "str", None),
        ("trade_time", "str", None),
        ("trade_timestamp", "int", None),
        ("ask_bid", "str", None),
        ("acc_ask_volume", "num", None),
        ("acc_bid_volume", "num", None),
        ("highest_52_week_price", "num", None),
        ("highest_52_week_date", "str", None),
        ("lowest_52_week_price", "num", None),
        ("lowest_52_week_date", "str", None),
        ("market_state", "const", "ACTIVE"),
        ("is_trading_suspended", "const", False),
        ("delisting_date", "const", None),
        ("market_warning", "str", None),
        ("timestamp", "int", None),
    ),
)
ORDERBOOK_ROW: Final = RowSpec(
    "orderbook",
    (
        ("type", "const", "orderbook"),
        ("code", "json", None),
        ("timestamp", "int", None),
        ("total_ask_size", "num", None),
        ("total_bid_size", "num", None),
        ("orderbook_units", "units", None),
    ),
    tail=(("level", 0),),  # after stream_type, as in the captured frames
)
ROW_SPECS: Final[dict[str, RowSpec]] = {
    "trade": TRADE_ROW,
    "ticker": TICKER_ROW,
    "orderbook": ORDERBOOK_ROW,
}
# positions in a trade row
_TR_DATE: Final = 2
_TR_TIME: Final = 3
_TR_TS: Final = 4
_TR_VOLUME: Final = 6
_TR_SIDE: Final = 7


# --------------------------------------------------------------------------------------------
# State


class _Candle:
    __slots__ = ("amt", "c", "dirty", "h", "l", "o", "start", "ts", "vol")

    def __init__(self, start: int, price: int, vol: int, ts: int) -> None:
        self.start = start
        self.o = self.h = self.l = self.c = price
        self.vol = vol
        self.amt = price * vol
        self.ts = ts
        self.dirty = False


class _Lvl:
    """One price level of a book side: price and size in units, and their number texts."""

    __slots__ = ("p", "pt", "s", "st")

    def __init__(self, p: int, s: int, pt: str, st: str) -> None:
        self.p = p
        self.s = s
        self.pt = pt
        self.st = st

    @property
    def pd(self) -> Decimal:
        return Decimal(self.pt)

    @property
    def sd(self) -> Decimal:
        return Decimal(self.st)


_NIL: Final = _Lvl(0, 0, "0", "0")  # Upbit pads a thin side with zero price and size


class _Mkt:
    """One market's state. Plain slots: the trade loop touches these a lot."""

    __slots__ = (
        "acc_amt",
        "acc_ask",
        "acc_bid",
        "acc_vol",
        "anchor",
        "ask_t",
        "asks",
        "bid_t",
        "bids",
        "book_sent",
        "bts",
        "burst",
        "burst_bid",
        "candles",
        "carry_amt",
        "carry_vol",
        "chg",
        "chgt",
        "code",
        "code_j",
        "csec",
        "day_end",
        "f_amt0",
        "f_h",
        "f_l",
        "f_o",
        "f_on",
        "f_vol0",
        "fresh_day",
        "gap",
        "grid",
        "h52",
        "h52_date",
        "h52_t",
        "high",
        "high_t",
        "is_krw",
        "l52",
        "l52_date",
        "l52_t",
        "last_px",
        "last_trade",
        "low",
        "low_t",
        "lvl_u",
        "open",
        "open_t",
        "p_buy",
        "pcp",
        "pcp_t",
        "pxc",
        "pxt",
        "quote",
        "sched",
        "seed",
        "spread",
        "ta",
        "tape",
        "tb",
        "trade_u",
        "units",
        "warning",
        "weight",
    )

    code: str
    code_j: str  # the code as a JSON token
    quote: str
    grid: _Ticks
    is_krw: bool
    warning: str
    weight: float
    seed: int
    anchor: float
    gap: int
    spread: int  # the usual widest spread, in ticks
    ta: int
    tb: int
    trade_u: int
    lvl_u: int
    asks: list[_Lvl]  # ascending
    bids: list[_Lvl]  # descending
    bts: int
    book_sent: int
    burst: int
    burst_bid: bool
    pxc: dict[int, Decimal]
    pxt: dict[int, str]
    chg: dict[int, tuple[str, Decimal, Decimal, Decimal, Decimal]]
    chgt: dict[int, tuple[str, str, str, str, str]]
    day_end: int
    fresh_day: bool
    pcp: int
    pcp_t: str
    open: int
    open_t: str
    p_buy: float
    # the last full orderbook rendered at depth 30: (best ask, best bid, their sizes then,
    # total ask size, total bid size, units), or None after the book's structure changed
    units: tuple[_Lvl, _Lvl, int, int, int, int, BookUnits] | None
    # number texts of the ticker's slow fields (their Decimals come from px())
    high_t: str
    low_t: str
    h52_t: str
    l52_t: str
    high: int
    low: int
    acc_vol: int
    acc_amt: int
    acc_ask: int
    acc_bid: int
    ask_t: tuple[int, str]  # (acc_ask, its text) as last written
    bid_t: tuple[int, str]
    carry_vol: int
    carry_amt: int
    h52: int
    h52_date: str
    l52: int
    l52_date: str
    last_px: int
    last_trade: tuple[Any, ...]  # a TRADE_ROW row
    tape: deque[tuple[Any, ...]] | None  # the latest trades (TRADE_ROW rows), oldest first
    candles: list[_Candle]
    csec: int
    # the fold: trades held back in second ``csec`` (see _apply_fold)
    f_on: bool
    f_o: int
    f_h: int
    f_l: int
    f_vol0: int
    f_amt0: int
    sched: bool

    def px(self, p: int) -> Decimal:
        """The price ``p`` (units) as a Decimal on the market's grid; cached."""
        d = self.pxc.get(p)
        if d is None:
            if len(self.pxc) > 4096:
                self.pxc.clear()
            d = self.pxc[p] = self.grid.fmt(p)
        return d

    def pt(self, p: int) -> str:
        """The price ``p`` (units) as number text, ``str(self.px(p))``; cached."""
        t = self.pxt.get(p)
        if t is None:
            if len(self.pxt) > 4096:
                self.pxt.clear()
            t = self.pxt[p] = str(self.px(p))
        return t


class _Selection:
    __slots__ = ("codes", "cum", "markets")

    def __init__(self, markets: list[_Mkt]) -> None:
        self.markets = markets
        self.codes = frozenset(m.code for m in markets)
        total = 0.0
        cum: list[float] = []
        for m in markets:
            total += m.weight
            cum.append(total)
        self.cum = cum


def _day_str(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


# --------------------------------------------------------------------------------------------
# The simulator


class MarketSimulator:
    """Deterministic markets: snapshots on demand, events on :meth:`next_events`.

    ``markets`` may be :class:`Market` objects or plain code strings (``"KRW-BTC"``); unknown
    codes passed to the methods raise ``KeyError``. Markets advance only when
    :meth:`next_events` is asked for them; one nobody watches stays put and is brought up to date
    (a new UTC day, pending candle updates) when it is observed.
    """

    def __init__(
        self,
        markets: Sequence[Market] | Sequence[str],
        *,
        seed: int = 0,
        now_ms: int,
        tape: int = DEFAULT_TAPE,
    ) -> None:
        if tape < 0:
            raise ValueError("tape must be 0 (only the last trade) or more trades per market")
        known = {m.code: m for m in default_markets()}
        self._tape_len = tape
        self._seed = seed
        self._rng = random.Random(seed)
        self._rnd = self._rng.random
        self._bits = self._rng.getrandbits
        self._m: dict[str, _Mkt] = {}
        for index, item in enumerate(markets):
            if isinstance(item, Market):
                market = item
            else:
                code = str(item)
                quote, dash, base = code.partition("-")
                if not dash or not quote or not base or code != code.upper():
                    raise ValueError(f"market code {code!r} is not QUOTE-BASE in upper case")
                market = known.get(code) or Market(code, base, base, warning=False)
            if market.code in self._m:
                continue
            self._m[market.code] = self._new_market(market, index, now_ms)
        self._last_ts = now_ms
        self._last_sid = 0
        self._sched: dict[int, list[_Mkt]] = {}
        self._sel_cache: dict[frozenset[str], _Selection] = {}
        self._sel_last: tuple[Collection[str], _Selection] | None = None
        self._want_cache: dict[
            frozenset[str] | None, tuple[bool, bool, bool, tuple[bool, ...]]
        ] = {}
        self._tsec = -1
        self._tstr = ("", "", "", "")
        self._cstr: dict[int, tuple[str, str]] = {}

    # ---- public API ------------------------------------------------------------------------

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(self._m)

    def last_price(self, code: str) -> Decimal:
        m = self._m[code]
        return m.px(m.last_px)

    def best_prices(self, code: str) -> tuple[Decimal, Decimal]:
        """``(best_ask_price, best_bid_price)``; a missing side is ``Decimal(0)``."""
        m = self._m[code]
        return (m.px(m.asks[0].p) if m.asks else _ZERO, m.px(m.bids[0].p) if m.bids else _ZERO)

    def snapshot(
        self,
        type_: str,
        code: str,
        *,
        now_ms: int,
        depth: int = 30,
        level: int | Decimal | None = 0,
    ) -> dict[str, Any] | None:
        """The current payload of ``type_`` for ``code`` (what a SNAPSHOT frame carries)."""
        m = self._m[code]
        if type_ == "ticker":
            self._observe_day(m, now_ms)
            return self._ticker(m, now_ms)
        if type_ == "trade":
            return TRADE_ROW.payload(m.last_trade)
        if type_ == "orderbook":
            return self.orderbook(code, now_ms=now_ms, depth=depth, level=level)
        unit = CANDLE_UNIT_MS.get(type_)
        if unit is None:
            raise ValueError(f"no snapshot for data type {type_!r}")
        if m.f_on:
            self._apply_fold(m)
        i = CANDLE_TYPES.index(type_)
        return self._candle(m, i, m.candles[i])

    def orderbook(
        self, code: str, *, now_ms: int, depth: int = 30, level: int | Decimal | None = 0
    ) -> dict[str, Any]:
        """The book as an ``orderbook`` payload with ``depth`` units (zero-padded if thin).

        ``level`` groups KRW prices to multiples of ``level`` (asks up, bids down); other quotes
        ignore it and report ``level`` 0. ``timestamp`` is the time of the book's last change.
        """
        del now_ms  # the payload's timestamp is the book's own
        m = self._m[code]
        if depth < 1:
            raise ValueError(f"orderbook depth must be at least 1, not {depth}")
        level_units = int(Decimal(level) * _SCALE) if m.is_krw and level else 0
        if level and level_units > 0:
            return self._grouped_book(m, depth, level, level_units)
        return self._book(m, depth)

    def trades(self, code: str) -> list[tuple[Any, ...]]:
        """The market's remembered trades, oldest first, as :data:`TRADE_ROW` rows.

        Every trade the market made is remembered (the last ``tape`` of them, or as many as
        :meth:`keep_trades` said; without either, only the last trade), whether or not anyone
        received it: the same trades, with the same ``sequential_id``, as the streams carried.
        The list is a copy.
        """
        m = self._m[code]
        return list(m.tape) if m.tape is not None else [m.last_trade]

    def keep_trades(self, code: str, count: int) -> None:
        """Remember the last ``count`` trades of ``code`` (at least 1) from now on."""
        if count < 1:
            raise ValueError("keep at least 1 trade")
        m = self._m[code]
        m.tape = deque(m.tape if m.tape is not None else [m.last_trade], maxlen=count)

    def next_events(
        self,
        codes: Collection[str],
        *,
        now_ms: int,
        max_events: int,
        types: Collection[str] | None = None,
    ) -> list[SimEvent]:
        """Advance the markets in ``codes`` and return about ``max_events`` events.

        Per trade: ``trade``, ``ticker``, ``orderbook`` (30 units, level 0; at most every
        100 ms per market), then the trade's candle updates; candle updates held back earlier
        (the once-per-second rule) come first and count toward ``max_events``. All trades of
        one call carry ``now_ms`` as their time. ``types`` (optional) limits which event types
        are rendered and returned: markets still trade, but unwanted payloads are never built.
        Pass the same frozenset object while the watched set is unchanged: it is cached.
        """
        rows = self.next_rows(codes, now_ms=now_ms, max_events=max_events, types=types)
        return [(t, c, p if isinstance(p, dict) else ROW_SPECS[t].payload(p)) for t, c, p in rows]

    def next_rows(
        self,
        codes: Collection[str],
        *,
        now_ms: int,
        max_events: int,
        types: Collection[str] | None = None,
    ) -> list[RowEvent]:
        """:meth:`next_events` for renderers: the same events (the same market moves for the
        same calls), but ``trade`` and ``ticker`` payloads are rows (a tuple, see
        :data:`ROW_SPECS`) rather than dicts: ``ROW_SPECS[type].payload(row)`` is the dict
        :meth:`next_events` returns, and :func:`~upbit_fanout.emulator.protocol.render_row`
        writes it without making a Decimal. Other payloads are dicts, as in :meth:`next_events`.
        """
        sel = self._selection(codes)
        want = self._wanted(types)
        ts = now_ms if now_ms > self._last_ts else self._last_ts
        self._last_ts = ts
        out: list[RowEvent] = []
        if self._sched:
            self._flush(ts, sel.codes, out, want[3])
        if not sel.markets or max_events <= 0:
            return out
        strs = self._time_strings(ts)
        choices = self._rng.choices
        trades = 0  # also bounds the loop when the wanted types are rare (candles only)
        while len(out) < max_events and trades < max_events:
            k = min((max_events - len(out)) // 3 + 1, max_events - trades)
            trades += k
            self._trades(choices(sel.markets, cum_weights=sel.cum, k=k), ts, strs, out, want)
        return out

    # ---- construction ----------------------------------------------------------------------

    def _new_market(self, market: Market, index: int, now_ms: int) -> _Mkt:
        code = market.code
        rng = random.Random(f"{self._seed}/{code}")
        m = _Mkt()
        m.code = code
        m.code_j = orjson.dumps(code).decode()
        m.quote = market.quote
        m.grid = grid = _grid(code)
        m.is_krw = m.quote == "KRW"
        m.warning = "CAUTION" if market.warning else "NONE"
        m.seed = rng.getrandbits(32)
        m.pxc = {}
        m.pxt = {}
        m.tape = deque(maxlen=self._tape_len) if self._tape_len else None
        m.chg = {}
        m.chgt = {}
        real = market.base in KNOWN_BASES

        # price level, consistent across quotes
        krw = reference_krw_price(market.base)
        if m.quote == "KRW":
            price = krw
        elif m.quote == "BTC":
            price = max(krw / _KRW_PER_BTC, 1e-6 * rng.uniform(1.0, 4.0))
        elif m.quote == "USDT":
            price = krw / _KRW_PER_USDT
        else:
            price = krw / _KRW_PER_USDT * rng.uniform(0.5, 2.0)
        if code in ("KRW-USDT", "KRW-USDC"):
            price *= math.exp(rng.gauss(0, 0.002))
        else:
            price *= math.exp(rng.gauss(0, 0.03))
        mid = grid.snap_down(max(1, int(price * _SCALE)))
        m.anchor = float(mid)

        # activity
        weight = _TOP_WEIGHTS.get(code)
        if weight is None:
            quote_factor = {"KRW": 1.0, "USDT": 0.08, "BTC": 0.03}.get(m.quote, 0.05)
            base_w = rng.uniform(2.0, 10.0) if real else min(15.0, 0.05 * rng.paretovariate(1.1))
            weight = base_w * quote_factor
        m.weight = weight
        thin = not real and weight < 0.05 and rng.random() < 0.03
        m.gap = 2 if weight >= 20 else (3 if weight >= 1 else (8 if thin else 4))
        m.gap = max(1, min(m.gap, mid // grid.tick_at(mid) // 60))  # room for the bids
        m.spread = 1 if weight >= 20 else (2 if weight >= 1 else (10 if thin else 4))
        m.ta = rng.randint(2, 14) if thin else (40 if weight >= 1 else 32)
        m.tb = rng.randint(2, 14) if thin else m.ta
        notional = {"KRW": 80_000.0, "BTC": 0.0006, "USDT": 60.0}.get(m.quote, 60.0)
        notional *= rng.uniform(0.5, 2.0)
        m.trade_u = max(1, int(notional / (mid / _SCALE) * _SCALE))
        m.lvl_u = max(1, m.trade_u * 5)

        # book around mid
        m.asks = []
        m.bids = []
        bid = mid
        ask = grid.next_up(bid)
        for _ in range(rng.randint(0, 2) if weight < 20 else 0):
            ask = grid.next_up(ask)
        for _ in range(m.ta):
            self._push_level(m, ask, True, rng)
            for _ in range(1 + int(rng.random() * m.gap)):
                ask = grid.next_up(ask)
        for _ in range(m.tb):
            if bid <= 0:
                break
            self._push_level(m, bid, False, rng)
            for _ in range(1 + int(rng.random() * m.gap)):
                bid = grid.next_down(bid)
                if bid <= 0:
                    break
        m.burst = 0
        m.burst_bid = False
        m.units = None

        # the last trade and the day so far
        day_start = now_ms - now_ms % _DAY_MS
        m.day_end = day_start + _DAY_MS
        mean_gap_ms = min(6 * 3_600_000.0, 1_500.0 / weight)
        ts0 = max(0, now_ms - 1 - int(rng.expovariate(1.0 / mean_gap_ms)))
        bid_side = rng.random() < 0.5
        bid_side = bid_side or not m.bids
        top = m.asks[0] if bid_side else m.bids[0]
        px = top.p
        vol = max(1, (m.trade_u * _MULT[rng.getrandbits(12)]) >> 10)
        top.s = max(top.s, vol + 1)
        top.st = _size_text(top.s)
        m.bts = ts0
        m.book_sent = ts0
        m.last_px = px
        trades_per_day = weight * 3_000.0
        daily = int(trades_per_day * m.trade_u * 2.3)
        elapsed = (now_ms - day_start) / _DAY_MS
        if ts0 >= day_start:
            m.fresh_day = False
            m.pcp = grid.snap_down(int(px * math.exp(rng.gauss(0, 0.025))))
            m.open = grid.snap_down(int(m.pcp * math.exp(rng.gauss(0, 0.003))))
            hi = int(max(m.open, px) * (1 + abs(rng.gauss(0, 0.012))))
            lo = int(min(m.open, px) * (1 - abs(rng.gauss(0, 0.012))))
            m.high = max(grid.snap_up(hi), m.open, px)
            m.low = min(grid.snap_down(max(1, lo)), m.open, px)
            m.acc_vol = max(vol, int(daily * elapsed * rng.uniform(0.7, 1.3)))
        else:
            m.fresh_day = True
            m.pcp = m.open = m.high = m.low = px
            m.acc_vol = 0
        m.acc_amt = m.acc_vol * px
        m.acc_bid = int(m.acc_vol * rng.uniform(0.4, 0.6))
        m.acc_ask = m.acc_vol - m.acc_bid
        m.ask_t = m.bid_t = (-1, "")
        if m.acc_vol and bid_side and m.acc_bid < vol:
            m.acc_bid, m.acc_ask = vol, m.acc_vol - vol
        elif m.acc_vol and not bid_side and m.acc_ask < vol:
            m.acc_ask, m.acc_bid = vol, m.acc_vol - vol
        m.carry_vol = int(daily * rng.uniform(0.4, 0.6))
        m.carry_amt = m.carry_vol * px
        m.pcp_t = m.pt(m.pcp)

        # 52 weeks
        m.h52 = max(m.high, grid.snap_up(int(px * rng.uniform(1.15, 2.6))))
        m.l52 = min(m.low, grid.snap_down(max(1, int(px * rng.uniform(0.25, 0.85)))))
        m.h52_date = _day_str(day_start - rng.randint(1, 360) * _DAY_MS)
        m.l52_date = _day_str(day_start - rng.randint(1, 360) * _DAY_MS)
        if not m.fresh_day:  # an extreme set today is dated today
            if m.h52 == m.high:
                m.h52_date = _day_str(day_start)
            if m.l52 == m.low:
                m.l52_date = _day_str(day_start)
        m.open_t, m.high_t, m.low_t = m.pt(m.open), m.pt(m.high), m.pt(m.low)
        m.h52_t, m.l52_t = m.pt(m.h52), m.pt(m.l52)
        m.p_buy = 0.5 - _REVERSION * (px - m.anchor) / m.anchor

        d, t = time.strftime("%Y-%m-%d|%H:%M:%S", time.gmtime(ts0 // 1000)).split("|")
        chg, cp, _, _, _ = self._change_text(m, px)
        b0 = m.bids[0] if m.bids else _NIL
        m.last_trade = (
            m.code_j,
            ts0,
            d,
            t,
            ts0,
            m.pt(px),
            _size_text(vol),
            "BID" if bid_side else "ASK",
            m.pcp_t,
            chg,
            cp,
            ts0 * 10_000 + index % 10_000,
            m.asks[0].pt,
            m.asks[0].st,
            b0.pt,
            b0.st,
        )
        if m.tape is not None:
            m.tape.append(m.last_trade)
        m.candles = [_Candle(ts0 - ts0 % ms, px, vol, ts0) for _, ms in _UNITS]
        m.csec = ts0 // 1000
        m.f_on = False
        m.f_o = m.f_h = m.f_l = m.f_vol0 = m.f_amt0 = 0
        m.sched = False
        return m

    @staticmethod
    def _push_level(m: _Mkt, price: int, ask: bool, rng: random.Random) -> None:
        size = max(1, (m.lvl_u * _MULT[rng.getrandbits(12)]) >> 10)
        (m.asks if ask else m.bids).append(_Lvl(price, size, m.pt(price), _size_text(size)))

    # ---- helpers ---------------------------------------------------------------------------

    def _selection(self, codes: Collection[str]) -> _Selection:
        last = self._sel_last
        if last is not None and last[0] is codes and isinstance(codes, (frozenset, tuple)):
            return last[1]
        key = frozenset(codes)
        sel = self._sel_cache.get(key)
        if sel is None:
            markets = [self._m[c] for c in sorted(key)]  # KeyError for unknown codes
            if len(self._sel_cache) >= 32:
                self._sel_cache.clear()
            sel = self._sel_cache[key] = _Selection(markets)
        self._sel_last = (codes, sel)
        return sel

    def _wanted(self, types: Collection[str] | None) -> tuple[bool, bool, bool, tuple[bool, ...]]:
        key = None if types is None else frozenset(types)
        hit = self._want_cache.get(key)
        if hit is None:
            want = _ALL_TYPES if key is None else key
            unknown = set(want) - _ALL_TYPES
            if unknown:
                raise ValueError(f"unknown data types {sorted(unknown)}")
            hit = (
                "trade" in want,
                "ticker" in want,
                "orderbook" in want,
                tuple(t in want for t in CANDLE_TYPES),
            )
            self._want_cache[key] = hit
        return hit

    def _time_strings(self, ts: int) -> tuple[str, str, str, str]:
        sec = ts // 1000
        if sec != self._tsec:
            self._tsec = sec
            d, t = time.strftime("%Y-%m-%d|%H:%M:%S", time.gmtime(sec)).split("|")
            self._tstr = (d, t, d.replace("-", ""), t.replace(":", ""))
        return self._tstr

    def _change(self, m: _Mkt, p: int) -> tuple[str, Decimal, Decimal, Decimal, Decimal]:
        hit = m.chg.get(p)
        if hit is None:
            pcp = m.pcp
            diff = p - pcp
            if len(m.chg) > 4096:
                m.chg.clear()
            if diff == 0:
                hit = ("EVEN", _ZERO, _ZERO, _ZERO, _ZERO)
            else:
                mag = abs(diff)
                rate = (mag * 20_000_000_000 + pcp) // (2 * pcp)  # half-up, 10 decimals
                grid = m.grid
                cp = grid.fmt(mag, max(grid.places(p), grid.places(pcp)))
                cr = Decimal(rate) * _E10 if rate else _ZERO
                hit = ("RISE", cp, cp, cr, cr) if diff > 0 else ("FALL", cp, -cp, cr, -cr)
            m.chg[p] = hit
        return hit

    def _change_text(self, m: _Mkt, p: int) -> tuple[str, str, str, str, str]:
        """:meth:`_change` with the numbers as text; cached."""
        hit = m.chgt.get(p)
        if hit is None:
            chg, cp, scp, cr, scr = self._change(m, p)
            if len(m.chgt) > 4096:
                m.chgt.clear()
            hit = m.chgt[p] = (chg, str(cp), str(scp), str(cr), str(scr))
        return hit

    def _observe_day(self, m: _Mkt, now_ms: int) -> None:
        if now_ms >= m.day_end:
            self._roll_day(m, now_ms)

    def _roll_day(self, m: _Mkt, ts: int) -> None:
        if m.f_on:  # the fold is measured on the day's accumulators
            self._apply_fold(m)
        day_start = ts - ts % _DAY_MS
        if day_start == m.day_end:  # the previous day had our statistics: half carries on
            m.carry_vol = m.acc_vol // 2
            m.carry_amt = m.acc_amt // 2
        else:
            m.carry_vol = m.carry_amt = 0
        m.day_end = day_start + _DAY_MS
        m.pcp = m.open = m.high = m.low = m.last_px
        m.pcp_t = m.open_t = m.high_t = m.low_t = m.pt(m.pcp)
        m.acc_vol = m.acc_amt = m.acc_ask = m.acc_bid = 0
        m.fresh_day = True
        m.chg.clear()
        m.chgt.clear()

    # ---- payloads --------------------------------------------------------------------------

    def _ticker(self, m: _Mkt, now_ms: int) -> dict[str, Any]:
        lt = m.last_trade
        p = m.last_px
        chg, cp, scp, cr, scr = self._change(m, p)
        tdate: str = lt[_TR_DATE]
        ttime: str = lt[_TR_TIME]
        px = m.px
        return {
            "type": "ticker",
            "code": m.code,
            "opening_price": px(m.open),
            "high_price": px(m.high),
            "low_price": px(m.low),
            "trade_price": px(p),
            "prev_closing_price": px(m.pcp),
            "change": chg,
            "change_price": cp,
            "signed_change_price": scp,
            "change_rate": cr,
            "signed_change_rate": scr,
            "trade_volume": Decimal(lt[_TR_VOLUME]),
            "acc_trade_volume": _size(m.acc_vol),
            "acc_trade_volume_24h": _size(m.acc_vol + m.carry_vol),
            "acc_trade_price": _amount(m.acc_amt),
            "acc_trade_price_24h": _amount(m.acc_amt + m.carry_amt),
            "trade_date": tdate.replace("-", ""),
            "trade_time": ttime.replace(":", ""),
            "trade_timestamp": lt[_TR_TS],
            "ask_bid": lt[_TR_SIDE],
            "acc_ask_volume": _size(m.acc_ask),
            "acc_bid_volume": _size(m.acc_bid),
            "highest_52_week_price": px(m.h52),
            "highest_52_week_date": m.h52_date,
            "lowest_52_week_price": px(m.l52),
            "lowest_52_week_date": m.l52_date,
            "market_state": "ACTIVE",
            "is_trading_suspended": False,
            "delisting_date": None,
            "market_warning": m.warning,
            "timestamp": now_ms,
        }

    def _candle(self, m: _Mkt, i: int, c: _Candle) -> dict[str, Any]:
        names = self._cstr.get(c.start)
        if names is None:
            if len(self._cstr) > 65_536:
                self._cstr.clear()
            names = self._cstr[c.start] = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(c.start // 1000)),
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((c.start + _KST_MS) // 1000)),
            )
        pxc = m.pxc
        vol = c.vol
        amt = c.amt
        return {
            "type": _UNITS[i][0],
            "code": m.code,
            "candle_date_time_utc": names[0],
            "candle_date_time_kst": names[1],
            "opening_price": pxc.get(c.o) or m.px(c.o),
            "high_price": pxc.get(c.h) or m.px(c.h),
            "low_price": pxc.get(c.l) or m.px(c.l),
            "trade_price": pxc.get(c.c) or m.px(c.c),
            "candle_acc_trade_volume": Decimal(vol) * _E8 if vol else _ZERO,
            "candle_acc_trade_price": Decimal(amt).scaleb(-16, _WIDE) if amt else _ZERO,
            "timestamp": c.ts,
        }

    def _book(self, m: _Mkt, depth: int) -> dict[str, Any]:
        return ORDERBOOK_ROW.payload(self._book_row(m, depth))

    def _book_row(self, m: _Mkt, depth: int) -> tuple[Any, ...]:
        """The level-0 book with ``depth`` units as an ORDERBOOK_ROW row."""
        a0 = m.asks[0] if m.asks else _NIL
        b0 = m.bids[0] if m.bids else _NIL
        first = (a0.pt, b0.pt, a0.st, b0.st)
        cache = m.units if depth == _DEPTH else None
        if cache is not None and cache[0] is a0 and cache[1] is b0:
            # Only the best sizes changed since the last full book (partial fills): reuse the
            # other 29 units and their written text.
            _, _, a0s, b0s, total_ask, total_bid, old = cache
            total_ask -= a0s - a0.s
            total_bid -= b0s - b0.s
            units = BookUnits(first, old.rest, old.rest_text)
        else:
            asks = m.asks[:depth]
            bids = m.bids[:depth]
            if len(asks) < depth:
                asks += [_NIL] * (depth - len(asks))
            if len(bids) < depth:
                bids += [_NIL] * (depth - len(bids))
            rest = tuple(
                [(a.pt, b.pt, a.st, b.st) for a, b in zip(asks[1:], bids[1:], strict=True)]
            )
            units = BookUnits(first, rest)
            total_ask = sum([a.s for a in asks])
            total_bid = sum([b.s for b in bids])
        if depth == _DEPTH:
            m.units = (a0, b0, a0.s, b0.s, total_ask, total_bid, units)
        return (m.code_j, m.bts, _size_text(total_ask), _size_text(total_bid), units)

    def _grouped_book(self, m: _Mkt, depth: int, level: int | Decimal, lu: int) -> dict[str, Any]:
        """The book with KRW prices grouped to multiples of ``lu`` units (asks up, bids down).

        Groups beyond the stored levels are synthesised deterministically from the book's state.
        """
        rng = random.Random(m.seed * 1_000_003 + m.bts)
        per_group = max(1, min(50, lu // max(1, m.grid.tick_at(m.last_px) * m.gap)))

        def groups(side: list[_Lvl], ask: bool) -> list[tuple[int, int]]:
            out: list[tuple[int, int]] = []
            for lvl in side:
                p = lvl.p
                g = -(-p // lu) * lu if ask else p // lu * lu
                if g <= 0:
                    break
                if out and out[-1][0] == g:
                    out[-1] = (g, out[-1][1] + lvl.s)
                else:
                    if len(out) == depth:
                        break
                    out.append((g, lvl.s))
            while 0 < len(out) < depth:
                g = out[-1][0] + lu if ask else out[-1][0] - lu
                if g <= 0:
                    break
                k = 1 + int(rng.random() * per_group)
                s = sum((m.lvl_u * _MULT[rng.getrandbits(12)]) >> 10 for _ in range(k))
                out.append((g, max(1, s)))
            return out

        # asks round up and bids round down, so the best ask group stays above the best bid
        asks = groups(m.asks, True)
        bids = groups(m.bids, False)
        px = m.px
        units = []
        for i in range(depth):
            a = asks[i] if i < len(asks) else (0, 0)
            b = bids[i] if i < len(bids) else (0, 0)
            units.append(
                {
                    "ask_price": px(a[0]),
                    "bid_price": px(b[0]),
                    "ask_size": _size(a[1]),
                    "bid_size": _size(b[1]),
                }
            )
        return {
            "type": "orderbook",
            "code": m.code,
            "timestamp": m.bts,
            "total_ask_size": _size(sum(s for _, s in asks)),
            "total_bid_size": _size(sum(s for _, s in bids)),
            "orderbook_units": units,
            "level": level,
        }

    # ---- candles ---------------------------------------------------------------------------

    def _apply_fold(self, m: _Mkt) -> None:
        """Merge the trades held back in second ``m.csec`` into every unit's candle.

        The fold keeps only what it cannot derive: its open and its high/low (updated when the
        price moves). Its volume and amount are the ticker's accumulators minus their values when
        the fold began, its close is the last price and its time the last trade's; so a held-back
        trade costs almost nothing. Call it before the accumulators move on (a new trade's
        statistics, a new day).
        """
        ts = m.bts
        vol = m.acc_vol - m.f_vol0
        amt = m.acc_amt - m.f_amt0
        close = m.last_px
        f_h = m.f_h
        f_l = m.f_l
        for c, (_, ms) in zip(m.candles, _UNITS, strict=True):
            b = ts - ts % ms
            if b != c.start:
                c.start = b
                c.o = m.f_o
                c.h = f_h
                c.l = f_l
                c.vol = vol
                c.amt = amt
            else:
                c.h = max(c.h, f_h)
                c.l = min(c.l, f_l)
                c.vol += vol
                c.amt += amt
            c.c = close
            c.ts = ts
            c.dirty = True
        m.f_on = False

    def _schedule(self, m: _Mkt) -> None:
        if not m.sched:
            m.sched = True
            bucket = self._sched.get(m.csec)
            if bucket is None:
                self._sched[m.csec] = [m]
            else:
                bucket.append(m)

    def _flush(
        self, ts: int, watched: frozenset[str], out: list[RowEvent], want: tuple[bool, ...]
    ) -> None:
        sec = ts // 1000
        due = [s for s in self._sched if s < sec]
        for s in sorted(due):
            for m in self._sched.pop(s):
                m.sched = False
                if m.code not in watched:
                    continue  # stays dirty; sent with its next trade, or seen in a snapshot
                if sec <= m.csec:  # sent something since it was scheduled
                    self._schedule(m)
                    continue
                if m.f_on:
                    self._apply_fold(m)
                sent = False
                for i, c in enumerate(m.candles):
                    if c.dirty:
                        c.dirty = False
                        sent = True
                        if want[i]:
                            out.append((_UNITS[i][0], m.code, self._candle(m, i, c)))
                if sent:
                    m.csec = sec

    # ---- the trade step --------------------------------------------------------------------

    def _trades(
        self,
        markets: list[_Mkt],
        ts: int,
        strs: tuple[str, str, str, str],
        out: list[RowEvent],
        want: tuple[bool, bool, bool, tuple[bool, ...]],
    ) -> None:
        """One trade on each of ``markets`` (in order) at ``ts``; appends the events ``want``
        (trade, ticker, book, candles per unit) asks for. One loop rather than a call per trade:
        this is the hot path."""
        want_trade, want_ticker, want_book, want_candles = want
        rnd = self._rnd
        bits = self._bits
        sec = ts // 1000
        last_sid = self._last_sid
        for m in markets:
            if ts >= m.day_end:
                self._roll_day(m, ts)

            # which side takes, and how much
            if m.burst:
                m.burst -= 1
                buy = m.burst_bid
                sweep = True
            else:
                r = rnd()
                buy = r < m.p_buy
                sweep = False
                if r < _P_BURST or r > 1.0 - _P_BURST:  # rare: start a sweep in this direction
                    m.burst = 4 + int(rnd() * 20)
                    m.burst_bid = buy
            asks = m.asks
            bids = m.bids
            if not bids:
                buy = True
            size = (m.trade_u * _MULT[bits(12)]) >> 10 or 1

            if buy:  # a buyer takes the best ask
                top = asks[0]
                px = top.p
                pxt = top.pt
                avail = top.s
                if sweep or size >= avail:
                    vol = avail
                    del asks[0]
                    m.units = None
                    if len(asks) < m.ta:
                        self._append(m, True, asks[-1].p if asks else px)
                    r = rnd()
                    if r < _P_FOLLOW:  # a bid steps up behind the move
                        self._insert(m, False, m.grid.next_down(asks[0].p))
                    elif r < _P_FOLLOW + _P_REFILL and not sweep:  # the level refills
                        self._insert(m, True, px)
                    else:
                        self._tighten(m)
                else:
                    vol = size
                    top.s = left = avail - size
                    top.st = f"0.{left:08d}" if 100 <= left < 100_000_000 else _size_text(left)
            else:  # a seller hits the best bid
                top = bids[0]
                px = top.p
                pxt = top.pt
                avail = top.s
                if sweep or size >= avail:
                    vol = avail
                    del bids[0]
                    m.units = None
                    if len(bids) < m.tb:
                        self._append(m, False, bids[-1].p if bids else px)
                    r = rnd()
                    if r < _P_FOLLOW:  # an ask steps down behind the move
                        self._insert(m, True, m.grid.next_up(bids[0].p) if bids else px)
                    elif r < _P_FOLLOW + _P_REFILL and not sweep:
                        self._insert(m, False, px)
                    else:
                        self._tighten(m)
                else:
                    vol = size
                    top.s = left = avail - size
                    top.st = f"0.{left:08d}" if 100 <= left < 100_000_000 else _size_text(left)
            amt = px * vol

            # candles: fold into the held-back second, or (first trade of a new second) update and
            # render them now, to be sent after this trade's other events
            candles: list[SimEvent] | None = None
            if sec <= m.csec:
                if not m.f_on:
                    m.f_on = True
                    m.f_o = m.f_h = m.f_l = px
                    m.f_vol0 = m.acc_vol
                    m.f_amt0 = m.acc_amt
                    self._schedule(m)
            else:
                candles = self._candles_after(m, px, vol, amt, ts=ts, want=want_candles)

            # the day's statistics
            m.bts = ts
            if px != m.last_px:
                m.last_px = px
                m.p_buy = 0.5 - _REVERSION * (px - m.anchor) / m.anchor
                if m.f_on:
                    if px > m.f_h:
                        m.f_h = px
                    elif px < m.f_l:
                        m.f_l = px
                # keep the ticker template (see below) in step with the day's extremes
                if m.fresh_day:
                    m.fresh_day = False
                    m.open = m.high = m.low = px
                    m.open_t = m.high_t = m.low_t = pxt
                elif px > m.high:
                    m.high = px
                    m.high_t = pxt
                elif px < m.low:
                    m.low = px
                    m.low_t = pxt
                if px > m.h52:
                    m.h52 = px
                    m.h52_t = pxt
                    m.h52_date = strs[0]
                elif px < m.l52:
                    m.l52 = px
                    m.l52_t = pxt
                    m.l52_date = strs[0]
            elif m.fresh_day:
                m.fresh_day = False
            m.acc_vol += vol
            m.acc_amt += amt
            if buy:
                m.acc_bid += vol
            else:
                m.acc_ask += vol

            # sequential id: trade_timestamp * 10000 + a counter (as Upbit's current ids look)
            sid = ts * 10_000
            if sid <= last_sid:
                sid = last_sid + 1
            last_sid = sid
            chg, cp, scp, cr, scr = m.chgt.get(px) or self._change_text(m, px)
            volt = f"0.{vol:08d}" if 100 <= vol < 100_000_000 else _size_text(vol)
            code = m.code
            code_j = m.code_j
            a0 = asks[0]
            b0 = bids[0] if bids else _NIL
            side = "BID" if buy else "ASK"
            # rows of texts (TRADE_ROW, TICKER_ROW): rendered by template, no Decimal made
            trade = (
                code_j,
                ts,
                strs[0],
                strs[1],
                ts,
                pxt,
                volt,
                side,
                m.pcp_t,
                chg,
                cp,
                sid,
                a0.pt,
                a0.st,
                b0.pt,
                b0.st,
            )
            m.last_trade = trade
            if m.tape is not None:
                m.tape.append(trade)
            if want_trade:
                out.append(("trade", code, trade))
            if want_ticker:
                # the number texts, inlined for the usual magnitudes (see _size_text and
                # _amount_text); only one side's volume moved, the other's text is kept
                acc_vol = m.acc_vol
                n = acc_vol + m.carry_vol
                if 100_000_000 <= n < _SIZE_EXACT:
                    t = str(acc_vol)
                    vol_t = t[:-8] + "." + t[-8:] if acc_vol >= 100_000_000 else _size_text(acc_vol)
                    t = str(n)
                    vol24_t = t[:-8] + "." + t[-8:]
                else:
                    vol_t = _size_text(acc_vol)
                    vol24_t = _size_text(n)
                acc_amt = m.acc_amt
                n = acc_amt + m.carry_amt
                t = str(acc_amt)
                if acc_amt >= 10_000_000_000_000_000 and len(t) <= 80:
                    amt_t = t[:-16] + "." + t[-16:]
                else:
                    amt_t = _amount_text(acc_amt)
                t = str(n)
                amt24_t = (
                    t[:-16] + "." + t[-16:] if len(t) > 16 and len(t) <= 80 else _amount_text(n)
                )
                side_v = m.acc_ask
                ask_t = m.ask_t
                if ask_t[0] != side_v:
                    ask_t = m.ask_t = (side_v, _size_text(side_v))
                side_v = m.acc_bid
                bid_t = m.bid_t
                if bid_t[0] != side_v:
                    bid_t = m.bid_t = (side_v, _size_text(side_v))
                out.append(
                    (
                        "ticker",
                        code,
                        (
                            code_j,
                            m.open_t,
                            m.high_t,
                            m.low_t,
                            pxt,
                            m.pcp_t,
                            chg,
                            cp,
                            scp,
                            cr,
                            scr,
                            volt,
                            vol_t,
                            vol24_t,
                            amt_t,
                            amt24_t,
                            strs[2],
                            strs[3],
                            ts,
                            side,
                            ask_t[1],
                            bid_t[1],
                            m.h52_t,
                            m.h52_date,
                            m.l52_t,
                            m.l52_date,
                            m.warning,
                            ts,
                        ),
                    )
                )
            if want_book and ts - m.book_sent >= _BOOK_EVERY_MS:
                m.book_sent = ts
                out.append(("orderbook", code, self._book_row(m, _DEPTH)))

            if candles:
                out += candles
        self._last_sid = last_sid

    def _candles_after(
        self,
        m: _Mkt,
        px: int,
        vol: int,
        amt: int,
        *,
        ts: int,
        want: tuple[bool, ...],
    ) -> list[SimEvent]:
        """The first trade of a new second: update every unit's candle, render the updates."""
        if m.f_on:
            self._apply_fold(m)
        code = m.code
        out: list[SimEvent] = []
        pending = False
        for i, c in enumerate(m.candles):
            ms = _UNITS[i][1]
            b = ts - ts % ms
            if b != c.start:
                if c.dirty:  # the closed bucket's last trades were never sent: send them now
                    if want[i]:
                        out.append((_UNITS[i][0], code, self._candle(m, i, c)))
                    c.start = b
                    c.o = c.h = c.l = c.c = px
                    c.vol = vol
                    c.amt = amt
                    c.ts = ts
                    pending = True  # c stays dirty: the new bucket goes out next second
                    continue
                c.start = b
                c.o = c.h = c.l = c.c = px
                c.vol = vol
                c.amt = amt
            else:
                if px > c.h:
                    c.h = px
                elif px < c.l:
                    c.l = px
                c.c = px
                c.vol += vol
                c.amt += amt
            c.ts = ts
            c.dirty = False
            if want[i]:
                out.append((_UNITS[i][0], code, self._candle(m, i, c)))
        m.csec = ts // 1000
        if pending:
            self._schedule(m)
        return out

    def _append(self, m: _Mkt, ask: bool, after: int) -> None:
        """Add a level behind the last one (``after`` is the current last price)."""
        grid = m.grid
        p = after
        for _ in range(1 + int(self._rnd() * m.gap)):
            q = grid.next_up(p) if ask else grid.next_down(p)
            if q <= 0:
                break
            p = q
        if p == after:
            return
        size = (m.lvl_u * _MULT[self._bits(12)]) >> 10 or 1
        lvl = _Lvl(p, size, m.pxt.get(p) or m.pt(p), _size_text(size))
        side = m.asks if ask else m.bids
        if len(side) < _DEPTH:
            m.units = None
        side.append(lvl)

    def _tighten(self, m: _Mkt) -> None:
        """Market makers step in when the spread is wider than the market's usual one."""
        asks = m.asks
        bids = m.bids
        if not bids:
            return
        a = asks[0].p
        b = bids[0].p
        if a - b > m.spread * m.grid.tick_at(b):
            if self._rnd() < 0.5:
                self._insert(m, False, m.grid.next_down(a - (m.spread - 1) * m.grid.tick_at(b)))
            else:
                self._insert(m, True, m.grid.next_up(b + (m.spread - 1) * m.grid.tick_at(b)))

    def _insert(self, m: _Mkt, ask: bool, price: int) -> None:
        """Add a new best level at ``price`` if it lies strictly inside the spread."""
        asks = m.asks
        bids = m.bids
        if price <= 0 or (asks and price >= asks[0].p) or (bids and price <= bids[0].p):
            return
        size = (m.lvl_u * _MULT[self._bits(12)]) >> 10 or 1
        lvl = _Lvl(price, size, m.pxt.get(price) or m.pt(price), _size_text(size))
        m.units = None
        if ask:
            asks.insert(0, lvl)
            if len(asks) > m.ta + 6:
                del asks[-1]
        else:
            bids.insert(0, lvl)
            if len(bids) > m.tb + 6:
                del bids[-1]


def orderbook_at_depth(payload: dict[str, Any], depth: int) -> dict[str, Any]:
    """A copy of an ``orderbook`` payload cut to its first ``depth`` units, totals recomputed."""
    units = payload["orderbook_units"][:depth]
    out = dict(payload)
    out["orderbook_units"] = units
    out["total_ask_size"] = sum((u["ask_size"] for u in units), _ZERO)
    out["total_bid_size"] = sum((u["bid_size"] for u in units), _ZERO)
    return out
