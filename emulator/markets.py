"""The emulator's market universe: what ``GET /v1/market/all`` lists.

The real universe has the size and shape of docs/upbit-protocol.md §9 (on 2026-09-23: 855 pairs,
289 KRW, 328 BTC and 238 USDT, over 358 distinct base assets). :func:`default_markets` rebuilds that
shape deterministically: about sixty well-known coins with their real Korean and English names
first, then generated pseudo-coins (2-6 upper-case letters, never clashing with a real ticker) to
reach the exact counts. Codes are ``QUOTE-BASE`` in upper case; there is no ``BTC-BTC`` and no
``USDT-USDT``.

Everything here is pure and deterministic: the same call gives the same tuple, every time.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CAUTION_FLAGS",
    "KNOWN_BASES",
    "QUOTES",
    "Market",
    "default_markets",
    "market_all_payload",
    "reference_krw_price",
]

#: The quote currencies, in the order markets are listed.
QUOTES: tuple[str, ...] = ("KRW", "BTC", "USDT")

#: The keys of ``market_event.caution`` in ``/v1/market/all?is_details=true``.
CAUTION_FLAGS: tuple[str, ...] = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)

_COUNTS: dict[str, int] = {"KRW": 289, "BTC": 328, "USDT": 238}
_DISTINCT_BASES = 358


@dataclass(frozen=True, slots=True)
class Market:
    """One tradable pair, e.g. ``KRW-BTC`` (BTC priced in KRW)."""

    code: str
    korean_name: str
    english_name: str
    warning: bool
    #: the ``market_event.caution`` flags that are true (a subset of :data:`CAUTION_FLAGS`)
    caution: frozenset[str] = frozenset()

    @property
    def quote(self) -> str:
        return self.code.partition("-")[0]

    @property
    def base(self) -> str:
        return self.code.partition("-")[2]


# (ticker, korean_name, english_name, approximate price in KRW). The price seeds the simulation,
# so cross rates agree: BTC-ETH ~ KRW-ETH / KRW-BTC, USDT-BTC ~ KRW-BTC / KRW-USDT.
_REAL: tuple[tuple[str, str, str, float], ...] = (
    ("BTC", "비트코인", "Bitcoin", 140_000_000),
    ("ETH", "이더리움", "Ethereum", 5_000_000),
    ("XRP", "리플", "XRP", 3_300),
    ("SOL", "솔라나", "Solana", 250_000),
    ("DOGE", "도지코인", "Dogecoin", 350),
    ("ADA", "에이다", "Cardano", 1_000),
    ("TRX", "트론", "TRON", 350),
    ("AVAX", "아발란체", "Avalanche", 35_000),
    ("LINK", "체인링크", "Chainlink", 25_000),
    ("DOT", "폴카닷", "Polkadot", 7_000),
    ("BCH", "비트코인캐시", "Bitcoin Cash", 700_000),
    ("ETC", "이더리움클래식", "Ethereum Classic", 30_000),
    ("XLM", "스텔라루멘", "Stellar Lumens", 450),
    ("SHIB", "시바이누", "Shiba Inu", 0.021),
    ("NEAR", "니어프로토콜", "NEAR Protocol", 4_000),
    ("APT", "앱토스", "Aptos", 8_000),
    ("SUI", "수이", "Sui", 5_000),
    ("HBAR", "헤데라", "Hedera", 300),
    ("ATOM", "코스모스", "Cosmos", 6_000),
    ("POL", "폴리곤 에코시스템 토큰", "POL (ex-MATIC)", 300),
    ("ARB", "아비트럼", "Arbitrum", 600),
    ("OP", "옵티미즘", "Optimism", 1_000),
    ("SAND", "샌드박스", "The Sandbox", 400),
    ("MANA", "디센트럴랜드", "Decentraland", 400),
    ("AXS", "엑시인피니티", "Axie Infinity", 3_500),
    ("AAVE", "에이브", "Aave", 400_000),
    ("UNI", "유니스왑", "Uniswap", 12_000),
    ("EOS", "이오스", "EOS", 800),
    ("NEO", "네오", "NEO", 9_000),
    ("QTUM", "퀀텀", "Qtum", 3_000),
    ("IOTA", "아이오타", "IOTA", 250),
    ("SEI", "세이", "Sei", 300),
    ("STX", "스택스", "Stacks", 1_000),
    ("IMX", "이뮤터블엑스", "Immutable X", 700),
    ("ALGO", "알고랜드", "Algorand", 300),
    ("VET", "비체인", "VeChain", 40),
    ("THETA", "쎄타토큰", "Theta Token", 1_000),
    ("FLOW", "플로우", "Flow", 500),
    ("CHZ", "칠리즈", "Chiliz", 60),
    ("GRT", "더그래프", "The Graph", 130),
    ("ENS", "이더리움네임서비스", "Ethereum Name Service", 30_000),
    ("SNT", "스테이터스네트워크토큰", "Status Network Token", 35),
    ("STEEM", "스팀", "Steem", 200),
    ("BAT", "베이직어텐션토큰", "Basic Attention Token", 200),
    ("ZRX", "제로엑스", "0x Protocol", 300),
    ("ONT", "온톨로지", "Ontology", 200),
    ("ZIL", "질리카", "Zilliqa", 15),
    ("ICX", "아이콘", "ICON", 150),
    ("HIVE", "하이브", "Hive", 300),
    ("MED", "메디블록", "MediBloc", 5),
    ("ANKR", "앵커", "Ankr", 25),
    ("PEPE", "페페", "Pepe", 0.015),
    ("USDT", "테더", "Tether", 1_450),
    ("USDC", "유에스디코인", "USD Coin", 1_450),
    ("ONDO", "온도파이낸스", "Ondo Finance", 1_300),
    ("ENA", "에테나", "Ethena", 800),
    ("WLD", "월드코인", "Worldcoin", 1_500),
    ("BTT", "비트토렌트", "BitTorrent", 0.0012),
    ("KAVA", "카바", "Kava", 500),
    ("EGLD", "멀티버스엑스", "MultiversX", 30_000),
    ("BLUR", "블러", "Blur", 150),
    ("MASK", "마스크네트워크", "Mask Network", 2_000),
)
_REAL_BY_TICKER = {ticker: (ko, en, krw) for ticker, ko, en, krw in _REAL}

#: The real coins of the universe (the rest are generated pseudo-coins).
KNOWN_BASES: frozenset[str] = frozenset(_REAL_BY_TICKER)

# Real coins not listed against BTC: stablecoins and coins worth less than a few satoshis.
_NOT_IN_BTC = frozenset({"BTC", "USDT", "USDC", "SHIB", "PEPE", "BTT", "MED", "SNT", "ZIL"})
# Real coins not listed against USDT.
_NOT_IN_USDT = frozenset({"USDT", "MED", "SNT", "STEEM", "HIVE", "ICX", "ONT", "BTT"})

# How Korean writes Latin letters, for names of generated coins ("QZX" -> "큐지엑스").
_HANGUL_LETTERS = {
    "A": "에이",
    "B": "비",
    "C": "씨",
    "D": "디",
    "E": "이",
    "F": "에프",
    "G": "지",
    "H": "에이치",
    "I": "아이",
    "J": "제이",
    "K": "케이",
    "L": "엘",
    "M": "엠",
    "N": "엔",
    "O": "오",
    "P": "피",
    "Q": "큐",
    "R": "알",
    "S": "에스",
    "T": "티",
    "U": "유",
    "V": "브이",
    "W": "더블유",
    "X": "엑스",
    "Y": "와이",
    "Z": "지",
}
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("", ""),
    (" Network", "네트워크"),
    (" Protocol", "프로토콜"),
    (" Chain", "체인"),
    (" Token", "토큰"),
    (" Finance", "파이낸스"),
    (" Coin", "코인"),
    (" AI", "에이아이"),
)
_SEED = "upbit-fanout/emulator/markets/v1"


def _generated_bases(count: int) -> list[tuple[str, str, str]]:
    rng = random.Random(_SEED + "/codes")
    taken = set(_REAL_BY_TICKER) | set(QUOTES)
    out: list[tuple[str, str, str]] = []
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while len(out) < count:
        length = rng.choices((2, 3, 4, 5, 6), weights=(3, 30, 40, 18, 9))[0]
        code = "".join(rng.choice(letters) for _ in range(length))
        if code in taken:
            continue
        taken.add(code)
        en_suffix, ko_suffix = _SUFFIXES[rng.randrange(len(_SUFFIXES))]
        english = code.capitalize() + en_suffix if length > 3 else code + en_suffix
        korean = "".join(_HANGUL_LETTERS[c] for c in code) + ko_suffix
        out.append((code, korean, english))
    return out


@functools.cache
def _universe() -> tuple[Market, ...]:
    gen_count = _DISTINCT_BASES - len(_REAL)
    generated = _generated_bases(gen_count)
    names: dict[str, tuple[str, str]] = {t: (ko, en) for t, ko, en, _ in _REAL}
    names.update({code: (ko, en) for code, ko, en in generated})
    order = [t for t, *_ in _REAL] + [code for code, *_ in generated]
    gen_codes = [code for code, *_ in generated]

    rng = random.Random(_SEED + "/listing")
    # KRW: every real coin plus the first generated ones.
    krw = order[: _COUNTS["KRW"]]
    krw_set = set(krw)
    krw_generated = [c for c in gen_codes if c in krw_set]
    not_krw = order[_COUNTS["KRW"] :]  # listed only against BTC (and maybe USDT)
    # BTC: eligible real coins, every coin missing from KRW, then generated KRW coins.
    btc_real = [t for t, *_ in _REAL if t not in _NOT_IN_BTC]
    need = _COUNTS["BTC"] - len(btc_real) - len(not_krw)
    btc = set(btc_real) | set(not_krw) | set(rng.sample(krw_generated, need))
    # USDT: eligible real coins, then generated coins from anywhere.
    usdt_real = [t for t, *_ in _REAL if t not in _NOT_IN_USDT]
    usdt = set(usdt_real) | set(rng.sample(gen_codes, _COUNTS["USDT"] - len(usdt_real)))
    members = {"KRW": krw_set, "BTC": btc, "USDT": usdt}

    # A few generated markets carry a warning (유의종목) or caution flags.
    warned = set(rng.sample(gen_codes, 7))
    markets: list[Market] = []
    for base in order:
        ko, en = names[base]
        for quote in QUOTES:
            if base not in members[quote]:
                continue
            code = f"{quote}-{base}"
            caution: frozenset[str] = frozenset()
            if base not in _REAL_BY_TICKER and rng.random() < 0.015:
                caution = frozenset({CAUTION_FLAGS[rng.randrange(len(CAUTION_FLAGS))]})
            markets.append(Market(code, ko, en, warning=base in warned, caution=caution))
    return tuple(markets)


def default_markets() -> tuple[Market, ...]:
    """The emulated universe: 289 KRW, 328 BTC and 238 USDT pairs (855), always the same."""
    return _universe()


def reference_krw_price(base: str) -> float:
    """A plausible price in KRW for ``base``: the real one for known coins, else a stable guess.

    The simulation derives every starting price from this, so cross rates are consistent.
    """
    known = _REAL_BY_TICKER.get(base)
    if known is not None:
        return known[2]
    rng = random.Random(f"{_SEED}/price/{base}")
    # log-uniform between 2 KRW and 200,000 KRW: most small caps are cheap.
    return float(10 ** rng.uniform(0.3, 5.3))


def market_all_payload(markets: Sequence[Market], *, is_details: bool) -> list[dict[str, Any]]:
    """The JSON list ``GET /v1/market/all`` returns (``?is_details=true`` adds ``market_event``)."""
    out: list[dict[str, Any]] = []
    for m in markets:
        item: dict[str, Any] = {
            "market": m.code,
            "korean_name": m.korean_name,
            "english_name": m.english_name,
        }
        if is_details:
            item["market_event"] = {
                "warning": m.warning,
                "caution": {flag: flag in m.caution for flag in CAUTION_FLAGS},
            }
        out.append(item)
    return out
