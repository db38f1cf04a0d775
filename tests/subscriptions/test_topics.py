from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.subscriptions import InvalidTopicError, Topic, parse_topic, split_valid
from upbit_fanout.subscriptions.topics import (
    ORDERBOOK_DEPTHS,
    TOPIC_TYPES,
    canonical_level,
    could_be_topic,
)

VALID = [
    ("ticker:KRW-BTC", Topic("ticker", "KRW-BTC")),
    ("trade:BTC-ETH", Topic("trade", "BTC-ETH")),
    ("orderbook:KRW-BTC", Topic("orderbook", "KRW-BTC")),
    ("orderbook:KRW-BTC.1", Topic("orderbook", "KRW-BTC", 1)),
    ("orderbook:USDT-XRP.30", Topic("orderbook", "USDT-XRP", 30)),
    ("candle.1s:KRW-BTC", Topic("candle.1s", "KRW-BTC")),
    ("candle.240m:KRW-1INCH", Topic("candle.240m", "KRW-1INCH")),
    ("myOrder:KRW-BTC", Topic("myOrder", "KRW-BTC")),
    ("myOrder:*", Topic("myOrder", "*")),
    ("myAsset", Topic("myAsset")),
    ("orderbook:KRW-BTC.15@10000", Topic("orderbook", "KRW-BTC", 15, "10000")),
    ("orderbook:KRW-BTC@10000", Topic("orderbook", "KRW-BTC", None, "10000")),
    ("orderbook:KRW-XRP.5@0.1", Topic("orderbook", "KRW-XRP", 5, "0.1")),
]


@pytest.mark.parametrize(("text", "topic"), VALID)
def test_valid_topics_parse_and_print_back(text: str, topic: Topic) -> None:
    assert parse_topic(text) == topic
    assert str(parse_topic(text)) == text


INVALID = [
    ("ticker:krw-btc", "market codes are upper case: KRW-BTC"),
    ("bogus:KRW-BTC", "valid types: ticker, trade, orderbook, candle.1s"),
    ("orderbook:KRW-BTC.7", "orderbook depth must be 1, 5, 15 or 30"),
    ("orderbook:KRW-BTC.3", "orderbook depth must be 1, 5, 15 or 30"),
    ("myAsset:KRW-BTC", "myAsset takes no code"),
    ("Ticker:KRW-BTC", "types are case-sensitive: ticker"),
    ("myorder:*", "types are case-sensitive: myOrder"),
    ("candle.2m:KRW-BTC", "candle units are 1s, 1m"),
    ("ticker", "ticker needs a market code"),
    ("ticker:", "ticker needs a market code"),
    ("ticker:*", "only for myOrder"),
    ("trade:KRW-BTC.5", "only orderbook takes a depth suffix"),
    ("ticker:KRWBTC", "QUOTE-BASE"),
    ("ticker: KRW-BTC", "no spaces"),
    ("", "empty"),
    ("orderbook:BTC-ETH@10", "for KRW markets only"),
    ("orderbook:USDT-BTC.15@1", "for KRW markets only"),
    ("orderbook:KRW-BTC@0", "level 0 means no grouping"),
    ("orderbook:KRW-BTC@10000.0", "write the level as 10000: orderbook:KRW-BTC@10000"),
    ("orderbook:KRW-BTC.15@010", "write the level as 10: orderbook:KRW-BTC.15@10"),
    ("orderbook:KRW-BTC@1e4", "a positive number"),
    ("orderbook:KRW-BTC@-5", "a positive number"),
    ("orderbook:KRW-BTC@", "a positive number"),
    ("ticker:KRW-BTC@10", "only orderbook takes a level"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_topics_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        parse_topic(text)
    assert message in str(info.value)
    assert info.value.topic == text
    assert isinstance(info.value, ValueError)


def test_split_valid_keeps_reasons() -> None:
    valid, invalid = split_valid(["ticker:KRW-BTC", "bogus:KRW-BTC", "ticker:krw-btc"])
    assert valid == {Topic("ticker", "KRW-BTC")}
    assert set(invalid) == {"bogus:KRW-BTC", "ticker:krw-btc"}


def test_private_flag_and_units() -> None:
    assert parse_topic("myAsset").is_private
    assert parse_topic("myOrder:*").is_private
    assert not parse_topic("ticker:KRW-BTC").is_private
    assert parse_topic("orderbook:KRW-BTC").units == 30
    assert parse_topic("orderbook:KRW-BTC.5").units == 5


codes = st.from_regex(r"[A-Z]{3,4}-[A-Z0-9]{1,6}", fullmatch=True)
public_types = st.sampled_from([t for t in TOPIC_TYPES if t not in ("myOrder", "myAsset")])


@given(type_name=public_types, code=codes)
def test_every_public_type_and_code_round_trips(type_name: str, code: str) -> None:
    topic = parse_topic(f"{type_name}:{code}")
    assert parse_topic(str(topic)) == topic


@given(code=codes, depth=st.integers(min_value=0, max_value=100))
def test_depth_suffix_only_documented_values(code: str, depth: int) -> None:
    text = f"orderbook:{code}.{depth}"
    if depth in ORDERBOOK_DEPTHS:
        assert parse_topic(text).depth == depth
    else:
        with pytest.raises(InvalidTopicError):
            parse_topic(text)


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_invalid_topic(text: str) -> None:
    try:
        topic = parse_topic(text)
    except InvalidTopicError:
        return
    assert str(topic) == text


@given(
    code=st.from_regex(r"KRW-[A-Z0-9]{1,6}", fullmatch=True),
    depth=st.sampled_from(["", ".1", ".5", ".15", ".30"]),
    level=st.decimals(min_value="0.00000001", max_value="999999999999", places=8),
)
def test_level_topics_round_trip_in_one_spelling(code: str, depth: str, level: object) -> None:
    text = f"orderbook:{code}{depth}@{canonical_level(level)}"
    topic = parse_topic(text)
    assert str(topic) == text
    assert could_be_topic(text)
    assert topic.level == canonical_level(level)
