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

This module is the simulator: it chooses which markets trade, runs the trade step and decides
which events each trade makes. The parts it is built from, each with one job:

- :mod:`emulator.fixedpoint`: integer units (1e-8, amounts 1e-16) and their Decimal and text;
- :mod:`emulator.ticks`: Upbit's price grids, :func:`tick_size`, :func:`is_valid_price`,
  :func:`min_order_total`;
- :mod:`emulator.book`: a market's order book and how consuming its best level changes it (one
  code path for both sides);
- :mod:`emulator.market_state`: one market's state, how it starts, its day roll, its changes
  and its candle fold;
- :mod:`emulator.payloads`: the payloads (dicts) and rows (:data:`ROW_SPECS`) rendered from a
  market's state.

Every name other modules use is importable from here. Payloads use Upbit's DEFAULT field names
with every documented field present (docs/upbit-protocol.md §4.1-§4.4) and no ``stream_type`` (the
server adds it). The hot path never makes a ``Decimal``: :meth:`MarketSimulator.next_rows`
returns trades, tickers and books as rows of number text (:data:`ROW_SPECS`, written by template
with :func:`~upbit_fanout.emulator.protocol.render_row`), and :meth:`MarketSimulator.next_events`
turns the same rows into the dicts of Decimals.

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

import random
import time
from collections import deque
from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any, Final

from upbit_fanout.emulator.book import BOOK_DEPTH, EMPTY_LEVEL, SIZE_MULTIPLIERS
from upbit_fanout.emulator.fixedpoint import SCALE, ZERO, size_text
from upbit_fanout.emulator.market_state import (
    CANDLE_UNIT_MS,
    CANDLE_UNITS,
    REVERSION,
    MarketState,
    new_market_state,
)
from upbit_fanout.emulator.markets import Market, default_markets
from upbit_fanout.emulator.payloads import (
    ORDERBOOK_ROW,
    ROW_SPECS,
    TICKER_ROW,
    TRADE_ROW,
    book_payload,
    book_row,
    candle_payload,
    grouped_book_payload,
    orderbook_at_depth,
    ticker_payload,
    ticker_row,
)
from upbit_fanout.emulator.ticks import is_valid_price, min_order_total, tick_size
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

_ALL_TYPES: Final = frozenset(("ticker", "trade", "orderbook", *CANDLE_TYPES))

# Probabilities of the price process (the book's own, after a level is consumed, are in book.py).
_BOOK_EVERY_MS: Final = 100  # a market sends its (changed) book at most this often (4: ~100 ms)
_P_BURST: Final = 0.002  # a trade starts a sweep of several levels in one direction

Wanted = tuple[bool, bool, bool, tuple[bool, ...]]
"""Which event types to render: trade, ticker, orderbook, and each candle unit."""


