"""The emulated market universe has the real one's size and shape (docs/upbit-protocol.md §9)."""

from __future__ import annotations

import json
import re
from collections import Counter

from upbit_fanout.emulator import markets
from upbit_fanout.emulator.markets import (
    CAUTION_FLAGS,
    KNOWN_BASES,
    Market,
    default_markets,
    market_all_payload,
)

CODE = re.compile(r"^(KRW|BTC|USDT)-[A-Z0-9]{2,6}$")


def test_counts_per_quote_match_the_real_universe() -> None:
    universe = default_markets()
    assert len(universe) == 855
    assert Counter(m.quote for m in universe) == {"KRW": 289, "BTC": 328, "USDT": 238}
    assert len({m.base for m in universe}) == 358


def test_codes_are_unique_upper_case_quote_base() -> None:
    codes = [m.code for m in default_markets()]
    assert len(set(codes)) == len(codes)
    for code in codes:
        assert CODE.match(code), code
    assert "BTC-BTC" not in codes
    assert "USDT-USDT" not in codes


def test_well_known_pairs_are_present_with_real_names() -> None:
    by_code = {m.code: m for m in default_markets()}
    for code in ("KRW-BTC", "KRW-ETH", "KRW-XRP", "BTC-ETH", "BTC-XRP", "USDT-BTC", "USDT-ETH"):
        assert code in by_code
    assert by_code["KRW-BTC"].korean_name == "비트코인"
    assert by_code["KRW-BTC"].english_name == "Bitcoin"
    assert by_code["BTC-ETH"].base == "ETH"
    assert by_code["BTC-ETH"].quote == "BTC"
    # every real coin is listed against KRW, and they come first
    assert [m.base for m in default_markets()[:2]] == ["BTC", "BTC"]
    assert {m.base for m in default_markets() if m.quote == "KRW"} >= KNOWN_BASES


def test_generated_coins_look_like_tickers_and_have_names() -> None:
    generated = [m for m in default_markets() if m.base not in KNOWN_BASES]
    assert len({m.base for m in generated}) == 358 - len(KNOWN_BASES)
    for m in generated:
        assert 2 <= len(m.base) <= 6
        assert m.base.isalpha()
        assert m.korean_name
        assert m.english_name


def test_universe_is_deterministic() -> None:
    first = default_markets()
    rebuilt = markets._universe.__wrapped__()  # computed again, not the cached tuple
    assert rebuilt == first
    assert default_markets() is first


def test_a_few_markets_carry_warnings_and_cautions() -> None:
    universe = default_markets()
    warned = [m for m in universe if m.warning]
    cautioned = [m for m in universe if m.caution]
    assert 1 <= len(warned) <= 40
    assert 1 <= len(cautioned) <= 40
    assert all(m.caution <= set(CAUTION_FLAGS) for m in cautioned)


def test_market_all_payload_plain_shape() -> None:
    payload = market_all_payload(default_markets(), is_details=False)
    assert len(payload) == 855
    assert payload[0] == {"market": "KRW-BTC", "korean_name": "비트코인", "english_name": "Bitcoin"}
    assert all(set(item) == {"market", "korean_name", "english_name"} for item in payload)
    json.dumps(payload, ensure_ascii=False)  # plain JSON types only


def test_market_all_payload_details_has_market_event() -> None:
    warned = Market(
        "KRW-ABC", "에이비씨", "Abc", warning=True, caution=frozenset({"PRICE_FLUCTUATIONS"})
    )
    plain = Market("BTC-ABC", "에이비씨", "Abc", warning=False)
    payload = market_all_payload([warned, plain], is_details=True)
    assert payload[0] == {
        "market": "KRW-ABC",
        "korean_name": "에이비씨",
        "english_name": "Abc",
        "market_event": {
            "warning": True,
            "caution": {
                "PRICE_FLUCTUATIONS": True,
                "TRADING_VOLUME_SOARING": False,
                "DEPOSIT_AMOUNT_SOARING": False,
                "GLOBAL_PRICE_DIFFERENCES": False,
                "CONCENTRATION_OF_SMALL_ACCOUNTS": False,
            },
        },
    }
    assert payload[1]["market_event"]["warning"] is False
    assert not any(payload[1]["market_event"]["caution"].values())
