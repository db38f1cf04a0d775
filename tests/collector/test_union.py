"""collector.union.UnionIndex: the incremental union is always plan() recomputed from scratch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from upbit_fanout.collector.intents import KeyRefusal, Limits, plan
from upbit_fanout.collector.union import UnionIndex
from upbit_fanout.subscriptions.topics import parse_topic

MEMBERS = [
    "ticker:KRW-BTC",
    "ticker:KRW-ETH",
    "trade:KRW-BTC",
    "orderbook:KRW-BTC",
    "orderbook:KRW-BTC.5",
    "candle.1s:KRW-XRP",
    "myOrder:KRW-BTC",
    "myOrder:*",
    "myAsset",
    "not a topic",
    "ticker:",
    "x" * 80,
]
CLIENTS = ["a", "b", "c", "d", "e"]

members = st.frozensets(st.sampled_from(MEMBERS), max_size=6)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(CLIENTS), members, st.integers(0, 5)),
        st.tuples(st.just("remove"), st.sampled_from(CLIENTS)),
        st.tuples(st.just("refuse"), st.sampled_from(CLIENTS), st.integers(1, 3)),
        st.tuples(st.just("unrefuse"), st.sampled_from(CLIENTS)),
    ),
    max_size=40,
)
limits = st.builds(
    Limits,
    max_topics_per_client=st.integers(3, 6),
    max_union_topics=st.integers(2, 12),
    max_request_bytes=st.sampled_from([200, 260, 128 * 1024]),
    invalid_examples=st.integers(1, 3),
    max_invalid_clients=st.integers(1, 4),
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, limits=limits, private_allowed=st.booleans(), record=st.booleans())
def test_the_incremental_union_is_plan_from_scratch(
    ops: list[tuple[object, ...]], limits: Limits, private_allowed: bool, record: bool
) -> None:
    index = UnionIndex(limits=limits)
    index.reset({}, private_allowed=private_allowed, markets=None, record_private=record)
    intents: dict[str, frozenset[str]] = {}
    seen: dict[str, float] = {}
    refused: dict[str, KeyRefusal] = {}
    for op in ops:
        client = str(op[1])
        if op[0] == "set":
            intents[client] = op[2]  # type: ignore[assignment]
            seen[client] = float(op[3])  # type: ignore[arg-type]
            index.set_client(client, intents[client], seen[client])
        elif op[0] == "remove":  # the key expired or was deleted
            intents.pop(client, None)
            index.remove_client(client)
        elif op[0] == "refuse":
            refused[client] = KeyRefusal(f"refused {op[2]}", int(op[2]), ("ticker:KRW-BTC",))  # type: ignore[call-overload]
            index.set_key_refusal(client, refused[client])
        else:
            refused.pop(client, None)
            index.set_key_refusal(client, None)
        expected = plan(
            intents,
            private_allowed=private_allowed,
            limits=limits,
            refused_keys=refused,
            seen=seen,
            record_private=record,
        )
        got = index.plan()
        assert got == expected
        assert index.plan() is got  # unchanged: the same object, callers skip all work


def test_reference_counts_follow_the_clients() -> None:
    index = UnionIndex()
    btc = parse_topic("ticker:KRW-BTC")
    index.set_client("a", frozenset({"ticker:KRW-BTC"}))
    index.set_client("b", frozenset({"ticker:KRW-BTC", "trade:KRW-BTC"}))
    first = index.plan()
    assert index.count(btc) == 2
    index.remove_client("a")  # b still wants it: the union does not change
    assert index.count(btc) == 1
    assert index.plan().public_topics == first.public_topics
    assert index.plan().public is first.public  # the subscription was not rebuilt
    index.remove_client("b")
    assert index.count(btc) == 0
    assert index.plan().public_topics == frozenset()
    assert index.full_plans == 0


def test_an_overfull_union_falls_back_to_the_full_plan() -> None:
    limits = Limits(max_union_topics=1)
    index = UnionIndex(limits=limits)
    index.set_client("old", frozenset({"ticker:KRW-BTC"}), 1.0)
    index.set_client("new", frozenset({"ticker:KRW-ETH"}), 2.0)
    got = index.plan()
    assert got.public_topics == {parse_topic("ticker:KRW-BTC")}  # the oldest client is served
    assert "new" in got.refused
    assert index.full_plans == 1
