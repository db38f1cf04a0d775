"""Hostile intents, the pure part: limits, leases, ids, markets and the bounded report, from
tables (no Redis). The drills against a real Redis and collector process are in
test_hostile_intents.py."""

from __future__ import annotations

import logging
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.collector.intents import (
    ClientRefusal,
    KeyRefusal,
    Limits,
    RefusalLog,
    escape,
    id_reason,
    lease_reason,
    plan,
    valid_client_id,
)
from upbit_fanout.collector.markets import MarketSet
from upbit_fanout.emulator.markets import default_markets
from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.reconcile import RequestSize, subscription_for
from upbit_fanout.subscriptions.topics import TOPIC_TYPES, Topic, could_be_topic, parse_topic

UPBIT = MarketSet.of(market.code for market in default_markets())
KRW = [code for code in UPBIT.codes if code.startswith("KRW-")]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"bot-1", "bot-1"),
        (b"", ""),
        (b"bad\nid", "bad\\x0aid"),
        (b"has space", "has\\x20space"),
        (b"back\\slash", "back\\\\slash"),
        (b"\xff\xfe", "\\xff\\xfe"),
        ("캔들".encode(), "\\xec\\xba\\x94\\xeb\\x93\\xa4"),
        (b"a" * 100, "a" * 80 + "...[100B]"),
        (b"\n" * 1_000_000, "\\x0a" * 20 + "...[1000000B]"),
    ],
)
def test_names_from_redis_are_escaped_and_cut(raw: bytes, shown: str) -> None:
    assert escape(raw) == shown
    assert "\n" not in escape(raw)
    assert " " not in escape(raw)


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        (b"bot-1", "bot-1"),
        (b"a.b_c-d@e", "a.b_c-d@e"),
        (b"x" * 128, "x" * 128),
        (b"x" * 129, None),
        (b"", None),
        (b"bad\nid", None),
        (b"has space", None),
        (b"\xff", None),
        (b"colon:id", None),
        ("봇".encode(), None),
    ],
)
def test_client_ids_are_those_of_the_contract(raw: bytes, valid: str | None) -> None:
    assert valid_client_id(raw) == valid


def test_a_shorter_client_id_limit_refuses_longer_ids_and_says_why() -> None:
    limits = Limits(max_client_id_length=16)
    assert valid_client_id(b"x" * 16, limits) == "x" * 16
    assert valid_client_id(b"x" * 17, limits) is None
    assert "this one is 17 bytes long, more than 16" in id_reason(b"x" * 17, limits)
    assert "this one is empty" in id_reason(b"")
    assert "this one ('bad\\x0aid') has other characters" in id_reason(b"bad\nid")


LIMITS = Limits(max_lease=300, lease_grace=10)


@pytest.mark.parametrize(
    ("ttl_ms", "since", "now", "refused"),
    [
        (30_000, None, 100.0, None),  # a lease
        (300_000, None, 100.0, None),  # at the maximum
        (-1, 100.0, 105.0, None),  # no TTL, within the grace period (SADD, then EXPIRE)
        (-1, 100.0, 110.0, "no TTL"),
        (301_000, 100.0, 109.9, None),
        (301_000, 100.0, 110.0, "TTL of 301 s is above the maximum lease of 300 s"),
    ],
)
def test_a_key_without_a_proper_lease_is_refused_after_the_grace_period(
    ttl_ms: int, since: float | None, now: float, refused: str | None
) -> None:
    reason = lease_reason("upbit:intents:x", ttl_ms, since, now, LIMITS)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None
        assert refused in reason
        assert "EXPIRE it" in reason


def test_no_ttl_says_what_to_do() -> None:
    reason = lease_reason("upbit:intents:x", -1, 0.0, 60.0, LIMITS)
    assert reason is not None
    assert "EXPIRE upbit:intents:x 30" in reason


def test_a_typo_is_refused_with_the_closest_market() -> None:
    result = plan(
        {"bot": ["ticker:KRW-BTC", "ticker:KRW-BTX"]}, private_allowed=False, markets=UPBIT
    )
    assert {str(t) for t in result.public_topics} == {"ticker:KRW-BTC"}
    assert result.invalid == {
        ("bot", "ticker:KRW-BTX"): "unknown market KRW-BTX; did you mean KRW-BTC?"
    }
    assert result.invalid_fields() == {
        "bot": "1 refused",
        "bot ticker:KRW-BTX": "unknown market KRW-BTX; did you mean KRW-BTC?",
    }


def test_without_a_market_list_codes_are_not_checked() -> None:
    result = plan({"bot": ["ticker:KRW-BTX"]}, private_allowed=False, markets=None)
    assert {str(t) for t in result.public_topics} == {"ticker:KRW-BTX"}
    assert result.refused == {}