class _Selection:
    """The markets of one watched set, in code order, with their cumulative activity weights."""

    __slots__ = ("codes", "cumulative_weights", "markets")

    def __init__(self, markets: list[MarketState]) -> None:
        self.markets = markets
        self.codes = frozenset(m.code for m in markets)
        total = 0.0
        cumulative: list[float] = []
        for m in markets:
            total += m.activity_weight
            cumulative.append(total)
        self.cumulative_weights = cumulative


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
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._random_bits = self._rng.getrandbits
        self._markets: dict[str, MarketState] = {}
        for index, item in enumerate(markets):
            if isinstance(item, Market):
                market = item
            else:
                code = str(item)
                quote, dash, base = code.partition("-")
                if not dash or not quote or not base or code != code.upper():
                    raise ValueError(f"market code {code!r} is not QUOTE-BASE in upper case")
                market = known.get(code) or Market(code, base, base, warning=False)
            if market.code in self._markets:
                continue
            self._markets[market.code] = new_market_state(
                market, index=index, now_ms=now_ms, seed=seed, tape=tape
            )
        self._last_ms = now_ms
        self._last_sequential_id = 0
        # held-back candle updates: second (epoch s) -> the markets to flush after it
        self._candle_schedule: dict[int, list[MarketState]] = {}
        self._selections: dict[frozenset[str], _Selection] = {}
        self._last_selection: tuple[Collection[str], _Selection] | None = None
        self._wanted_cache: dict[frozenset[str] | None, Wanted] = {}
        self._time_second = -1
        self._time_texts = ("", "", "", "")
        self._candle_times: dict[int, tuple[str, str]] = {}

    # ---- public API ------------------------------------------------------------------------

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(self._markets)

    def last_price(self, code: str) -> Decimal:
        m = self._markets[code]
        return m.price_decimal(m.trade_price)

    def best_prices(self, code: str) -> tuple[Decimal, Decimal]:
        """``(best_ask_price, best_bid_price)``; a missing side is ``Decimal(0)``."""
        m = self._markets[code]
        return (
            m.price_decimal(m.asks[0].price) if m.asks else ZERO,
            m.price_decimal(m.bids[0].price) if m.bids else ZERO,
        )

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
        m = self._markets[code]
        if type_ == "ticker":
            if now_ms >= m.day_end_ms:
                m.roll_day(now_ms)
            return ticker_payload(m, now_ms)
        if type_ == "trade":
            return TRADE_ROW.payload(m.last_trade)
        if type_ == "orderbook":
            return self.orderbook(code, now_ms=now_ms, depth=depth, level=level)
        unit = CANDLE_UNIT_MS.get(type_)
        if unit is None:
            raise ValueError(f"no snapshot for data type {type_!r}")
        if m.fold_active:
            m.apply_fold()
        i = CANDLE_TYPES.index(type_)
        return candle_payload(m, i, m.candles[i], self._candle_times)

    def orderbook(
        self, code: str, *, now_ms: int, depth: int = 30, level: int | Decimal | None = 0
    ) -> dict[str, Any]:
        """The book as an ``orderbook`` payload with ``depth`` units (zero-padded if thin).

        ``level`` groups KRW prices to multiples of ``level`` (asks up, bids down); other quotes
        ignore it and report ``level`` 0. ``timestamp`` is the time of the book's last change.
        """
        del now_ms  # the payload's timestamp is the book's own
        m = self._markets[code]
        if depth < 1:
            raise ValueError(f"orderbook depth must be at least 1, not {depth}")
        level_units = int(Decimal(level) * SCALE) if m.is_krw and level else 0
        if level and level_units > 0:
            return grouped_book_payload(m, depth, level, level_units)
        return book_payload(m, depth)

    def trades(self, code: str) -> list[tuple[Any, ...]]:
        """The market's remembered trades, oldest first, as :data:`TRADE_ROW` rows.

        Every trade the market made is remembered (the last ``tape`` of them, or as many as
        :meth:`keep_trades` said; without either, only the last trade), whether or not anyone
        received it: the same trades, with the same ``sequential_id``, as the streams carried.
        The list is a copy.
        """
        m = self._markets[code]
        return list(m.tape) if m.tape is not None else [m.last_trade]

    def keep_trades(self, code: str, count: int) -> None:
        """Remember the last ``count`` trades of ``code`` (at least 1) from now on."""
        if count < 1:
            raise ValueError("keep at least 1 trade")
        m = self._markets[code]
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
        selection = self._selection(codes)
        wanted = self._wanted(types)
        ts = now_ms if now_ms > self._last_ms else self._last_ms
        self._last_ms = ts
        out: list[RowEvent] = []
        if self._candle_schedule:
            self._flush_candles(ts, selection.codes, out, wanted[3])
        if not selection.markets or max_events <= 0:
            return out
        day_texts = self._day_texts(ts)
        choices = self._rng.choices
        trades = 0  # also bounds the loop when the wanted types are rare (candles only)
        while len(out) < max_events and trades < max_events:
            k = min((max_events - len(out)) // 3 + 1, max_events - trades)
            trades += k
            chosen = choices(selection.markets, cum_weights=selection.cumulative_weights, k=k)
            self._trades(chosen, ts, day_texts, out, wanted)
        return out

    # ---- helpers ---------------------------------------------------------------------------

    def _selection(self, codes: Collection[str]) -> _Selection:
        last = self._last_selection
        if last is not None and last[0] is codes and isinstance(codes, (frozenset, tuple)):
            return last[1]
        key = frozenset(codes)
        selection = self._selections.get(key)
        if selection is None:
            markets = [self._markets[c] for c in sorted(key)]  # KeyError for unknown codes
            if len(self._selections) >= 32:
                self._selections.clear()
            selection = self._selections[key] = _Selection(markets)
        self._last_selection = (codes, selection)
        return selection

    def _wanted(self, types: Collection[str] | None) -> Wanted:
        key = None if types is None else frozenset(types)
        hit = self._wanted_cache.get(key)
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
            self._wanted_cache[key] = hit
        return hit

    def _day_texts(self, ts: int) -> tuple[str, str, str, str]:
        """``(YYYY-MM-DD, HH:MM:SS, YYYYMMDD, HHMMSS)`` of ``ts`` (UTC); cached per second."""
        second = ts // 1000
        if second != self._time_second:
            self._time_second = second
            d, t = time.strftime("%Y-%m-%d|%H:%M:%S", time.gmtime(second)).split("|")
            self._time_texts = (d, t, d.replace("-", ""), t.replace(":", ""))
        return self._time_texts

    # ---- candles ---------------------------------------------------------------------------

    def _schedule_candles(self, m: MarketState) -> None:
        """Flush ``m``'s held-back candle updates after its second ``m.candle_second``."""
        if not m.candles_scheduled:
            m.candles_scheduled = True
            due = self._candle_schedule.get(m.candle_second)
            if due is None:
                self._candle_schedule[m.candle_second] = [m]
            else:
                due.append(m)

    def _flush_candles(
        self, ts: int, watched: frozenset[str], out: list[RowEvent], wanted: tuple[bool, ...]
    ) -> None:
        """Send the held-back candle updates of the seconds before ``ts``'s (watched markets)."""
        second = ts // 1000
        due = [s for s in self._candle_schedule if s < second]
        for s in sorted(due):
            for m in self._candle_schedule.pop(s):
                m.candles_scheduled = False
                if m.code not in watched:
                    continue  # stays unsent; sent with its next trade, or seen in a snapshot
                if second <= m.candle_second:  # sent something since it was scheduled
                    self._schedule_candles(m)
                    continue
                if m.fold_active:
                    m.apply_fold()
                sent = False
                for i, candle in enumerate(m.candles):
                    if candle.unsent:
                        candle.unsent = False
                        sent = True
                        if wanted[i]:
                            payload = candle_payload(m, i, candle, self._candle_times)
                            out.append((CANDLE_UNITS[i][0], m.code, payload))
                if sent:
                    m.candle_second = second

    def _candles_after(
        self,
        m: MarketState,
        price: int,
        volume: int,
        amount: int,
        *,
        ts: int,
        wanted: tuple[bool, ...],
    ) -> list[SimEvent]:
        """The first trade of a new second: update every unit's candle, render the updates."""
        if m.fold_active:
            m.apply_fold()
        code = m.code
        times = self._candle_times
        out: list[SimEvent] = []
        pending = False
        for i, candle in enumerate(m.candles):
            bucket = ts - ts % CANDLE_UNITS[i][1]
            if bucket != candle.start_ms:
                if candle.unsent:  # the closed bucket's last trades were never sent: send them now
                    if wanted[i]:
                        out.append((CANDLE_UNITS[i][0], code, candle_payload(m, i, candle, times)))
                    candle.start_ms = bucket
                    candle.opening_price = candle.high_price = candle.low_price = price
                    candle.trade_price = price
                    candle.acc_trade_volume = volume
                    candle.acc_trade_price = amount
                    candle.timestamp = ts
                    pending = True  # it stays unsent: the new bucket goes out next second
                    continue
                candle.start_ms = bucket
                candle.opening_price = candle.high_price = candle.low_price = price
                candle.trade_price = price
                candle.acc_trade_volume = volume
                candle.acc_trade_price = amount
            else:
                if price > candle.high_price:
                    candle.high_price = price
                elif price < candle.low_price:
                    candle.low_price = price
                candle.trade_price = price
                candle.acc_trade_volume += volume
                candle.acc_trade_price += amount
            candle.timestamp = ts
            candle.unsent = False
            if wanted[i]:
                out.append((CANDLE_UNITS[i][0], code, candle_payload(m, i, candle, times)))
        m.candle_second = ts // 1000
        if pending:
            self._schedule_candles(m)
        return out

    # ---- the trade step --------------------------------------------------------------------

    def _trades(
        self,
        markets: list[MarketState],
        ts: int,
        day_texts: tuple[str, str, str, str],
        out: list[RowEvent],
        wanted: Wanted,
    ) -> None:
        """One trade on each of ``markets`` (in order) at ``ts``; appends the events ``wanted``
        (trade, ticker, book, candles per unit) asks for. One loop rather than a call per trade:
        this is the hot path."""
        want_trade, want_ticker, want_book, want_candles = wanted
        random = self._random
        bits = self._random_bits
        second = ts // 1000
        last_sequential_id = self._last_sequential_id
        for m in markets:
            if ts >= m.day_end_ms:
                m.roll_day(ts)

            # which side takes, and how much
            if m.burst_left:
                m.burst_left -= 1
                buy = m.burst_is_buy
                sweep = True
            else:
                r = random()
                buy = r < m.buy_probability
                sweep = False
                if r < _P_BURST or r > 1.0 - _P_BURST:  # rare: start a sweep in this direction
                    m.burst_left = 4 + int(random() * 20)
                    m.burst_is_buy = buy
            asks = m.asks
            bids = m.bids
            if not bids:
                buy = True
            size = (m.trade_size * SIZE_MULTIPLIERS[bits(12)]) >> 10 or 1

            # a buyer takes the best ask, a seller the best bid
            best = asks[0] if buy else bids[0]
            price = best.price
            price_text = best.price_text
            available = best.size
            if sweep or size >= available:
                volume = available
                m.take_best_level(buy, sweep, random, bits)
            else:
                volume = size
                best.size = left = available - size
                best.size_text = f"0.{left:08d}" if 100 <= left < 100_000_000 else size_text(left)
            amount = price * volume

            # candles: fold into the held-back second, or (first trade of a new second) update and
            # render them now, to be sent after this trade's other events
            candles: list[SimEvent] | None = None
            if second <= m.candle_second:
                if not m.fold_active:
                    m.fold_active = True
                    m.fold_opening_price = m.fold_high_price = m.fold_low_price = price
                    m.fold_start_acc_trade_volume = m.acc_trade_volume
                    m.fold_start_acc_trade_price = m.acc_trade_price
                    self._schedule_candles(m)
            else:
                candles = self._candles_after(m, price, volume, amount, ts=ts, wanted=want_candles)

            # the day's statistics
            m.book_timestamp = ts
            if price != m.trade_price:
                m.trade_price = price
                # market_state.buy_probability(), inlined: this is the hot path
                m.buy_probability = 0.5 - REVERSION * (price - m.anchor_price) / m.anchor_price
                if m.fold_active:
                    if price > m.fold_high_price:
                        m.fold_high_price = price
                    elif price < m.fold_low_price:
                        m.fold_low_price = price
                # keep the ticker's texts in step with the day's extremes
                if m.no_trade_today:
                    m.no_trade_today = False
                    m.opening_price = m.high_price = m.low_price = price
                    m.opening_price_text = m.high_price_text = m.low_price_text = price_text
                elif price > m.high_price:
                    m.high_price = price
                    m.high_price_text = price_text
                elif price < m.low_price:
                    m.low_price = price
                    m.low_price_text = price_text
                if price > m.highest_52_week_price:
                    m.highest_52_week_price = price
                    m.highest_52_week_price_text = price_text
                    m.highest_52_week_date = day_texts[0]
                elif price < m.lowest_52_week_price:
                    m.lowest_52_week_price = price
                    m.lowest_52_week_price_text = price_text
                    m.lowest_52_week_date = day_texts[0]
            elif m.no_trade_today:
                m.no_trade_today = False
            m.acc_trade_volume += volume
            m.acc_trade_price += amount
            if buy:
                m.acc_bid_volume += volume
            else:
                m.acc_ask_volume += volume

            # sequential id: trade_timestamp * 10000 + a counter (as Upbit's current ids look)
            sequential_id = ts * 10_000
            if sequential_id <= last_sequential_id:
                sequential_id = last_sequential_id + 1
            last_sequential_id = sequential_id
            change_text = m.change_text_cache.get(price) or m.change_text_at(price)
            code = m.code
            best_ask = asks[0]
            best_bid = bids[0] if bids else EMPTY_LEVEL
            # a TRADE_ROW row of texts: rendered by template, no Decimal made
            trade = (
                m.code_json,
                ts,
                day_texts[0],
                day_texts[1],
                ts,
                price_text,
                f"0.{volume:08d}" if 100 <= volume < 100_000_000 else size_text(volume),
                "BID" if buy else "ASK",
                m.prev_closing_price_text,
                change_text[0],
                change_text[1],
                sequential_id,
                best_ask.price_text,
                best_ask.size_text,
                best_bid.price_text,
                best_bid.size_text,
            )
            m.last_trade = trade
            if m.tape is not None:
                m.tape.append(trade)
            if want_trade:
                out.append(("trade", code, trade))
            if want_ticker:
                out.append(("ticker", code, ticker_row(m, ts, trade, change_text, day_texts)))
            if want_book and ts - m.book_sent_ms >= _BOOK_EVERY_MS:
                m.book_sent_ms = ts
                out.append(("orderbook", code, book_row(m, BOOK_DEPTH)))

            if candles:
                out += candles
        self._last_sequential_id = last_sequential_id
