"""The rules of ``upbit-fanout check`` (a pure function of the status report)."""

from __future__ import annotations

from typing import Any

import pytest

from upbit_fanout.commands.check import STALE_STATUS, judge, judge_private


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


@pytest.mark.parametrize(
    ("private", "down", "verdict"),
    [
        ("enabled", None, None),  # subscribed: no say
        ("enabled", 12.0, None),  # down, but not for long
        ("enabled", 75.0, False),
        ("disabled: no API keys", 500.0, None),
    ],
)
def test_the_private_socket_down_too_long_is_unhealthy_with_keys(
    private: str, down: float | None, verdict: bool | None
) -> None:
    collector = {"state": "subscribed", "last_error": "", "private": private}
    got = judge_private(report(collector=collector, private_down_seconds=down), max_down=60)
    if verdict is None:
        assert got is None
    else:
        assert got is not None
        assert got[0] is verdict
        assert "private socket has been down for 75 s" in got[1]
