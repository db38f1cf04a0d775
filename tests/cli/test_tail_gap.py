"""``tail`` prints where a Gap came from (this client's Redis outage, or the collector)."""

from __future__ import annotations

import json

from upbit_fanout.client import Gap
from upbit_fanout.commands.tail import _json_line


def test_a_collector_gap_line_names_its_source_and_connection() -> None:
    gap = Gap("collector: reconnected", 1.5, 2.5, ("ticker:KRW-BTC",), "collector", "public")
    assert json.loads(_json_line(gap)) == {
        "gap": {
            "reason": "collector: reconnected",
            "started_at": 1.5,
            "ended_at": 2.5,
            "topics": ["ticker:KRW-BTC"],
            "source": "collector",
            "connection": "public",
        }
    }
    redis_gap = json.loads(_json_line(Gap("Redis connection lost: x", 1.0, 2.0)))["gap"]
    assert redis_gap["source"] == "redis"
    assert "connection" not in redis_gap
