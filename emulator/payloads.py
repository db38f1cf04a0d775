"""The simulation's payloads: Upbit-shaped dicts and rows rendered from a market's state.

Pure. Payloads use Upbit's DEFAULT field names with every documented field present
(docs/upbit-protocol.md §4.1-§4.4) and no ``stream_type`` (the server adds it). Prices, sizes,
amounts and rates are ``Decimal``; timestamps, ``sequential_id`` and counts are ``int``; dates are
``str``.

``trade``, ``ticker`` and level-0 ``orderbook`` events also travel as rows: tuples of the number
texts the state already holds, in the field order of :data:`TRADE_ROW`, :data:`TICKER_ROW` and
:data:`ORDERBOOK_ROW`, written by template with
:func:`~upbit_fanout.emulator.protocol.render_row` without making a ``Decimal``;
``ROW_SPECS[type].payload(row)`` is the same payload as a dict.

Payloads (and the Decimals and unit dicts inside them) may be shared with the market's state and
with other events: treat them as read-only.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any, Final

from upbit_fanout.emulator.book import BOOK_DEPTH, EMPTY_LEVEL, SIZE_MULTIPLIERS, Level
from upbit_fanout.emulator.fixedpoint import (
    E8,
    SIZE_EXACT,
    WIDE,
    ZERO,
    amount_decimal,
    amount_text,
    size_decimal,
    size_text,
)
from upbit_fanout.emulator.market_state import CANDLE_UNITS, Candle, MarketState
from upbit_fanout.emulator.protocol import BookUnits, RowSpec

__all__ = [
    "ORDERBOOK_ROW",
    "ROW_SPECS",
    "TICKER_ROW",
    "TRADE_ROW",
    "book_payload",
    "book_row",
    "candle_payload",
    "grouped_book_payload",
    "orderbook_at_depth",
    "ticker_payload",
    "ticker_row",
]

_KST_MS: Final = 9 * 3_600_000

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
_TRADE_DATE: Final = 2
_TRADE_TIME: Final = 3
_TRADE_TIMESTAMP: Final = 4
_TRADE_VOLUME: Final = 6
_TRADE_SIDE: Final = 7


def ticker_payload(m: MarketState, now_ms: int) -> dict[str, Any]:
    """The market's ``ticker`` payload now (its last trade, its day, its 52 weeks)."""
    last = m.last_trade
    price = m.trade_price
    change, change_price, signed_change_price, change_rate, signed_change_rate = m.change_at(price)
    trade_date: str = last[_TRADE_DATE]
    trade_time: str = last[_TRADE_TIME]
    decimal = m.price_decimal
    return {
        "type": "ticker",
        "code": m.code,
        "opening_price": decimal(m.opening_price),
        "high_price": decimal(m.high_price),
        "low_price": decimal(m.low_price),
        "trade_price": decimal(price),
        "prev_closing_price": decimal(m.prev_closing_price),
        "change": change,
        "change_price": change_price,
        "signed_change_price": signed_change_price,
        "change_rate": change_rate,
        "signed_change_rate": signed_change_rate,
        "trade_volume": Decimal(last[_TRADE_VOLUME]),
        "acc_trade_volume": size_decimal(m.acc_trade_volume),
        "acc_trade_volume_24h": size_decimal(m.acc_trade_volume + m.carried_trade_volume_24h),
        "acc_trade_price": amount_decimal(m.acc_trade_price),
        "acc_trade_price_24h": amount_decimal(m.acc_trade_price + m.carried_trade_price_24h),
        "trade_date": trade_date.replace("-", ""),
        "trade_time": trade_time.replace(":", ""),
        "trade_timestamp": last[_TRADE_TIMESTAMP],
        "ask_bid": last[_TRADE_SIDE],
        "acc_ask_volume": size_decimal(m.acc_ask_volume),
        "acc_bid_volume": size_decimal(m.acc_bid_volume),
        "highest_52_week_price": decimal(m.highest_52_week_price),
        "highest_52_week_date": m.highest_52_week_date,
        "lowest_52_week_price": decimal(m.lowest_52_week_price),
        "lowest_52_week_date": m.lowest_52_week_date,
        "market_state": "ACTIVE",
        "is_trading_suspended": False,
        "delisting_date": None,
        "market_warning": m.market_warning,
        "timestamp": now_ms,
    }


