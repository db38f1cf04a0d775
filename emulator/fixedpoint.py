"""The simulation's fixed-point numbers: integer units, and their ``Decimal`` and number text.

Pure. Inside the simulation prices and sizes are integers in units of 1e-8 (:data:`SCALE` units
per 1) and amounts (price x size) integers in units of 1e-16, so that arithmetic is exact and
cheap; they become ``Decimal`` or number text only at the edge. The text functions give exactly
``str()`` of the Decimal functions without making a Decimal (the hot path writes text).
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Final

__all__ = [
    "E8",
    "E10",
    "POW10",
    "SCALE",
    "SIZE_EXACT",
    "WIDE",
    "ZERO",
    "amount_decimal",
    "amount_text",
    "size_decimal",
    "size_text",
]

SCALE: Final = 100_000_000
"""Internal units per 1 for prices and sizes (1e-8)."""
E8: Final = Decimal("1E-8")
E10: Final = Decimal("1E-10")
ZERO: Final = Decimal(0)
WIDE: Final = Context(prec=80)
"""A context wide enough for the exact products of long amounts."""
POW10: Final = tuple(10**i for i in range(9))

SIZE_EXACT: Final = 10**28
"""Sizes from here on are rounded by Decimal's default context (28 digits)."""


def size_decimal(units: int) -> Decimal:
    """A size (or price) in 1e-8 units as a Decimal with 8 places (``0`` for 0)."""
    return Decimal(units) * E8 if units else ZERO


def amount_decimal(units: int) -> Decimal:
    """An amount (price x size, in 1e-16 units) as an exact Decimal."""
    return Decimal(units).scaleb(-16, WIDE) if units else ZERO


def size_text(units: int) -> str:
    """``str(size_decimal(units))`` without making a Decimal (``units >= 0``)."""
    if units >= 100_000_000:
        if units >= SIZE_EXACT:  # the default context's 28 digits round these
            return str(size_decimal(units))
        s = str(units)
        return s[:-8] + "." + s[-8:]
    if units >= 100:  # from 1e-6 up, Decimal writes plain notation with all 8 places
        return f"0.{units:08d}"
    return str(size_decimal(units))


def amount_text(units: int) -> str:
    """``str(amount_decimal(units))`` without making a Decimal (``units >= 0``)."""
    if units >= 10_000_000_000_000_000:
        s = str(units)
        if len(s) <= 80:  # WIDE's precision: longer ones are rounded by Decimal
            return s[:-16] + "." + s[-16:]
    elif units >= 10_000_000_000:
        return f"0.{units:016d}"
    return str(amount_decimal(units))
