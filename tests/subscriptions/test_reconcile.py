from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.subscriptions import Entry, Subscription, desired_state, next_message, parse_topic
from upbit_fanout.subscriptions.topics import ORDERBOOK_DEPTHS


def test_union_of_clients_makes_one_sorted_message() -> None:
    state = desired_state(
        {
            "bot": ["ticker:KRW-ETH", "ticker:KRW-BTC", "orderbook:KRW-BTC.5"],
            "chart": ["orderbook:KRW-BTC.15", "trade:KRW-BTC", "candle.1m:KRW-BTC"],
            "rec": ["ticker:KRW-BTC", "orderbook:KRW-ETH"],
        }
    )
    assert state.public.message("T") == [
        {"ticket": "T"},
        {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
        {"type": "trade", "codes": ["KRW-BTC"]},
        {"type": "orderbook", "codes": ["KRW-BTC.15", "KRW-ETH"]},
        {"type": "candle.1m", "codes": ["KRW-BTC"]},
        {"format": "DEFAULT"},
    ]
    assert state.private.is_empty


def test_largest_depth_wins_and_30_goes_without_suffix() -> None:
    state = desired_state({"a": ["orderbook:KRW-BTC.5"], "b": ["orderbook:KRW-BTC.30"]})
    assert state.public.upstream_codes("orderbook") == ("KRW-BTC",)
    state = desired_state({"a": ["orderbook:KRW-BTC.1"], "b": ["orderbook:KRW-BTC.5"]})
    assert state.public.upstream_codes("orderbook") == ("KRW-BTC.5",)


def test_private_topics_form_their_own_message() -> None:
    state = desired_state({"a": ["myOrder:KRW-ETH", "myOrder:KRW-BTC"], "b": ["myAsset"]})
    assert state.private.entries == (
        Entry("myOrder", ("KRW-BTC", "KRW-ETH")),
        Entry("myAsset", None),
    )
    everything = desired_state({"a": ["myOrder:KRW-BTC"], "b": ["myOrder:*"]})
    assert everything.private.message("T")[1] == {"type": "myOrder"}
    assert everything.public.is_empty


def test_invalid_intents_are_reported_and_never_sent() -> None:
    bad = ["ticker:krw-btc", "bogus:KRW-BTC", "orderbook:KRW-BTC.7", "myAsset:KRW-BTC"]
    state = desired_state({"good": ["ticker:KRW-BTC"], "bad": bad})
    assert set(state.invalid) == {("bad", text) for text in bad}
    assert state.public.entries == (Entry("ticker", ("KRW-BTC",)),)
    assert state.private.is_empty


def test_next_message_is_none_when_nothing_changed_or_nothing_wanted() -> None:
    state = desired_state({"a": ["ticker:KRW-BTC"]})
    assert next_message(state.public, None, "T") == state.public.message("T")
    # The same wish rebuilt (not the very object that was sent): equal, so nothing to send.
    again = desired_state({"a": ["ticker:KRW-BTC"]})
    assert next_message(again.public, state.public, "T") is None
    # ... while a changed wish is sent.
    more = desired_state({"a": ["ticker:KRW-BTC", "ticker:KRW-ETH"]})
    assert next_message(more.public, state.public, "T") is not None
    assert next_message(Subscription(), state.public, "T") is None


codes = st.sampled_from(["KRW-BTC", "KRW-ETH", "BTC-ETH", "USDT-BTC", "KRW-XRP"])
public_topics = st.one_of(
    st.builds(lambda t, c: f"{t}:{c}", st.sampled_from(["ticker", "trade", "candle.1m"]), codes),
    st.builds(lambda c: f"orderbook:{c}", codes),
    st.builds(lambda c, d: f"orderbook:{c}.{d}", codes, st.sampled_from(ORDERBOOK_DEPTHS)),
    st.builds(lambda c: f"myOrder:{c}", st.one_of(codes, st.just("*"))),
    st.just("myAsset"),
    st.sampled_from(["ticker:krw-btc", "nope:KRW-BTC"]),
)
intents = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.lists(public_topics, max_size=8), max_size=4
)


@given(intents)
def test_reconciling_twice_gives_no_change(live: dict[str, list[str]]) -> None:
    state = desired_state(live)
    # Reconciling again builds the state anew from the same intents; comparing the very object
    # that was sent with itself could not fail.
    again = desired_state(live)
    assert next_message(again.public, state.public, "T") is None
    assert again == state


@given(intents)
def test_order_of_clients_and_topics_does_not_matter(live: dict[str, list[str]]) -> None:
    reordered = {client: list(reversed(topics)) for client, topics in reversed(live.items())}
    assert desired_state(reordered).public == desired_state(live).public
    assert desired_state(reordered).private == desired_state(live).private


@given(intents)
def test_every_valid_topic_is_served_by_the_message(live: dict[str, list[str]]) -> None:
    state = desired_state(live)
    for topic in state.topics:
        sub = state.private if topic.is_private else state.public
        if topic.type == "myAsset" or topic.code == "*":
            assert any(e.type == topic.type and e.codes is None for e in sub.entries)
            continue
        served = sub.upstream_codes(topic.type)
        if any(e.type == topic.type and e.codes is None for e in sub.entries):
            continue
        if topic.type == "orderbook":
            depths = [30 if "." not in c else int(c.split(".")[1]) for c in served
                      if c.split(".")[0] == topic.code]  # fmt: skip
            assert depths
            assert depths[0] >= topic.units
        else:
            assert topic.code in served


@pytest.mark.parametrize("text", ["ticker:KRW-BTC", "myAsset", "orderbook:KRW-BTC.5"])
def test_topics_in_state_are_parsed_topics(text: str) -> None:
    assert desired_state({"a": [text]}).topics == {parse_topic(text)}
