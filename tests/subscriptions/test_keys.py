from __future__ import annotations

import pytest
from redis.crc import key_slot

from upbit_fanout.subscriptions import Keys, parse_topic


def test_names_follow_the_contract() -> None:
    keys = Keys("upbit")
    assert keys.intents("bot-1") == "upbit:intents:bot-1"
    assert keys.intents_pattern == "upbit:intents:*"
    assert keys.control == "upbit:control"
    assert keys.union == "upbit:union"
    assert keys.status == "upbit:status"
    assert keys.notices == "upbit:notices"
    assert keys.leader == "upbit:leader"
    assert keys.channel(parse_topic("ticker:KRW-BTC")) == "upbit:ticker:KRW-BTC"
    assert keys.channel("orderbook:KRW-BTC.5") == "upbit:orderbook:KRW-BTC.5"
    assert keys.channel(parse_topic("myAsset")) == "upbit:myAsset"
    assert keys.last(parse_topic("myOrder:*")) == "upbit:last:myOrder:*"
    assert keys.stream("myOrder") == "upbit:stream:myOrder"


def test_client_id_round_trip_and_keyspace_channels() -> None:
    keys = Keys("p")
    assert keys.client_id_of(keys.intents("chart.7")) == "chart.7"
    assert keys.client_id_of("p:union") is None
    assert keys.keyspace_pattern(3) == "__keyspace@3__:p:intents:*"
    assert keys.keyspace_key("__keyspace@3__:p:intents:a") == "p:intents:a"
    assert keys.keyevent_channel(3, "sadd") == "__keyevent@3__:sadd"


@pytest.mark.parametrize("client_id", ["", "a b", "x:y", "é", "a" * 129])
def test_bad_client_ids_are_refused(client_id: str) -> None:
    with pytest.raises(ValueError, match="client id"):
        Keys().intents(client_id)


@pytest.mark.parametrize("prefix", ["", "a:b", "a b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Keys(prefix)


def test_cluster_names_put_what_one_script_touches_in_one_slot() -> None:
    """docs/contract.md, "Redis Cluster": a channel and its last value share a slot, a stream and
    its identity set share one, the collector's own keys share one; channels, intents, streams
    and the classic channels keep their names."""
    plain, keys = Keys("upbit"), Keys("upbit", cluster=True)
    assert keys.clustered() is keys
    assert plain.clustered() == keys
    for topic in ("ticker:KRW-BTC", "orderbook:KRW-ETH.5", "myOrder:*", "canary"):
        assert keys.channel(topic) == plain.channel(topic)
        assert key_slot(keys.last(topic).encode()) == key_slot(keys.channel(topic).encode())
    assert keys.last("ticker:KRW-BTC") == "upbit:last:{upbit:ticker:KRW-BTC}"
    for type_name in ("myOrder", "myAsset"):
        assert keys.stream(type_name) == plain.stream(type_name)
        assert key_slot(keys.stream_seen(type_name).encode()) == key_slot(
            keys.stream(type_name).encode()
        )
    own = {keys.leader, keys.leader_token, keys.status, keys.union, keys.invalid}
    own |= {keys.private_mark, keys.standby("a")}
    assert {key_slot(name.encode()) for name in own} == {key_slot(b"upbit")}
    assert keys.status == "{upbit}:status"
    assert (keys.intents("bot"), keys.control, keys.notices) == (
        plain.intents("bot"),
        plain.control,
        plain.notices,
    )
    assert key_slot(keys.fence("17").encode()) == key_slot(b"17")


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        Keys("up{bit}")