def test_a_client_over_its_limit_is_refused_whole_and_the_report_stays_small() -> None:
    limits = Limits(max_topics_per_client=1000, invalid_examples=3)
    hostile = [f"ticker:KRW-ZZ{n:07d}" for n in range(100_000)]
    result = plan(
        {"hostile": hostile, "good": ["ticker:KRW-BTC"]},
        private_allowed=False,
        markets=UPBIT,
        limits=limits,
    )
    assert {str(t) for t in result.public_topics} == {"ticker:KRW-BTC"}
    refusal = result.refused["hostile"]
    assert refusal.count == 100_000
    assert len(refusal.examples) == 3
    assert "more than the 1000 a client may ask for" in refusal.reason
    assert result.refused_total == 100_000
    fields = result.invalid_fields()
    assert len(fields) == 4  # the summary and three examples
    assert sum(len(k) + len(v) for k, v in fields.items()) < 2_000


def test_every_member_of_a_client_at_its_limit_is_judged_and_counted() -> None:
    junk = [f"junk-{n}" for n in range(1000)]
    result = plan({"junk": junk}, private_allowed=False, markets=UPBIT)
    refusal = result.refused["junk"]
    assert refusal.count == 1000
    assert len(refusal.examples) == 5
    assert refusal.summary() == "1000 refused (5 shown)"
    assert all("unknown type" in reason for _, reason in refusal.examples)


def test_when_the_union_is_full_the_newest_clients_excess_is_refused() -> None:
    limits = Limits(max_union_topics=4)
    intents = {
        "old": ["ticker:KRW-BTC", "ticker:KRW-ETH", "ticker:KRW-XRP"],
        "new": ["ticker:KRW-BTC", "trade:KRW-BTC", "trade:KRW-ETH", "trade:KRW-XRP"],
    }
    result = plan(intents, private_allowed=False, limits=limits, seen={"old": 1.0, "new": 2.0})
    assert {str(t) for t in result.public_topics} == {
        "ticker:KRW-BTC",  # shared with the old client: costs nothing
        "ticker:KRW-ETH",
        "ticker:KRW-XRP",
        "trade:KRW-BTC",
    }
    assert "old" not in result.refused
    assert result.refused["new"].count == 2
    assert all(
        "the union is full (4 topics" in reason for _, reason in result.refused["new"].examples
    )
    # Which client is the newest decides, not the name.
    flipped = plan(intents, private_allowed=False, limits=limits, seen={"old": 2.0, "new": 1.0})
    assert "new" not in flipped.refused
    assert flipped.refused["old"].count == 2


def test_the_request_size_limit_refuses_the_newest_clients_excess() -> None:
    limits = Limits(max_request_bytes=500)
    old = [f"ticker:{code}" for code in KRW[:10]]
    new = [f"trade:{code}" for code in KRW[:40]]
    result = plan({"a": old, "b": new}, private_allowed=False, limits=limits, seen={"b": 5.0})
    assert len(orjson.dumps(result.public.message(str(uuid.uuid4())))) <= 500
    assert "a" not in result.refused
    assert 0 < result.refused["b"].count < 40
    assert "would exceed 500 bytes" in result.refused["b"].examples[0][1]


def test_a_long_member_is_refused_and_reported_short() -> None:
    huge = "ticker:KRW-" + "B" * 1_000_000
    result = plan({"bot": [huge, "ticker:KRW-BTC"]}, private_allowed=False)
    ((topic, reason),) = result.refused["bot"].examples
    assert len(topic) < 100
    assert topic.endswith("...[1000011B]")
    assert reason == "longer than 64 bytes (max_topic_length)"
    assert {str(t) for t in result.public_topics} == {"ticker:KRW-BTC"}


def test_refused_keys_join_the_report_with_their_samples() -> None:
    result = plan(
        {},
        private_allowed=False,
        refused_keys={
            "x": KeyRefusal("upbit:intents:x is a string, not a SET of topics; DEL it"),
            "bad\\x0aid": KeyRefusal("client id not served", 2, ("ticker:KRW-BTC", "a\nb")),
        },
    )
    assert result.refused["x"] == ClientRefusal(
        1, (), "upbit:intents:x is a string, not a SET of topics; DEL it"
    )
    fields = result.invalid_fields()
    assert fields["x"] == "1 refused: upbit:intents:x is a string, not a SET of topics; DEL it"
    assert fields["bad\\x0aid a\\x0ab"] == "client id not served"
    assert all("\n" not in key + value for key, value in fields.items())


