from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("client_id", ["", "a b", "x:y", "é", "a" * 129])
def test_bad_client_ids_are_refused(client_id: str) -> None:
    with pytest.raises(ValueError, match="client id"):
        Keys().intents(client_id)


@pytest.mark.parametrize("prefix", ["", "a:b", "a b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Keys(prefix)
