"""One simulated market's state: its book, its last trade, its day, its 52 weeks, its candles.

Pure: no clock, no shared random generator. :func:`new_market_state` builds a market from its own
seed (the simulator's seed and the code), so a market starts the same whatever else is simulated.
Prices and sizes are integers in 1e-8 units, amounts (price x size) in 1e-16 units
(:mod:`emulator.fixedpoint`); the attributes named after an Upbit field hold that field's value in
those units, the ``*_text`` ones its number text as the payloads write it.

The state is changed by the simulator's trade step (:mod:`emulator.simulation`), the book by
:class:`~upbit_fanout.emulator.book.OrderBook`'s methods; here are the parts that need no random
draw: the day's roll (:meth:`MarketState.roll_day`), the change against the previous close
(:meth:`MarketState.change_at`) and the candle fold (:meth:`MarketState.apply_fold`).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from decimal import Decimal
from typing import Any, Final

import orjson

from upbit_fanout.emulator.book import EMPTY_LEVEL, OrderBook, draw_size
from upbit_fanout.emulator.fixedpoint import E10, SCALE, ZERO, size_text
from upbit_fanout.emulator.markets import KNOWN_BASES, Market, reference_krw_price
from upbit_fanout.emulator.ticks import grid_for
from upbit_fanout.subscriptions.upbit_fields import CANDLE_TYPES

__all__ = [
    "CANDLE_UNITS",
    "CANDLE_UNIT_MS",
    "DAY_MS",
    "REVERSION",
    "Candle",
    "Change",
    "ChangeText",
    "MarketState",
    "buy_probability",
    "new_market_state",
]

DAY_MS: Final = 86_400_000
REVERSION: Final = 2.0
"""Pull toward the anchor price: P(buy) = 0.5 - REVERSION * relative deviation."""

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
CANDLE_UNITS: Final = tuple((t, CANDLE_UNIT_MS[t]) for t in CANDLE_TYPES)
"""``(candle type, bucket ms)`` in the order of ``CANDLE_TYPES``: a market's candles, by index."""

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

Change = tuple[str, Decimal, Decimal, Decimal, Decimal]
"""``(change, change_price, signed_change_price, change_rate, signed_change_rate)``."""
ChangeText = tuple[str, str, str, str, str]
"""A :data:`Change` with its numbers as text."""


class Candle:
    """One unit's open candle: its bucket start, OHLC prices, volume and amount, last trade time."""

    __slots__ = (
        "acc_trade_price",
        "acc_trade_volume",
        "high_price",
        "low_price",
        "opening_price",
        "start_ms",
        "timestamp",
        "trade_price",
        "unsent",
    )

    def __init__(self, start_ms: int, price: int, volume: int, timestamp: int) -> None:
        self.start_ms = start_ms
        self.opening_price = self.high_price = self.low_price = self.trade_price = price
        self.acc_trade_volume = volume
        self.acc_trade_price = price * volume  # the amount, in 1e-16 units
        self.timestamp = timestamp
        self.unsent = False  # changed since it was last sent


def buy_probability(price: int, anchor_price: float) -> float:
    """The chance that the next taker buys at ``price``: mean reversion toward the anchor."""
    return 0.5 - REVERSION * (price - anchor_price) / anchor_price


