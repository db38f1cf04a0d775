"""Upbit's price grids (tick sizes) and order minimums, for the simulation and the account.

Pure. A :class:`PriceGrid` holds, per price band, its lower bound and its tick in the simulation's
1e-8 units (:mod:`emulator.fixedpoint`), and how many decimals a price of the band shows. Which
grid a market uses depends on its quote currency (KRW, BTC, USDT; KRW-USDT and KRW-USDC have
their own), see :func:`grid_for`. :func:`tick_size`, :func:`is_valid_price` and
:func:`min_order_total` answer in ``Decimal`` for the account's order checks.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from upbit_fanout.emulator.fixedpoint import E8, POW10, SCALE, WIDE, ZERO

__all__ = [
    "BTC_GRID",
    "KRW_GRID",
    "KRW_STABLECOIN_GRID",
    "USDT_GRID",
    "PriceGrid",
    "grid_for",
    "is_valid_price",
    "min_order_total",
    "tick_size",
]


class PriceGrid:
    """A price grid: band lower bounds and the tick of each band, all in 1e-8 units."""

    __slots__ = ("bounds", "decimals", "ticks")

    def __init__(self, bands: Iterable[tuple[str, str]], *, decimals: int | None = None) -> None:
        pairs = [(int(Decimal(lo) * SCALE), int(Decimal(t) * SCALE)) for lo, t in bands]
        self.bounds = [lo for lo, _ in pairs]
        self.ticks = [t for _, t in pairs]
        # decimals shown for a price in each band (BTC prices always show 8)
        self.decimals = [
            decimals if decimals is not None else max(0, 8 - len(str(t)) + 1) for t in self.ticks
        ]

    def tick_at(self, price: int) -> int:
        """The tick of the band ``price`` lies in."""
        return self.ticks[bisect_right(self.bounds, price) - 1]

    def next_up(self, price: int) -> int:
        """The smallest valid price above ``price``."""
        q = price + 1
        t = self.ticks[bisect_right(self.bounds, q) - 1]
        return -(-q // t) * t

    def next_down(self, price: int) -> int:
        """The largest valid price below ``price``, or 0 if there is none."""
        q = price - 1
        if q <= 0:
            return 0
        t = self.ticks[bisect_right(self.bounds, q) - 1]
        q = q // t * t
        return q if q > 0 else 0

    def snap_down(self, price: int) -> int:
        """``price`` rounded down to its band's tick (at least one tick)."""
        t = self.tick_at(price)
        return max(t, price // t * t)

    def snap_up(self, price: int) -> int:
        """``price`` rounded up to its band's tick."""
        t = self.tick_at(price)
        return -(-price // t) * t

    def places(self, price: int) -> int:
        """The decimals a price of ``price``'s band shows."""
        return self.decimals[bisect_right(self.bounds, price) - 1]

    def fmt(self, price: int, places: int | None = None) -> Decimal:
        """``price`` as a Decimal with the decimals of its band (or ``places``)."""
        if price == 0:
            return ZERO
        d = self.decimals[bisect_right(self.bounds, price) - 1] if places is None else places
        if d == 0:
            return Decimal(price // SCALE)
        return Decimal(price // POW10[8 - d]).scaleb(-d, WIDE)


# Upbit's KRW grid (docs.upbit.com, KRW market info, since 2025-07-31 for >= 100 KRW; the bands
# below 100 KRW as documented in 2024).
_KRW_BANDS: Final = (
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
KRW_GRID: Final = PriceGrid(_KRW_BANDS)
KRW_STABLECOIN_GRID: Final = PriceGrid(
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
"""KRW-USDT and KRW-USDC: 0.5 KRW steps between 1,000 and 10,000 KRW (since 2025-03-21)."""
BTC_GRID: Final = PriceGrid((("0", "0.00000001"),), decimals=8)
USDT_GRID: Final = PriceGrid(
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
_MIN_ORDER_TOTAL: Final = {"KRW": Decimal(5000), "BTC": Decimal("0.00005"), "USDT": Decimal("0.5")}


def grid_for(code: str) -> PriceGrid:
    """The price grid of market ``code`` (by its quote currency; other quotes use USDT's)."""
    quote = code.partition("-")[0]
    if quote == "KRW":
        return KRW_STABLECOIN_GRID if code in ("KRW-USDT", "KRW-USDC") else KRW_GRID
    if quote == "BTC":
        return BTC_GRID
    return USDT_GRID


def tick_size(code: str, price: Decimal) -> Decimal:
    """The price step of ``code`` at ``price`` (Upbit's KRW/BTC/USDT grids)."""
    return grid_for(code).tick_at(int(price * SCALE)) * E8


def is_valid_price(code: str, price: Decimal) -> bool:
    """True if ``price`` is positive and on ``code``'s tick grid."""
    if not price.is_finite() or price <= 0:
        return False
    units = price * SCALE
    if units != units.to_integral_value():
        return False
    u = int(units)
    return u % grid_for(code).tick_at(u) == 0


def min_order_total(quote: str) -> Decimal:
    """Upbit's minimum order total per quote currency (5,000 KRW, 0.00005 BTC, 0.5 USDT)."""
    return _MIN_ORDER_TOTAL.get(quote, Decimal("0.5"))