def ticker_row(
    m: MarketState,
    ts: int,
    trade: tuple[Any, ...],
    change_text: tuple[str, str, str, str, str],
    day_texts: tuple[str, str, str, str],
) -> tuple[Any, ...]:
    """The ``ticker`` of the trade ``trade`` (a TRADE_ROW row, at ``ts``) as a TICKER_ROW row.

    ``change_text`` is :meth:`MarketState.change_text_at` of the trade's price and ``day_texts``
    the trade time's ``(YYYY-MM-DD, HH:MM:SS, YYYYMMDD, HHMMSS)``. The number texts are inlined
    for the usual magnitudes (see :func:`size_text` and :func:`amount_text`); only one side's
    volume moved with the trade, the other's text is kept.
    """
    acc_volume = m.acc_trade_volume
    n = acc_volume + m.carried_trade_volume_24h
    if 100_000_000 <= n < SIZE_EXACT:
        t = str(acc_volume)
        volume_text = t[:-8] + "." + t[-8:] if acc_volume >= 100_000_000 else size_text(acc_volume)
        t = str(n)
        volume_24h_text = t[:-8] + "." + t[-8:]
    else:
        volume_text = size_text(acc_volume)
        volume_24h_text = size_text(n)
    acc_amount = m.acc_trade_price
    n = acc_amount + m.carried_trade_price_24h
    t = str(acc_amount)
    if acc_amount >= 10_000_000_000_000_000 and len(t) <= 80:
        amount_text_ = t[:-16] + "." + t[-16:]
    else:
        amount_text_ = amount_text(acc_amount)
    t = str(n)
    amount_24h_text = t[:-16] + "." + t[-16:] if len(t) > 16 and len(t) <= 80 else amount_text(n)
    volume = m.acc_ask_volume
    ask_text = m.acc_ask_volume_text
    if ask_text[0] != volume:
        ask_text = m.acc_ask_volume_text = (volume, size_text(volume))
    volume = m.acc_bid_volume
    bid_text = m.acc_bid_volume_text
    if bid_text[0] != volume:
        bid_text = m.acc_bid_volume_text = (volume, size_text(volume))
    change, change_price, signed_change_price, change_rate, signed_change_rate = change_text
    return (
        m.code_json,
        m.opening_price_text,
        m.high_price_text,
        m.low_price_text,
        trade[5],  # trade_price
        m.prev_closing_price_text,
        change,
        change_price,
        signed_change_price,
        change_rate,
        signed_change_rate,
        trade[_TRADE_VOLUME],
        volume_text,
        volume_24h_text,
        amount_text_,
        amount_24h_text,
        day_texts[2],
        day_texts[3],
        ts,
        trade[_TRADE_SIDE],
        ask_text[1],
        bid_text[1],
        m.highest_52_week_price_text,
        m.highest_52_week_date,
        m.lowest_52_week_price_text,
        m.lowest_52_week_date,
        m.market_warning,
        ts,
    )