def test_the_report_lists_a_bounded_number_of_clients() -> None:
    limits = Limits(max_invalid_clients=10, invalid_examples=2)
    intents = {f"c{n:05d}": [f"junk{m}" for m in range(50)] for n in range(1000)}
    result = plan(intents, private_allowed=False, limits=limits)
    assert len(result.refused) == 10
    assert result.hidden_clients == 990
    assert result.refused_total == 50_000
    fields = result.invalid_fields()
    assert len(fields) == 10 * 3 + 1
    assert fields["*"].startswith("49500 refused intents of 990 more clients")


def test_refusals_are_logged_per_client_in_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = [0.0]
    log = RefusalLog(interval=10.0, per_interval=10, clock=lambda: clock[0])
    before = plan({}, private_allowed=False)
    intents = {f"c{n}": [f"junk{n}-{m}" for m in range(1000)] for n in range(100)}
    after = plan(intents, private_allowed=False)
    assert log.report(before, after) == 11  # ten clients, then one line for the rest
    assert "refusing 1000 intent(s) of client c0, e.g. junk0-0:" in caplog.records[0].getMessage()
    assert "not logging them for 10 s" in caplog.records[-1].getMessage()
    assert log.report(after, after) == 0  # nothing changed: nothing logged
    clock[0] = 10.0
    assert log.report(after, after) == 1  # the next window says how many were left out
    assert "of 90 more client(s) were not logged" in caplog.records[-1].getMessage()
    # A client changing every moment is logged once per interval, with what was held back.
    lines = 0
    for step in range(1, 50):
        clock[0] = 10.0 + step * 0.5
        churn = plan({"c0": [f"junk{step}"]}, private_allowed=False)
        lines += log.report(before, churn)
        before = churn
    assert lines == 3  # at 10, 20 and 30 s
    assert "similar lines held back" in caplog.records[-1].getMessage()
    assert all(len(record.getMessage()) < 600 for record in caplog.records)


def test_a_one_megabyte_member_makes_a_short_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    after = plan({"bot": ["x" * 1_000_000]}, private_allowed=False)
    assert RefusalLog().report(plan({}, private_allowed=False), after) == 1
    assert len(caplog.records[0].getMessage()) < 300


_TOPICS = st.builds(
    lambda type_name, code, depth: parse_topic(
        type_name
        if type_name == "myAsset"
        else f"{type_name}:{code}{f'.{depth}' if type_name == 'orderbook' and depth else ''}"
    ),
    st.sampled_from(TOPIC_TYPES),
    st.sampled_from([*UPBIT.codes[:50], "USDT-1INCH", "KRW-ABCDEFGHIJKLMNO"]),
    st.sampled_from([None, 1, 5, 15, 30]),
)


@given(st.lists(_TOPICS, max_size=60))
def test_the_size_bound_is_never_below_the_real_message(topics: list[Topic]) -> None:
    for private in (False, True):
        chosen = [topic for topic in topics if topic.is_private is private]
        size = RequestSize()
        for topic in chosen:
            size.add(topic)
        message = subscription_for(chosen).message(str(uuid.uuid4()))
        assert len(orjson.dumps(message)) <= size.bytes


_NEAR_TOPICS = st.builds(
    lambda type_name, sep, code, suffix: f"{type_name}{sep}{code}{suffix}",
    st.sampled_from([*TOPIC_TYPES, "Ticker", "candle.2m", "bogus", ""]),
    st.sampled_from([":", "", "::", " :"]),
    st.one_of(
        st.sampled_from(["KRW-BTC", "krw-btc", "*", "KRW-1INCH", "KRWBTC", "K-BTC", ""]),
        st.text(max_size=12),
    ),
    st.one_of(st.sampled_from(["", ".5", ".05", ".7", ".30", ".", ".x"]), st.text(max_size=4)),
)


@given(_NEAR_TOPICS)
def test_the_cheap_check_never_refuses_a_valid_topic(text: str) -> None:
    try:
        parse_topic(text)
    except InvalidTopicError:
        return
    assert could_be_topic(text), text


@pytest.mark.parametrize(
    ("text", "maybe"),
    [
        ("ticker:KRW-BTC", True),
        ("orderbook:KRW-BTC.5", True),
        ("candle.240m:USDT-1INCH", True),
        ("myOrder:*", True),
        ("myAsset", True),
        ("ticker:krw-btc", False),
        ("junk-17", False),
        ("ticker:KRW-BTC ", False),
        ("ticker:KRW-ZZ0000001", True),  # a well-formed code: the market list decides
    ],
)
def test_junk_is_told_apart_without_parsing(text: str, maybe: bool) -> None:
    assert could_be_topic(text) is maybe
