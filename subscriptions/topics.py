"""Topics: what a client can ask for, spelled ``TYPE:CODE`` (docs/contract.md, "Topics").

``ticker:KRW-BTC``, ``candle.1m:BTC-ETH``, ``orderbook:KRW-BTC.5`` (depth 1, 5, 15 or 30; no suffix
is Upbit's default, 30 units), ``orderbook:KRW-BTC.15@10000`` / ``orderbook:KRW-BTC@10000`` (a
KRW book with its prices grouped by 10,000 KRW: Upbit's ``level``, docs/upbit-protocol.md §2.2),
``myOrder:KRW-BTC``, ``myOrder:*`` (every market) and ``myAsset`` (no code). :func:`parse_topic`
accepts exactly these and refuses everything else with a message that says what would be right,
because one bad code sent upstream makes Upbit close the socket and drop every stream
(docs/upbit-protocol.md §7).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.upbit_fields import (
    CANDLE_TYPES,
    CANDLE_UNITS,
    PRIVATE_TYPES,
    QUOTATION_TYPES,
)

__all__ = [
    "ALL_MARKETS",
    "ORDERBOOK_DEPTHS",
    "TOPIC_TYPES",
    "Topic",
    "canonical_level",
    "could_be_topic",
    "parse_topic",
    "parse_topics",
    "split_valid",
]

TOPIC_TYPES: tuple[str, ...] = (*QUOTATION_TYPES, *PRIVATE_TYPES)
ORDERBOOK_DEPTHS: tuple[int, ...] = (1, 5, 15, 30)
DEFAULT_ORDERBOOK_DEPTH = 30
ALL_MARKETS = "*"

# QUOTE-BASE in upper case. Quotes on Upbit Korea are KRW, BTC and USDT; the sister venues use
# SGD, IDR and THB, so any short upper-case quote is accepted. Bases may contain digits (1INCH).
_CODE = re.compile(r"[A-Z]{2,6}-[A-Z0-9]{1,15}")
# An orderbook level (price grouping step) as written in a topic: a positive decimal number in
# its one canonical spelling (no sign, no exponent, no leading or trailing zeros), so that one
# level has one topic and one channel. At most 12 digits before and 8 after the point.
_LEVEL = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{0,7}[1-9])?")
LEVEL_QUOTE = "KRW"
"""Upbit groups orderbook prices (``level``) on KRW markets only (docs/upbit-protocol.md §9)."""
_TYPES_BY_LOWER = {name.lower(): name for name in TOPIC_TYPES}
_EXAMPLE = "e.g. ticker:KRW-BTC, orderbook:KRW-BTC.5, candle.1m:KRW-ETH, myOrder:*, myAsset"
_LEVEL_EXAMPLE = "orderbook:KRW-BTC.15@10000"


@dataclass(frozen=True, slots=True, order=True)
class Topic:
    """One validated topic. ``str(topic)`` is its canonical spelling, used in keys and channels.

    ``code`` is None for ``myAsset`` and ``"*"`` for ``myOrder:*``. ``depth`` is the orderbook
    suffix as written (None when absent: Upbit's default of 30 units). ``level`` is the
    orderbook's price grouping step in its canonical text (``"10000"``, ``"0.1"``; None: no
    grouping, Upbit's level 0); only KRW orderbooks have one.
    """

    type: str
    code: str | None = None
    depth: int | None = None
    level: str | None = None

    def __str__(self) -> str:
        if self.code is None:
            return self.type
        text = self.code if self.depth is None else f"{self.code}.{self.depth}"
        if self.level is not None:
            text = f"{text}@{self.level}"
        return f"{self.type}:{text}"

    @property
    def is_private(self) -> bool:
        """True for myOrder and myAsset, which need the private endpoint and API keys."""
        return self.type in PRIVATE_TYPES

    @property
    def units(self) -> int:
        """Orderbook units this topic carries (30 when no suffix was given)."""
        return DEFAULT_ORDERBOOK_DEPTH if self.depth is None else self.depth


_MAYBE = re.compile(
    "myAsset|myOrder:\\*|(?:"
    + "|".join(re.escape(name) for name in TOPIC_TYPES if name != "myAsset")
    + f"):{_CODE.pattern}(?:\\.\\d+)?(?:@[0-9.]+)?"
)


def could_be_topic(text: str) -> bool:
    """False when :func:`parse_topic` would certainly refuse ``text``; one regex match, no
    exception, so 100,000 junk members cost a fraction of parsing them. (True does not mean
    valid: ``parse_topic`` decides.)"""
    return _MAYBE.fullmatch(text) is not None


@lru_cache(maxsize=65536)
def parse_topic(text: str) -> Topic:
    """Parse and validate one topic; raise :class:`InvalidTopicError` saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidTopicError(repr(text), f"a topic is a string TYPE:CODE ({_EXAMPLE})")
    if not text:
        raise InvalidTopicError(text, f"empty; a topic is TYPE:CODE ({_EXAMPLE})")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidTopicError(text, "topics contain no spaces")
    type_text, sep, code_text = text.partition(":")
    type_name = _check_type(text, type_text)

    if type_name == "myAsset":
        if sep:
            raise InvalidTopicError(text, "myAsset takes no code: the topic is 'myAsset'")
        return Topic("myAsset")
    if not sep or not code_text:
        raise InvalidTopicError(text, f"{type_name} needs a market code: {type_name}:KRW-BTC")

    if code_text == ALL_MARKETS:
        if type_name != "myOrder":
            raise InvalidTopicError(text, "'*' (every market) is only for myOrder: myOrder:*")
        return Topic("myOrder", ALL_MARKETS)

    depth: int | None = None
    level: str | None = None
    code_text, at, level_text = code_text.partition("@")
    if at:
        level = _check_level(text, type_name, code_text, level_text)
    code_part, dot, depth_text = code_text.partition(".")
    if dot:
        if type_name != "orderbook":
            raise InvalidTopicError(text, "only orderbook takes a depth suffix (.1, .5, .15, .30)")
        if not depth_text.isdigit() or int(depth_text) not in ORDERBOOK_DEPTHS:
            raise InvalidTopicError(
                text,
                f"orderbook depth must be 1, 5, 15 or 30, not {depth_text!r} "
                f"(Upbit would silently send 30): {type_name}:{code_part}.15",
            )
        depth = int(depth_text)
    _check_code(text, code_part)
    if level is not None and not code_part.startswith(f"{LEVEL_QUOTE}-"):
        raise InvalidTopicError(
            text,
            f"an orderbook level (price grouping) is for KRW markets only; Upbit sends nothing "
            f"for one on {code_part}: drop '@{level}'",
        )
    return Topic(type_name, code_part, depth, level)


def parse_topics(texts: Iterable[str]) -> list[Topic]:
    """Parse many topics; the first invalid one raises."""
    return [parse_topic(text) for text in texts]


def split_valid(texts: Iterable[str]) -> tuple[set[Topic], dict[str, str]]:
    """Sort raw topic strings into valid topics and ``{text: reason}`` for the invalid ones."""
    valid: set[Topic] = set()
    invalid: dict[str, str] = {}
    for text in texts:
        try:
            valid.add(parse_topic(text))
        except InvalidTopicError as exc:
            invalid[text] = exc.reason
    return valid, invalid


def canonical_level(value: object) -> str | None:
    """The canonical text of an orderbook level as Upbit writes it in a frame or a listing
    (``10000``, ``10000.0``, ``"0.10"``, ``Decimal``...): ``"10000"``, ``"0.1"``; None for 0, a
    missing level, or anything that is not a finite non-negative number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        return None
    if not number.is_finite() or number <= 0:
        return None
    return format(number.normalize(), "f")


def _check_level(topic: str, type_name: str, code_text: str, level_text: str) -> str:
    if type_name != "orderbook":
        raise InvalidTopicError(
            topic, f"only orderbook takes a level (price grouping): {_LEVEL_EXAMPLE}"
        )
    if _LEVEL.fullmatch(level_text):
        if set(level_text) <= {"0", "."}:
            raise InvalidTopicError(
                topic,
                f"level 0 means no grouping: write the topic without '@': orderbook:{code_text}",
            )
        return level_text
    canonical = canonical_level(level_text) if re.fullmatch(r"[0-9.]+", level_text) else None
    if canonical is not None and _LEVEL.fullmatch(canonical):
        raise InvalidTopicError(
            topic, f"write the level as {canonical}: orderbook:{code_text}@{canonical}"
        )
    raise InvalidTopicError(
        topic,
        f"an orderbook level is a positive number of the quote currency, e.g. "
        f"{_LEVEL_EXAMPLE} (got {level_text!r})",
    )


def _check_type(topic: str, type_text: str) -> str:
    if type_text in TOPIC_TYPES:
        return type_text
    proper = _TYPES_BY_LOWER.get(type_text.lower())
    if proper is not None:
        raise InvalidTopicError(topic, f"types are case-sensitive: {proper}")
    if type_text.startswith("candle"):
        raise InvalidTopicError(
            topic,
            f"candle units are {', '.join(CANDLE_UNITS)}: "
            f"{', '.join(CANDLE_TYPES[:2])}, ..., {CANDLE_TYPES[-1]}",
        )
    raise InvalidTopicError(
        topic, f"unknown type {type_text!r}; valid types: {', '.join(TOPIC_TYPES)}"
    )


def _check_code(topic: str, code: str) -> None:
    if _CODE.fullmatch(code):
        return
    upper = code.upper()
    if upper != code and _CODE.fullmatch(upper):
        raise InvalidTopicError(topic, f"market codes are upper case: {upper}")
    if "-" not in code:
        raise InvalidTopicError(topic, f"a market code is QUOTE-BASE, e.g. KRW-BTC (got {code!r})")
    raise InvalidTopicError(
        topic, f"{code!r} is not a market code; a market code is QUOTE-BASE, e.g. KRW-BTC"
    )