def candle_payload(
    m: MarketState, unit: int, candle: Candle, times: dict[int, tuple[str, str]]
) -> dict[str, Any]:
    """The payload of ``candle``, the market's candle of unit ``unit`` (an index into
    ``CANDLE_UNITS``). ``times`` caches each bucket start's UTC and KST date-times (bounded)."""
    names = times.get(candle.start_ms)
    if names is None:
        if len(times) > 65_536:
            times.clear()
        names = times[candle.start_ms] = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(candle.start_ms // 1000)),
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((candle.start_ms + _KST_MS) // 1000)),
        )
    cached = m.price_decimals
    decimal = m.price_decimal
    volume = candle.acc_trade_volume
    amount = candle.acc_trade_price
    return {
        "type": CANDLE_UNITS[unit][0],
        "code": m.code,
        "candle_date_time_utc": names[0],
        "candle_date_time_kst": names[1],
        "opening_price": cached.get(candle.opening_price) or decimal(candle.opening_price),
        "high_price": cached.get(candle.high_price) or decimal(candle.high_price),
        "low_price": cached.get(candle.low_price) or decimal(candle.low_price),
        "trade_price": cached.get(candle.trade_price) or decimal(candle.trade_price),
        "candle_acc_trade_volume": Decimal(volume) * E8 if volume else ZERO,
        "candle_acc_trade_price": Decimal(amount).scaleb(-16, WIDE) if amount else ZERO,
        "timestamp": candle.timestamp,
    }


def book_payload(m: MarketState, depth: int) -> dict[str, Any]:
    """The level-0 ``orderbook`` payload with ``depth`` units (zero-padded if thin)."""
    return ORDERBOOK_ROW.payload(book_row(m, depth))


def book_row(m: MarketState, depth: int) -> tuple[Any, ...]:
    """The level-0 book with ``depth`` units as an ORDERBOOK_ROW row.

    At :data:`BOOK_DEPTH` the units are remembered (``m.book_cache``): while only the best
    sizes change (partial fills), the next book reuses the other units and their written text.
    """
    best_ask = m.asks[0] if m.asks else EMPTY_LEVEL
    best_bid = m.bids[0] if m.bids else EMPTY_LEVEL
    first = (best_ask.price_text, best_bid.price_text, best_ask.size_text, best_bid.size_text)
    cache = m.book_cache if depth == BOOK_DEPTH else None
    if cache is not None and cache[0] is best_ask and cache[1] is best_bid:
        # Only the best sizes changed since the last full book (partial fills): reuse the
        # other 29 units and their written text.
        _, _, ask_size_then, bid_size_then, total_ask, total_bid, old = cache
        total_ask -= ask_size_then - best_ask.size
        total_bid -= bid_size_then - best_bid.size
        units = BookUnits(first, old.rest, old.rest_text)
    else:
        asks = m.asks[:depth]
        bids = m.bids[:depth]
        if len(asks) < depth:
            asks += [EMPTY_LEVEL] * (depth - len(asks))
        if len(bids) < depth:
            bids += [EMPTY_LEVEL] * (depth - len(bids))
        rest = tuple(
            [
                (a.price_text, b.price_text, a.size_text, b.size_text)
                for a, b in zip(asks[1:], bids[1:], strict=True)
            ]
        )
        units = BookUnits(first, rest)
        total_ask = sum([a.size for a in asks])
        total_bid = sum([b.size for b in bids])
    if depth == BOOK_DEPTH:
        m.book_cache = (
            best_ask,
            best_bid,
            best_ask.size,
            best_bid.size,
            total_ask,
            total_bid,
            units,
        )
    return (m.code_json, m.book_timestamp, size_text(total_ask), size_text(total_bid), units)


def grouped_book_payload(
    m: MarketState, depth: int, level: int | Decimal, level_units: int
) -> dict[str, Any]:
    """The book with KRW prices grouped to multiples of ``level_units`` (asks up, bids down).

    Groups beyond the stored levels are synthesised deterministically from the book's state.
    """
    rng = random.Random(m.group_seed * 1_000_003 + m.book_timestamp)
    per_group = max(
        1, min(50, level_units // max(1, m.grid.tick_at(m.trade_price) * m.level_gap_ticks))
    )

    def groups(side: list[Level], ask: bool) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for book_level in side:
            price = book_level.price
            group = (
                -(-price // level_units) * level_units
                if ask
                else price // level_units * level_units
            )
            if group <= 0:
                break
            if out and out[-1][0] == group:
                out[-1] = (group, out[-1][1] + book_level.size)
            else:
                if len(out) == depth:
                    break
                out.append((group, book_level.size))
        while 0 < len(out) < depth:
            group = out[-1][0] + level_units if ask else out[-1][0] - level_units
            if group <= 0:
                break
            orders = 1 + int(rng.random() * per_group)
            size = sum(
                (m.level_size * SIZE_MULTIPLIERS[rng.getrandbits(12)]) >> 10 for _ in range(orders)
            )
            out.append((group, max(1, size)))
        return out

    # asks round up and bids round down, so the best ask group stays above the best bid
    asks = groups(m.asks, True)
    bids = groups(m.bids, False)
    decimal = m.price_decimal
    units = []
    for i in range(depth):
        ask_price, ask_size = asks[i] if i < len(asks) else (0, 0)
        bid_price, bid_size = bids[i] if i < len(bids) else (0, 0)
        units.append(
            {
                "ask_price": decimal(ask_price),
                "bid_price": decimal(bid_price),
                "ask_size": size_decimal(ask_size),
                "bid_size": size_decimal(bid_size),
            }
        )
    return {
        "type": "orderbook",
        "code": m.code,
        "timestamp": m.book_timestamp,
        "total_ask_size": size_decimal(sum(size for _, size in asks)),
        "total_bid_size": size_decimal(sum(size for _, size in bids)),
        "orderbook_units": units,
        "level": level,
    }


def orderbook_at_depth(payload: dict[str, Any], depth: int) -> dict[str, Any]:
    """A copy of an ``orderbook`` payload cut to its first ``depth`` units, totals recomputed."""
    units = payload["orderbook_units"][:depth]
    out = dict(payload)
    out["orderbook_units"] = units
    out["total_ask_size"] = sum((u["ask_size"] for u in units), ZERO)
    out["total_bid_size"] = sum((u["bid_size"] for u in units), ZERO)
    return out
