"""``Collector(key_prefix=...)``, spelled as ``FanoutClient(key_prefix=...)``; the earlier
``keys=Keys(...)`` still works for a release, with a DeprecationWarning.

The Cluster case (the collector picks the ``{P}`` names itself from ``key_prefix``) runs against a
real Redis Cluster in tests/integration/test_cluster.py, and a collector and a client meeting on
one ``key_prefix`` in tests/client/test_end_to_end.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from upbit_fanout.collector import Collector
from upbit_fanout.subscriptions.keys import Keys

URL = "ws://127.0.0.1:9/websocket/v1"  # never connected: nobody asks for anything


def _collector(**options: Any) -> Collector:
    return Collector(redis=aioredis.Redis(), upstream_url=URL, validate_markets=False, **options)


def test_key_prefix_names_every_key() -> None:
    collector = _collector(key_prefix="mine")
    assert collector.key_prefix == "mine"
    assert collector.keys == Keys("mine")
    assert collector.keys.status == "mine:status"


def test_the_default_prefix_is_the_clients() -> None:
    collector = _collector()
    assert collector.key_prefix == "upbit"
    assert collector.keys == Keys("upbit")


def test_a_bad_prefix_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="must be non-empty, without ':'"):
        _collector(key_prefix="a:b")


def test_keys_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"pass key_prefix='old'") as caught:
        collector = _collector(keys=Keys("old"))
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert collector.keys == Keys("old")
    assert collector.key_prefix == "old"


def test_both_spellings_at_once_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="key_prefix= or the deprecated keys=, not both"):
        _collector(key_prefix="new", keys=Keys("old"))
