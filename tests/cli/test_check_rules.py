"""The rules of ``upbit-fanout check`` (a pure function of the status report)."""

from __future__ import annotations

from typing import Any

import pytest

from upbit_fanout.subscriptions.health import STALE_STATUS, judge


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


NOW = 1_800_000_000.0


def ms_ago(seconds: float) -> int:
    return int((NOW - seconds) * 1000)


def leader(**fields: Any) -> dict[str, Any]:
    """A current collector's status: a leader whose canary came back 1 s ago."""
    base: dict[str, Any] = {
        "state": "subscribed",
        "last_error": "",
        "role": "leader",
        "leader_since": ms_ago(600),
        "canary_ok_at": ms_ago(1),
        "canary_error": "",
        "private": "disabled: no API keys",
        "connected_since": ms_ago(300),
    }
    base.update(fields)
    return base


def verdict(collector: dict[str, Any], **changes: Any) -> tuple[bool, str]:
    return judge(
        report(collector=collector, **changes),
        max_age=30,
        max_delivery_age=10,
        max_upstream_down=20,
        max_private_down=20,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("collector", "changes", "healthy", "reason"),
    [
        (leader(), {}, True, "subscribed: 1 topic(s), last event 0.2 s ago"),
        # delivery: the canary did not come back
        (leader(canary_ok_at=ms_ago(11)), {}, False, "delivery not confirmed: the last canary"),
        (
            leader(canary_ok_at="", canary_error="cannot listen on upbit:canary: NOPERM"),
            {},
            False,
            "delivery not confirmed: no canary came back through Redis in the 600 s",
        ),
        (leader(canary_ok_at="", leader_since=ms_ago(3)), {}, True, "subscribed"),  # new leader
        (leader(canary_ok_at=ms_ago(11), state="idle"), {"union": []}, False, "delivery not"),
        # the public upstream down while something is wanted
        (
            leader(state="reconnecting", upstream_down_since=ms_ago(5), last_error="x"),
            {},
            True,
            "reconnecting for 5.0 s (within --max-upstream-down 20 s)",
        ),
        (
            leader(state="reconnecting", upstream_down_since=ms_ago(25)),
            {},
            False,
            "the upstream has been down for 25 s (more than --max-upstream-down 20 s)",
        ),
        # quiet market: no event, but keep-alive pongs
        (
            leader(upstream_alive_at=ms_ago(4)),
            {"last_event_age_seconds": 300.0},
            True,
            "quiet market (last event 300.0 s ago, upstream keep-alive 4.0 s ago)",
        ),
        (
            leader(upstream_alive_at=ms_ago(40)),
            {"last_event_age_seconds": 300.0},
            False,
            "last event 300.0 s ago and no upstream keep-alive either",
        ),
        (leader(), {"last_event_age_seconds": None}, False, "no event arrived yet"),
        (
            leader(connected_since=ms_ago(2)),
            {"last_event_age_seconds": None},
            True,
            "waiting for the first event",
        ),
        # the private side broken while keys are set
        (
            leader(private="enabled", private_upstream_down_since=ms_ago(60), last_error="401"),
            {},
            False,
            "the private socket has been down for 60 s",
        ),
        (
            leader(private="enabled", private_upstream_down_since=ms_ago(5)),
            {},
            True,
            "subscribed",
        ),
        (leader(state="stopped"), {}, False, "collector is stopped"),
    ],
)
def test_health_rules(
    collector: dict[str, Any], changes: dict[str, Any], healthy: bool, reason: str
) -> None:
    result = verdict(collector, **changes)
    assert result[0] is healthy, result
    assert reason in result[1]


@pytest.mark.parametrize(
    ("private", "down", "healthy"),
    [
        ("enabled", None, True),  # subscribed: no say
        ("enabled", 12.0, True),  # down, but not for long
        ("enabled", 75.0, False),
        ("disabled: no API keys", 500.0, True),
    ],
)
def test_the_private_socket_down_too_long_is_unhealthy_only_with_keys(
    private: str, down: float | None, healthy: bool
) -> None:
    """The recorder's view (``private_down_seconds``, from ``private_down_since``) counts too."""
    got = judge(
        report(collector=leader(private=private), private_down_seconds=down),
        max_age=30,
        max_private_down=60,
        now=NOW,
    )
    assert got[0] is healthy, got
    if not healthy:
        assert got[1].startswith("the private socket has been down for 75 s")
