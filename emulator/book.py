"""One market's order book in the simulation, and how a trade changes it.

Pure: randomness comes in as functions (``random()`` for a float in [0, 1), ``bits(k)`` for ``k``
random bits), so the same draws give the same book. A book has two sides of :class:`Level`:
``asks`` ascending and ``bids`` descending, prices on the market's :class:`PriceGrid`. A taker
order takes from the best level of one side (a buyer from the asks, a seller from the bids);
:meth:`OrderBook.take_best_level` is what happens when it consumes that level. Both sides follow
one code path, parametrised by the side (``ask=True`` is the ask side).

Each level keeps the number text of its price and size next to the integers, so that payloads
are written without making a ``Decimal``.
"""

from __future__ import annotations

import random as _random_module
from collections.abc import Callable
from decimal import Decimal
from typing import Final

from upbit_fanout.emulator.fixedpoint import size_text
from upbit_fanout.emulator.protocol import BookUnits
from upbit_fanout.emulator.ticks import PriceGrid

__all__ = [
    "BOOK_DEPTH",
    "EMPTY_LEVEL",
    "P_FOLLOW",
    "P_REFILL",
    "SIZE_MULTIPLIERS",
    "Level",
    "OrderBook",
    "draw_size",
]

BOOK_DEPTH: Final = 30
"""Units in an ``orderbook`` event (Upbit's default depth)."""
P_FOLLOW: Final = 0.45
"""After a level is consumed, the other side steps in behind it with this probability ..."""
P_REFILL: Final = 0.20
"""... or the consumed level refills at the same price (never during a sweep)."""
TRIM_ABOVE_TARGET: Final = 6
"""A side trims its last level when an insert makes it this many levels longer than its target."""


def _size_multipliers() -> tuple[int, ...]:
    rng = _random_module.Random("upbit-fanout/sizes")
    return tuple(
        max(8, min(1024 * 300, int(1024 * rng.lognormvariate(0, 1.3)))) for _ in range(4096)
    )


SIZE_MULTIPLIERS: Final = _size_multipliers()
"""A fixed heavy-tailed table of size multipliers (x1024, median 1024), drawn once; indexed by
12 random bits."""


def draw_size(typical: int, bits: int) -> int:
    """A heavy-tailed size around ``typical`` units from 12 random ``bits`` (at least 1)."""
    return (typical * SIZE_MULTIPLIERS[bits]) >> 10 or 1


class Level:
    """One price level of a book side: price and size in 1e-8 units, and their number texts."""

    __slots__ = ("price", "price_text", "size", "size_text")

    def __init__(self, price: int, size: int, price_text: str, size_text: str) -> None:
        self.price = price
        self.size = size
        self.price_text = price_text
        self.size_text = size_text


EMPTY_LEVEL: Final = Level(0, 0, "0", "0")
"""Upbit pads a thin side with zero price and size."""

RandomFloat = Callable[[], float]
RandomBits = Callable[[int], int]