def day_text(ms: int) -> str:
    """The UTC date of ``ms`` as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


class MarketState(OrderBook):
    """One market's state. Plain slots: the trade loop touches these a lot."""

    __slots__ = (
        "acc_ask_volume",
        "acc_ask_volume_text",
        "acc_bid_volume",
        "acc_bid_volume_text",
        "acc_trade_price",
        "acc_trade_volume",
        "activity_weight",
        "anchor_price",
        "book_sent_ms",
        "burst_is_buy",
        "burst_left",
        "buy_probability",
        "candle_second",
        "candles",
        "candles_scheduled",
        "carried_trade_price_24h",
        "carried_trade_volume_24h",
        "change_cache",
        "change_text_cache",
        "code",
        "code_json",
        "day_end_ms",
        "fold_active",
        "fold_high_price",
        "fold_low_price",
        "fold_opening_price",
        "fold_start_acc_trade_price",
        "fold_start_acc_trade_volume",
        "high_price",
        "high_price_text",
        "highest_52_week_date",
        "highest_52_week_price",
        "highest_52_week_price_text",
        "is_krw",
        "last_trade",
        "low_price",
        "low_price_text",
        "lowest_52_week_date",
        "lowest_52_week_price",
        "lowest_52_week_price_text",
        "market_warning",
        "no_trade_today",
        "opening_price",
        "opening_price_text",
        "prev_closing_price",
        "prev_closing_price_text",
        "quote",
        "tape",
        "trade_price",
        "trade_size",
    )

    code: str
    code_json: str  # the code as a JSON token
    quote: str
    is_krw: bool
    market_warning: str  # "CAUTION" or "NONE"
    activity_weight: float  # relative trade rate
    anchor_price: float  # the price the market reverts to
    trade_size: int  # the usual size of a taker order, in units
    buy_probability: float  # the chance the next taker buys (see buy_probability())
    burst_left: int  # trades left in the current sweep (0: none)
    burst_is_buy: bool  # the sweep's direction (buyers take the asks)
    book_sent_ms: int  # when the book was last sent in an orderbook event
    # the change against prev_closing_price per price, as Decimals and as text (bounded caches)
    change_cache: dict[int, Change]
    change_text_cache: dict[int, ChangeText]
    # the day (00:00 UTC): its end, and whether no trade happened yet (the open is the next one)
    day_end_ms: int
    no_trade_today: bool
    prev_closing_price: int
    prev_closing_price_text: str
    opening_price: int
    opening_price_text: str
    high_price: int
    high_price_text: str
    low_price: int
    low_price_text: str
    trade_price: int  # the last trade's price
    acc_trade_volume: int  # today's volume, units
    acc_trade_price: int  # today's amount, 1e-16 units
    acc_ask_volume: int
    acc_bid_volume: int
    # (acc_ask_volume, its text) as the ticker last wrote it; likewise for the bids
    acc_ask_volume_text: tuple[int, str]
    acc_bid_volume_text: tuple[int, str]
    # the previous day's share of acc_trade_volume_24h and acc_trade_price_24h
    carried_trade_volume_24h: int
    carried_trade_price_24h: int
    highest_52_week_price: int
    highest_52_week_price_text: str
    highest_52_week_date: str
    lowest_52_week_price: int
    lowest_52_week_price_text: str
    lowest_52_week_date: str
    last_trade: tuple[Any, ...]  # a TRADE_ROW row
    tape: deque[tuple[Any, ...]] | None  # the latest trades (TRADE_ROW rows), oldest first
    candles: list[Candle]  # one per CANDLE_UNITS entry
    candle_second: int  # the second (epoch s) of the last candle update sent or held back
    candles_scheduled: bool  # on the simulator's schedule of held-back candle updates
    # the fold: trades held back in second ``candle_second`` (see apply_fold)
    fold_active: bool
    fold_opening_price: int
    fold_high_price: int
    fold_low_price: int
    fold_start_acc_trade_volume: int
    fold_start_acc_trade_price: int

    def change_at(self, price: int) -> Change:
        """The change of ``price`` against the previous close (rate rounded half-up to 10
        decimals); cached."""
        hit = self.change_cache.get(price)
        if hit is None:
            prev = self.prev_closing_price
            diff = price - prev
            if len(self.change_cache) > 4096:
                self.change_cache.clear()
            if diff == 0:
                hit = ("EVEN", ZERO, ZERO, ZERO, ZERO)
            else:
                magnitude = abs(diff)
                rate = (magnitude * 20_000_000_000 + prev) // (2 * prev)  # half-up, 10 decimals
                grid = self.grid
                change_price = grid.fmt(magnitude, max(grid.places(price), grid.places(prev)))
                change_rate = Decimal(rate) * E10 if rate else ZERO
                if diff > 0:
                    hit = ("RISE", change_price, change_price, change_rate, change_rate)
                else:
                    hit = ("FALL", change_price, -change_price, change_rate, -change_rate)
            self.change_cache[price] = hit
        return hit

    def change_text_at(self, price: int) -> ChangeText:
        """:meth:`change_at` with the numbers as text; cached."""
        hit = self.change_text_cache.get(price)
        if hit is None:
            change, change_price, signed_price, rate, signed_rate = self.change_at(price)
            if len(self.change_text_cache) > 4096:
                self.change_text_cache.clear()
            hit = self.change_text_cache[price] = (
                change,
                str(change_price),
                str(signed_price),
                str(rate),
                str(signed_rate),
            )
        return hit

    def roll_day(self, ts: int) -> None:
        """Start the UTC day of ``ts``: the last price becomes the previous close and the open,
        today's totals restart, half of the previous day's stay in the 24-hour totals."""
        if self.fold_active:  # the fold is measured on the day's accumulators
            self.apply_fold()
        day_start = ts - ts % DAY_MS
        if day_start == self.day_end_ms:  # the previous day had our statistics: half carries on
            self.carried_trade_volume_24h = self.acc_trade_volume // 2
            self.carried_trade_price_24h = self.acc_trade_price // 2
        else:
            self.carried_trade_volume_24h = self.carried_trade_price_24h = 0
        self.day_end_ms = day_start + DAY_MS
        price = self.trade_price
        self.prev_closing_price = self.opening_price = self.high_price = self.low_price = price
        text = self.price_text(price)
        self.prev_closing_price_text = self.opening_price_text = text
        self.high_price_text = self.low_price_text = text
        self.acc_trade_volume = self.acc_trade_price = 0
        self.acc_ask_volume = self.acc_bid_volume = 0
        self.no_trade_today = True
        self.change_cache.clear()
        self.change_text_cache.clear()

    def apply_fold(self) -> None:
        """Merge the trades held back in second ``candle_second`` into every unit's candle.

        The fold keeps only what it cannot derive: its open and its high/low (updated when the
        price moves). Its volume and amount are the ticker's accumulators minus their values when
        the fold began, its close is the last price and its time the last trade's; so a held-back
        trade costs almost nothing. Call it before the accumulators move on (a new trade's
        statistics, a new day).
        """
        ts = self.book_timestamp
        volume = self.acc_trade_volume - self.fold_start_acc_trade_volume
        amount = self.acc_trade_price - self.fold_start_acc_trade_price
        close = self.trade_price
        high = self.fold_high_price
        low = self.fold_low_price
        for candle, (_, ms) in zip(self.candles, CANDLE_UNITS, strict=True):
            bucket = ts - ts % ms
            if bucket != candle.start_ms:
                candle.start_ms = bucket
                candle.opening_price = self.fold_opening_price
                candle.high_price = high
                candle.low_price = low
                candle.acc_trade_volume = volume
                candle.acc_trade_price = amount
            else:
                candle.high_price = max(candle.high_price, high)
                candle.low_price = min(candle.low_price, low)
                candle.acc_trade_volume += volume
                candle.acc_trade_price += amount
            candle.trade_price = close
            candle.timestamp = ts
            candle.unsent = True
        self.fold_active = False


