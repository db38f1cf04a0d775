"""Upbit's price grids as the simulation and the account use them (emulator.ticks), from tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from upbit_fanout.emulator.fixedpoint import SCALE
from upbit_fanout.emulator.ticks import (
    BTC_GRID,
    KRW_GRID,
    KRW_STABLECOIN_GRID,
    USDT_GRID,
    PriceGrid,
    grid_for,
    is_valid_price,
    min_order_total,
    tick_size,
)


def units(text: str) -> int:
    return int(Decimal(text) * SCALE)


@pytest.mark.parametrize(
    ("code", "grid"),
    [
        ("KRW-BTC", KRW_GRID),
        ("KRW-USDT", KRW_STABLECOIN_GRID),
        ("KRW-USDC", KRW_STABLECOIN_GRID),
        ("BTC-ETH", BTC_GRID),
        ("USDT-BTC", USDT_GRID),
        ("ETH-ABC", USDT_GRID),  # no such quote on Upbit: USDT's grid
    ],
)
def test_grid_for_picks_the_quote_currency_grid(code: str, grid: PriceGrid) -> None:
    assert grid_for(code) is grid


# (grid, price, next_up, next_down, snap_down, snap_up, places) with prices as decimal text
GRID_TABLE = [
    # KRW: band edges at 100, 5,000 and 1,000,000 KRW
    (KRW_GRID, "99.99", "100", "99.98", "99.99", "99.99", 2),
    (KRW_GRID, "100", "101", "99.99", "100", "100", 0),
    (KRW_GRID, "4999", "5000", "4998", "4999", "4999", 0),
    (KRW_GRID, "5000", "5005", "4999", "5000", "5000", 0),
    (KRW_GRID, "5003", "5005", "5000", "5000", "5005", 0),
    (KRW_GRID, "1000000", "1001000", "999500", "1000000", "1000000", 0),
    (KRW_GRID, "0.12345", "0.1235", "0.1234", "0.1234", "0.1235", 4),
    (KRW_GRID, "0.00000001", "0.00000002", "0", "0.00000001", "0.00000001", 8),
    # KRW-USDT and KRW-USDC: 0.5 KRW between 1,000 and 10,000 KRW
    (KRW_STABLECOIN_GRID, "1450", "1450.5", "1449.5", "1450", "1450", 1),
    (KRW_STABLECOIN_GRID, "1450.2", "1450.5", "1450", "1450", "1450.5", 1),
    (KRW_STABLECOIN_GRID, "999.9", "1000", "999.8", "999.9", "999.9", 1),
    # BTC: one tick of 1e-8, always 8 decimals
    (BTC_GRID, "0.035", "0.03500001", "0.03499999", "0.035", "0.035", 8),
    # USDT: 0.01 from 10 USDT up
    (USDT_GRID, "95000", "95000.01", "94999.99", "95000", "95000", 2),
    (USDT_GRID, "0.24", "0.2401", "0.2399", "0.24", "0.24", 4),
]


@pytest.mark.parametrize(
    "row", GRID_TABLE, ids=[f"{row[1]}-{i}" for i, row in enumerate(GRID_TABLE)]
)
def test_grid_steps_snaps_and_places(row: tuple[PriceGrid, str, str, str, str, str, int]) -> None:
    grid, price, up, down, snap_down, snap_up, places = row
    p = units(price)
    assert grid.next_up(p) == units(up)
    assert grid.next_down(p) == units(down)
    assert grid.snap_down(p) == units(snap_down)
    assert grid.snap_up(p) == units(snap_up)
    assert grid.places(p) == places


def test_snap_down_never_reaches_zero_and_next_down_stops_there() -> None:
    assert KRW_GRID.snap_down(0) == 1  # at least one tick
    assert KRW_GRID.next_down(1) == 0
    assert KRW_GRID.next_down(0) == 0


@pytest.mark.parametrize(
    ("grid", "price", "places", "text"),
    [
        (KRW_GRID, "142009000", None, "142009000"),
        (KRW_GRID, "12.34", None, "12.34"),
        (KRW_GRID, "0.5", None, "0.5000"),  # its band shows 4 decimals
        (KRW_GRID, "5000", 2, "5000.00"),  # a change price shows the wider band's places
        (KRW_GRID, "0", None, "0"),
        (BTC_GRID, "0.035", None, "0.03500000"),
        (USDT_GRID, "95000.5", None, "95000.50"),
        (KRW_STABLECOIN_GRID, "1450.5", None, "1450.5"),
    ],
)
def test_fmt_writes_a_price_with_its_bands_decimals(
    grid: PriceGrid, price: str, places: int | None, text: str
) -> None:
    assert str(grid.fmt(units(price), places)) == text


@pytest.mark.parametrize(
    ("code", "price", "tick", "valid"),
    [
        ("KRW-BTC", "142009000", "1000", True),
        ("KRW-BTC", "142009500", "1000", False),
        ("KRW-XRP", "3300", "1", True),
        ("KRW-XRP", "3300.5", "1", False),
        ("KRW-USDT", "1450.5", "0.5", True),
        ("KRW-USDT", "1450.25", "0.5", False),
        ("BTC-ETH", "0.035", "0.00000001", True),
        ("BTC-ETH", "0.000000001", "0.00000001", False),
        ("USDT-BTC", "95000.01", "0.01", True),
        ("USDT-DOGE", "0.24", "0.0001", True),
        ("KRW-BTC", "0", "0.00000001", False),
    ],
)
def test_tick_size_and_valid_prices(code: str, price: str, tick: str, valid: bool) -> None:
    assert tick_size(code, Decimal(price)) == Decimal(tick)
    assert is_valid_price(code, Decimal(price)) is valid


@pytest.mark.parametrize("price", ["NaN", "Infinity", "-Infinity", "-1000", "-0.5"])
def test_a_negative_or_non_finite_price_is_never_valid(price: str) -> None:
    assert not is_valid_price("KRW-BTC", Decimal(price))


@pytest.mark.parametrize(
    ("quote", "total"), [("KRW", "5000"), ("BTC", "0.00005"), ("USDT", "0.5"), ("ETH", "0.5")]
)
def test_min_order_total_per_quote(quote: str, total: str) -> None:
    assert min_order_total(quote) == Decimal(total)