class OrderBook:
    """The two sides of a market's book, the market's price grid and its cached price texts.

    Plain slots: the trade loop touches these a lot (:class:`MarketState` extends this class).
    """

    __slots__ = (
        "asks",
        "bids",
        "book_cache",
        "book_timestamp",
        "grid",
        "group_seed",
        "level_gap_ticks",
        "level_size",
        "price_decimals",
        "price_texts",
        "target_ask_levels",
        "target_bid_levels",
        "usual_spread_ticks",
    )

    asks: list[Level]  # ascending
    bids: list[Level]  # descending
    grid: PriceGrid
    price_decimals: dict[int, Decimal]  # price units -> Decimal on the grid (a bounded cache)
    price_texts: dict[int, str]  # price units -> its number text (a bounded cache)
    level_size: int  # the usual size of a new level, in units
    level_gap_ticks: int  # a new level lies 1 to this many ticks beyond its neighbour
    usual_spread_ticks: int  # the widest spread market makers leave alone, in ticks
    target_ask_levels: int  # a side is refilled below this many levels
    target_bid_levels: int
    group_seed: int  # seeds the levels a grouped book synthesises
    book_timestamp: int  # the last change of the book (the last trade), epoch ms
    # the last full book rendered at BOOK_DEPTH: (best ask, best bid, their sizes then, total ask
    # size, total bid size, units), or None after the book's structure changed
    book_cache: tuple[Level, Level, int, int, int, int, BookUnits] | None

    def price_decimal(self, price: int) -> Decimal:
        """The price (units) as a Decimal on the market's grid; cached."""
        d = self.price_decimals.get(price)
        if d is None:
            if len(self.price_decimals) > 4096:
                self.price_decimals.clear()
            d = self.price_decimals[price] = self.grid.fmt(price)
        return d

    def price_text(self, price: int) -> str:
        """The price (units) as number text, ``str(self.price_decimal(price))``; cached."""
        t = self.price_texts.get(price)
        if t is None:
            if len(self.price_texts) > 4096:
                self.price_texts.clear()
            t = self.price_texts[price] = str(self.price_decimal(price))
        return t

    def new_level(self, price: int, size: int) -> Level:
        """A level at ``price`` with ``size`` units, with their texts."""
        return Level(
            price, size, self.price_texts.get(price) or self.price_text(price), size_text(size)
        )

    def take_best_level(
        self, ask: bool, sweep: bool, random: RandomFloat, bits: RandomBits
    ) -> None:
        """A taker consumed the best level of side ``ask`` (a buyer the best ask, a seller the
        best bid): remove it, refill the side behind, then the opposite side may step in behind
        the move, or (not during a sweep) the level may refill at its price, or else market
        makers may tighten the spread."""
        side = self.asks if ask else self.bids
        price = side[0].price
        del side[0]
        self.book_cache = None
        if len(side) < (self.target_ask_levels if ask else self.target_bid_levels):
            self.append_level(ask, side[-1].price if side else price, random, bits)
        r = random()
        if r < P_FOLLOW:  # the opposite side steps in one tick behind the new best
            if side:
                behind = (
                    self.grid.next_down(side[0].price) if ask else self.grid.next_up(side[0].price)
                )
            else:
                behind = price
            self.insert_level(not ask, behind, bits)
        elif r < P_FOLLOW + P_REFILL and not sweep:  # the level refills
            self.insert_level(ask, price, bits)
        else:
            self.tighten(random, bits)

    def append_level(self, ask: bool, after: int, random: RandomFloat, bits: RandomBits) -> None:
        """Add a level behind the last one of side ``ask`` (``after`` is the last price now)."""
        grid = self.grid
        price = after
        for _ in range(1 + int(random() * self.level_gap_ticks)):
            q = grid.next_up(price) if ask else grid.next_down(price)
            if q <= 0:
                break
            price = q
        if price == after:
            return
        level = self.new_level(price, draw_size(self.level_size, bits(12)))
        side = self.asks if ask else self.bids
        if len(side) < BOOK_DEPTH:
            self.book_cache = None
        side.append(level)

    def insert_level(self, ask: bool, price: int, bits: RandomBits) -> None:
        """Add a new best level at ``price`` on side ``ask`` if it lies strictly inside the
        spread; the side then drops its last level if it grew well past its target."""
        asks = self.asks
        bids = self.bids
        if price <= 0 or (asks and price >= asks[0].price) or (bids and price <= bids[0].price):
            return
        level = self.new_level(price, draw_size(self.level_size, bits(12)))
        self.book_cache = None
        side = asks if ask else bids
        side.insert(0, level)
        target = self.target_ask_levels if ask else self.target_bid_levels
        if len(side) > target + TRIM_ABOVE_TARGET:
            del side[-1]

    def tighten(self, random: RandomFloat, bits: RandomBits) -> None:
        """Market makers step in when the spread is wider than the market's usual one."""
        bids = self.bids
        if not bids:
            return
        grid = self.grid
        best_ask = self.asks[0].price
        best_bid = bids[0].price
        tick = grid.tick_at(best_bid)
        spread = self.usual_spread_ticks
        if best_ask - best_bid > spread * tick:
            if random() < 0.5:
                self.insert_level(False, grid.next_down(best_ask - (spread - 1) * tick), bits)
            else:
                self.insert_level(True, grid.next_up(best_bid + (spread - 1) * tick), bits)
