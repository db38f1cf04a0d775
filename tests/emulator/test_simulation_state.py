"""One market's state (emulator.market_state): the change against the previous close and the
day's roll, from tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from upbit_fanout.emulator.fixedpoint import SCALE
from upbit_fanout.emulator.market_state import DAY_MS, MarketState, new_market_state
from upbit_fanout.emulator.markets import default_markets

NOW = 1_790_000_000_000  # 2026-09-21T14:13:20Z
MARKETS = {m.code: m for m in default_markets()}


def units(text: str) -> int:
    return int(Decimal(text) * SCALE)


def market(code: str, *, prev_close: str) -> MarketState:
    m = new_market_state(MARKETS[code], index=0, now_ms=NOW, seed=0, tape=0)
    m.prev_closing_price = units(prev_close)
    m.change_cache.clear()
    m.change_text_cache.clear()
    return m


# (code, previous close, price, change, change_price, signed_change_price, change_rate,
#  signed_change_rate), numbers as the payload writes them
CHANGE_TABLE = [
    ("KRW-XRP", "3000", "3000", "EVEN", "0", "0", "0", "0"),
    ("KRW-XRP", "3000", "3001", "RISE", "1", "1", "0.0003333333", "0.0003333333"),
    ("KRW-XRP", "3000", "2999", "FALL", "1", "-1", "0.0003333333", "-0.0003333333"),
    # 1/2048 = 0.00048828125: the rate is rounded half-up at 10 decimals
    ("KRW-XRP", "2048", "2049", "RISE", "1", "1", "0.0004882813", "0.0004882813"),
    # across a band edge the change shows the places of the finer band of the two
    ("KRW-XRP", "99.99", "100", "RISE", "0.01", "0.01", "0.0001000100", "0.0001000100"),
    ("KRW-XRP", "100", "99.99", "FALL", "0.01", "-0.01", "0.0001000000", "-0.0001000000"),
    ("BTC-ETH", "0.035", "0.03500001", "RISE", "1E-8", "1E-8", "2.857E-7", "2.857E-7"),
]


@pytest.mark.parametrize("row", CHANGE_TABLE, ids=[f"{r[0]} {r[1]}->{r[2]}" for r in CHANGE_TABLE])
def test_change_against_the_previous_close(row: tuple[str, ...]) -> None:
    code, prev_close, price, *want = row
    m = market(code, prev_close=prev_close)
    assert list(m.change_text_at(units(price))) == want
    # the Decimals are the texts' own, and both are cached
    assert [str(x) for x in m.change_at(units(price))] == want
    assert m.change_text_at(units(price)) is m.change_text_at(units(price))


@pytest.mark.parametrize(
    ("roll_to", "carried"),
    [(1, True), (2, False)],  # the next day carries half of today's totals; a later one none
    ids=["next day", "two days later"],
)
def test_roll_day_restarts_the_day_at_the_last_price(roll_to: int, carried: bool) -> None:
    m = market("KRW-XRP", prev_close="3000")
    volume, amount = m.acc_trade_volume, m.acc_trade_price
    assert volume > 0
    m.roll_day(m.day_end_ms - DAY_MS + roll_to * DAY_MS + 5)
    last = m.trade_price
    assert m.prev_closing_price == m.opening_price == m.high_price == m.low_price == last
    text = str(m.price_decimal(last))
    assert m.prev_closing_price_text == m.opening_price_text == text
    assert m.high_price_text == m.low_price_text == text
    assert (m.acc_trade_volume, m.acc_trade_price) == (0, 0)
    assert (m.acc_ask_volume, m.acc_bid_volume) == (0, 0)
    assert m.no_trade_today
    want = (volume // 2, amount // 2) if carried else (0, 0)
    assert (m.carried_trade_volume_24h, m.carried_trade_price_24h) == want
    assert m.change_text_at(last)[0] == "EVEN"
