"""The rules of ``upbit-fanout check`` (a pure function of the status report)."""

from __future__ import annotations

from typing import Any

import pytest

from upbit_fanout.commands.check import STALE_STATUS, judge


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key_prefix": "upbit",
        "collector_listening": True,
        "collector": {"state": "subscribed", "last_error": ""},
        "status_age_seconds": 0.5,
        "union": ["ticker:KRW-BTC"],
        "last_event_age_seconds": 0.2,
    }
    base.update(changes)
    return base


def test_a_live_collector_with_fresh_events_is_healthy() -> None:
    assert judge(report(), max_age=30) == (True, "subscribed: 1 topic(s), last event 0.2 s ago")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"collector": None}, "no collector status"),
        ({"collector_listening": False}, "no collector is running"),
        ({"status_age_seconds": STALE_STATUS + 1}, "status was last written"),
        ({"last_event_age_seconds": 31.0}, "more than --max-age 30 s"),
        ({"collector": {"state": "reconnecting", "last_error": "x"}}, "collector is reconnecting"),
    ],
)
def test_unhealthy_cases_say_why(changes: dict[str, Any], reason: str) -> None:
    healthy, text = judge(report(**changes), max_age=30)
    assert not healthy
    assert reason in text


def test_an_idle_collector_is_healthy_while_its_status_is_fresh() -> None:
    idle = report(collector={"state": "idle", "last_error": ""}, union=[])
    assert judge(idle, max_age=30)[0]
    assert not judge({**idle, "status_age_seconds": STALE_STATUS * 2}, max_age=30)[0]
