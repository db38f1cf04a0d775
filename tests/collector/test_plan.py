"""collector.intents.Plan against subscriptions.reconcile.DesiredState: where they agree, and
the three facts where they differ on purpose (the Plan docstring lists them)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from upbit_fanout import collector
from upbit_fanout.collector.intents import RECORDED_TOPICS, Limits, Plan, plan
from upbit_fanout.subscriptions.reconcile import desired_state, subscription_for
from upbit_fanout.subscriptions.topics import parse_topic

MEMBERS = [
    "ticker:KRW-BTC",
    "ticker:KRW-ETH",
    "trade:KRW-BTC",
    "orderbook:KRW-BTC",
    "orderbook:KRW-BTC.5",
    "orderbook:KRW-BTC.15@10000",
    "candle.1s:KRW-XRP",
    "myOrder:KRW-BTC",
    "myOrder:*",
    "myAsset",
    "not a topic",
    "ticker:",
    "ticker:krw-btc",
    "x" * 80,
]
WIDE = Limits(max_union_topics=10_000, invalid_examples=1_000, max_invalid_clients=1_000)
"""Limits that refuse nothing the grammar accepts."""

intents = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.frozensets(st.sampled_from(MEMBERS), max_size=8)
)


def test_the_public_name_is_importable() -> None:
    assert collector.Plan is Plan
    assert collector.plan is plan


@settings(max_examples=200, deadline=None)
@given(intents=intents)
def test_within_the_limits_a_plan_is_the_desired_state(intents: dict[str, frozenset[str]]) -> None:
    desired = desired_state(intents)
    got = plan(intents, private_allowed=True, limits=WIDE)
    assert got.public == desired.public
    assert got.private == desired.private
    assert got.public_topics == desired.public_topics
    assert got.private_topics == desired.private_topics
    # the same refusals, per client (a plan's texts are escaped and clipped for P:invalid)
    per_client = Counter(client for client, _ in desired.invalid)
    assert {client: refusal.count for client, refusal in got.refused.items()} == per_client
    assert len(got.invalid) == len(desired.invalid)
    assert got.refused_total == len(desired.invalid)


def test_recording_widens_the_private_subscription_not_its_topics() -> None:
    intents = {"a": ["myOrder:KRW-BTC", "ticker:KRW-BTC"]}
    desired = desired_state(intents)
    got = plan(intents, private_allowed=True, record_private=True)
    assert got.private_topics == desired.private_topics == {parse_topic("myOrder:KRW-BTC")}
    assert got.private == subscription_for(desired.private_topics | RECORDED_TOPICS)
    assert got.private != desired.private


def test_the_collector_limits_refuse_what_the_grammar_accepts() -> None:
    intents = {"a": ["ticker:KRW-BTC", "ticker:KRW-ETH", "myAsset"]}
    desired = desired_state(intents)
    assert not desired.invalid
    got = plan(intents, private_allowed=False, limits=Limits(max_union_topics=1))
    assert got.public_topics == {parse_topic("ticker:KRW-BTC")}  # sorted: the first one fits
    assert got.private.is_empty
    assert set(got.invalid) == {("a", "ticker:KRW-ETH"), ("a", "myAsset")}


def test_refusals_are_bounded_where_the_desired_state_lists_every_one() -> None:
    intents = {f"c{n}": [f"bad topic {m}" for m in range(4)] for n in range(5)}
    desired = desired_state(intents)
    assert len(desired.invalid) == 20
    got = plan(
        intents, private_allowed=True, limits=Limits(invalid_examples=2, max_invalid_clients=3)
    )
    assert len(got.invalid) == 3 * 2  # examples of the listed clients only
    assert (got.hidden_clients, got.hidden_count) == (2, 8)
    assert got.refused_total == 20  # yet every refusal is counted