def _activity_weight(code: str, quote: str, real: bool, rng: random.Random) -> float:
    weight = _TOP_WEIGHTS.get(code)
    if weight is None:
        quote_factor = {"KRW": 1.0, "USDT": 0.08, "BTC": 0.03}.get(quote, 0.05)
        base_weight = rng.uniform(2.0, 10.0) if real else min(15.0, 0.05 * rng.paretovariate(1.1))
        weight = base_weight * quote_factor
    return weight


def new_market_state(
    market: Market, *, index: int, now_ms: int, seed: int, tape: int
) -> MarketState:
    """``market`` as the simulation starts it at ``now_ms``: a book around a plausible price,
    a last trade a little before ``now_ms``, the day so far and 52 weeks of extremes.

    Everything is drawn from ``random.Random(f"{seed}/{code}")``; ``index`` (the market's place
    in the simulator's list) makes the last trade's ``sequential_id`` unique; ``tape`` trades are
    remembered (0: only the last one).
    """
    code = market.code
    rng = random.Random(f"{seed}/{code}")
    m = MarketState()
    m.code = code
    m.code_json = orjson.dumps(code).decode()
    m.quote = market.quote
    m.grid = grid = grid_for(code)
    m.is_krw = m.quote == "KRW"
    m.market_warning = "CAUTION" if market.warning else "NONE"
    m.group_seed = rng.getrandbits(32)
    m.price_decimals = {}
    m.price_texts = {}
    m.tape = deque(maxlen=tape) if tape else None
    m.change_cache = {}
    m.change_text_cache = {}
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
    mid = grid.snap_down(max(1, int(price * SCALE)))
    m.anchor_price = float(mid)

    # activity
    m.activity_weight = weight = _activity_weight(code, m.quote, real, rng)
    thin = not real and weight < 0.05 and rng.random() < 0.03
    gap = 2 if weight >= 20 else (3 if weight >= 1 else (8 if thin else 4))
    m.level_gap_ticks = max(1, min(gap, mid // grid.tick_at(mid) // 60))  # room for the bids
    m.usual_spread_ticks = 1 if weight >= 20 else (2 if weight >= 1 else (10 if thin else 4))
    m.target_ask_levels = rng.randint(2, 14) if thin else (40 if weight >= 1 else 32)
    m.target_bid_levels = rng.randint(2, 14) if thin else m.target_ask_levels
    notional = {"KRW": 80_000.0, "BTC": 0.0006, "USDT": 60.0}.get(m.quote, 60.0)
    notional *= rng.uniform(0.5, 2.0)
    m.trade_size = max(1, int(notional / (mid / SCALE) * SCALE))
    m.level_size = max(1, m.trade_size * 5)

    # book around mid
    m.asks = []
    m.bids = []
    bid = mid
    ask = grid.next_up(bid)
    for _ in range(rng.randint(0, 2) if weight < 20 else 0):
        ask = grid.next_up(ask)
    for _ in range(m.target_ask_levels):
        m.asks.append(m.new_level(ask, draw_size(m.level_size, rng.getrandbits(12))))
        for _ in range(1 + int(rng.random() * m.level_gap_ticks)):
            ask = grid.next_up(ask)
    for _ in range(m.target_bid_levels):
        if bid <= 0:
            break
        m.bids.append(m.new_level(bid, draw_size(m.level_size, rng.getrandbits(12))))
        for _ in range(1 + int(rng.random() * m.level_gap_ticks)):
            bid = grid.next_down(bid)
            if bid <= 0:
                break
    m.burst_left = 0
    m.burst_is_buy = False
    m.book_cache = None

    # the last trade and the day so far
    day_start = now_ms - now_ms % DAY_MS
    m.day_end_ms = day_start + DAY_MS
    mean_gap_ms = min(6 * 3_600_000.0, 1_500.0 / weight)
    last_trade_ms = max(0, now_ms - 1 - int(rng.expovariate(1.0 / mean_gap_ms)))
    bid_side = rng.random() < 0.5
    bid_side = bid_side or not m.bids
    top = m.asks[0] if bid_side else m.bids[0]
    last_price = top.price
    volume = draw_size(m.trade_size, rng.getrandbits(12))
    top.size = max(top.size, volume + 1)
    top.size_text = size_text(top.size)
    m.book_timestamp = last_trade_ms
    m.book_sent_ms = last_trade_ms
    m.trade_price = last_price
    trades_per_day = weight * 3_000.0
    daily = int(trades_per_day * m.trade_size * 2.3)
    elapsed = (now_ms - day_start) / DAY_MS
    if last_trade_ms >= day_start:
        m.no_trade_today = False
        m.prev_closing_price = grid.snap_down(int(last_price * math.exp(rng.gauss(0, 0.025))))
        m.opening_price = grid.snap_down(int(m.prev_closing_price * math.exp(rng.gauss(0, 0.003))))
        high = int(max(m.opening_price, last_price) * (1 + abs(rng.gauss(0, 0.012))))
        low = int(min(m.opening_price, last_price) * (1 - abs(rng.gauss(0, 0.012))))
        m.high_price = max(grid.snap_up(high), m.opening_price, last_price)
        m.low_price = min(grid.snap_down(max(1, low)), m.opening_price, last_price)
        m.acc_trade_volume = max(volume, int(daily * elapsed * rng.uniform(0.7, 1.3)))
    else:
        m.no_trade_today = True
        m.prev_closing_price = m.opening_price = m.high_price = m.low_price = last_price
        m.acc_trade_volume = 0
    m.acc_trade_price = m.acc_trade_volume * last_price
    m.acc_bid_volume = int(m.acc_trade_volume * rng.uniform(0.4, 0.6))
    m.acc_ask_volume = m.acc_trade_volume - m.acc_bid_volume
    m.acc_ask_volume_text = m.acc_bid_volume_text = (-1, "")
    if m.acc_trade_volume and bid_side and m.acc_bid_volume < volume:
        m.acc_bid_volume, m.acc_ask_volume = volume, m.acc_trade_volume - volume
    elif m.acc_trade_volume and not bid_side and m.acc_ask_volume < volume:
        m.acc_ask_volume, m.acc_bid_volume = volume, m.acc_trade_volume - volume
    m.carried_trade_volume_24h = int(daily * rng.uniform(0.4, 0.6))
    m.carried_trade_price_24h = m.carried_trade_volume_24h * last_price
    m.prev_closing_price_text = m.price_text(m.prev_closing_price)

    # 52 weeks
    m.highest_52_week_price = max(
        m.high_price, grid.snap_up(int(last_price * rng.uniform(1.15, 2.6)))
    )
    m.lowest_52_week_price = min(
        m.low_price, grid.snap_down(max(1, int(last_price * rng.uniform(0.25, 0.85))))
    )
    m.highest_52_week_date = day_text(day_start - rng.randint(1, 360) * DAY_MS)
    m.lowest_52_week_date = day_text(day_start - rng.randint(1, 360) * DAY_MS)
    if not m.no_trade_today:  # an extreme set today is dated today
        if m.highest_52_week_price == m.high_price:
            m.highest_52_week_date = day_text(day_start)
        if m.lowest_52_week_price == m.low_price:
            m.lowest_52_week_date = day_text(day_start)
    m.opening_price_text = m.price_text(m.opening_price)
    m.high_price_text = m.price_text(m.high_price)
    m.low_price_text = m.price_text(m.low_price)
    m.highest_52_week_price_text = m.price_text(m.highest_52_week_price)
    m.lowest_52_week_price_text = m.price_text(m.lowest_52_week_price)
    m.buy_probability = buy_probability(last_price, m.anchor_price)

    trade_date, trade_time = time.strftime(
        "%Y-%m-%d|%H:%M:%S", time.gmtime(last_trade_ms // 1000)
    ).split("|")
    change, change_price, _, _, _ = m.change_text_at(last_price)
    best_bid = m.bids[0] if m.bids else EMPTY_LEVEL
    m.last_trade = (  # a TRADE_ROW row
        m.code_json,
        last_trade_ms,
        trade_date,
        trade_time,
        last_trade_ms,
        m.price_text(last_price),
        size_text(volume),
        "BID" if bid_side else "ASK",
        m.prev_closing_price_text,
        change,
        change_price,
        last_trade_ms * 10_000 + index % 10_000,
        m.asks[0].price_text,
        m.asks[0].size_text,
        best_bid.price_text,
        best_bid.size_text,
    )
    if m.tape is not None:
        m.tape.append(m.last_trade)
    m.candles = [
        Candle(last_trade_ms - last_trade_ms % ms, last_price, volume, last_trade_ms)
        for _, ms in CANDLE_UNITS
    ]
    m.candle_second = last_trade_ms // 1000
    m.fold_active = False
    m.fold_opening_price = m.fold_high_price = m.fold_low_price = 0
    m.fold_start_acc_trade_volume = m.fold_start_acc_trade_price = 0
    m.candles_scheduled = False
    return m
