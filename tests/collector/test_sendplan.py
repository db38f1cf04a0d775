"""The send planner (collector.sendplan): every decision of the upstream sender, from tables.

Pure: no event loop, no socket; the time is an argument. :func:`run` plays the I/O loop on a
virtual clock (a send is reported at once, a wait jumps the clock), so minutes of sending are
checked in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.sendplan import (
    CLOSE,
    MAX_RESEND_WAIT,
    REUSE,
    VERIFY,
    Action,
    Park,
    Retopic,
    Send,
    SendPlanner,
    Wait,
    Warm,
)
from upbit_fanout.subscriptions.reconcile import (
    ListingCheck,
    StreamKey,
    Subscription,
    subscription_for,
)
from upbit_fanout.subscriptions.topics import Topic, parse_topic

UPBIT = [(5, 1.0), (100, 60.0)]
BTC = ("ticker", "KRW-BTC", None)
ETH = ("ticker", "KRW-ETH", None)


def want(*texts: str) -> tuple[Subscription, frozenset[Topic]]:
    topics = frozenset(parse_topic(text) for text in texts)
    return subscription_for(topics), topics


def planner(
    budget: RateBudget | None = None,
    *,
    coalesce: float = 0.05,
    verify: bool = True,
    verify_delay: float = 1.0,
    warm_seconds: float = 0.0,
) -> SendPlanner:
    plan = SendPlanner(
        budget or RateBudget(UPBIT),
        coalesce=coalesce,
        verify=verify,
        verify_delay=verify_delay,
        warm_seconds=warm_seconds,
    )
    plan.socket_opened()
    return plan


def perform(plan: SendPlanner, action: Action, now: float) -> None:
    """What the I/O loop does with an action, minus the I/O."""
    if isinstance(action, Send):
        plan.subscribed(action, now)
    elif action == VERIFY:
        plan.listing_sent(now)
    elif isinstance(action, Park):
        plan.parked(now)


def run(
    plan: SendPlanner,
    start: float,
    end: float,
    changes: Mapping[float, tuple[Subscription, frozenset[Topic]]] = {},
    refused: frozenset[StreamKey] = frozenset(),
) -> list[tuple[float, Action]]:
    """Play the loop from ``start`` to ``end``; ``changes``: wants arriving at given times;
    ``refused``: streams Upbit leaves out of every subscription (each check is answered at once).
    A socket closed for lack of topics is reopened when something is wanted again. Returns every
    action but the waits, with its time."""
    now = start
    done: list[tuple[float, Action]] = []
    pending = sorted(changes.items())
    while now < end:
        while pending and pending[0][0] <= now:
            plan.want(*pending.pop(0)[1])
        action = plan.next(now)
        if isinstance(action, Wait):
            until = end if action.until is None else min(action.until, end)
            if pending and action.wake_on_change:
                until = min(until, pending[0][0])
            if pending and not action.wake_on_change:  # a change still lands during the wait
                while pending and pending[0][0] <= until:
                    plan.want(*pending.pop(0)[1])
            assert until > now, (now, action)  # time always moves on
            now = until
            continue
        done.append((now, action))
        perform(plan, action, now)
        if action == VERIFY and plan.sent is not None:
            plan.listed(plan.sent.streams() - refused, now)
        if action == CLOSE:  # as Upstream.run: no socket until something is wanted again
            plan.socket_closed()
            while plan.desired.is_empty:
                if not pending:
                    return done
                now = max(now, pending[0][0])
                plan.want(*pending.pop(0)[1])
            plan.socket_opened()
    return done


def until_send(plan: SendPlanner, now: float) -> tuple[float, Send]:
    """Follow the planner's waits (no change arriving) to its next send."""
    for _ in range(10):
        action = plan.next(now)
        if isinstance(action, Send):
            return now, action
        assert isinstance(action, Wait), action
        assert action.until is not None
        now = action.until
    raise AssertionError("no send")


def subscribe(plan: SendPlanner, now: float) -> Send:
    """The planner's send at ``now`` (a fresh socket's first), reported done."""
    action = plan.next(now)
    assert isinstance(action, Send), action
    plan.subscribed(action, now)
    return action


def sends(actions: Iterable[tuple[float, Action]]) -> list[float]:
    return [t for t, action in actions if isinstance(action, Send)]


# -- one decision at a time ----------------------------------------------------------------------
def test_a_fresh_socket_sends_everything_at_once_with_snapshots() -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC"))
    action = subscribe(plan, 10.0)
    assert (action.fresh, action.resend, action.realtime) == (True, False, frozenset())
    assert action.subscription == want("ticker:KRW-BTC")[0]


@pytest.mark.parametrize(
    ("options", "now", "expected"),
    [
        ({}, 10.5, Wait(11.0, wake_on_change=True)),  # the verify delay is not over
        ({}, 11.0, VERIFY),  # it is: check what Upbit applied
        ({"verify_delay": 3.0}, 12.0, Wait(13.0, wake_on_change=True)),
        ({"verify": False}, 500.0, Wait(None, wake_on_change=True)),  # nothing to do but wait
    ],
)
def test_after_a_send_the_planner_waits_then_verifies(
    options: dict[str, float], now: float, expected: Action
) -> None:
    plan = planner(
        verify=bool(options.get("verify", True)), verify_delay=options.get("verify_delay", 1.0)
    )
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 10.0)
    assert plan.next(now) == expected


def test_one_check_per_send_then_nothing_until_a_change() -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    assert plan.next(1.0) == VERIFY
    plan.listing_sent(1.0)
    assert plan.next(1.1) == Wait(None, wake_on_change=True)
    assert plan.listed([BTC], 1.2) is not None  # the answer: all applied
    assert plan.next(100.0) == Wait(None, wake_on_change=True)


@pytest.mark.parametrize(
    ("sent_at", "now", "expected"),
    [
        # the change at 5.0 settles for coalesce (0.05 s) and is sent when the budget allows
        ([], 5.05, "send"),
        ([4.1, 4.2, 4.3, 4.4, 4.5], 5.05, Wait(5.1, wake_on_change=False)),  # 5/s used up
        ([4.2, 4.3, 4.4, 4.5], 5.05, "send"),  # a fifth fits
    ],
)
def test_a_change_settles_then_waits_for_the_budget(
    sent_at: list[float], now: float, expected: Action | str
) -> None:
    budget = RateBudget(UPBIT)
    plan = planner(budget)
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    for t in sent_at:
        budget.record(t)
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH"))
    assert plan.next(5.0) == Wait(5.05, wake_on_change=False)
    action = plan.next(now)
    if expected == "send":
        assert isinstance(action, Send)
        assert (action.fresh, action.realtime) == (False, frozenset({BTC}))  # ETH gets a snapshot
    else:
        assert action == expected


def test_a_change_while_waiting_for_the_check_is_sent_and_checked_instead() -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    assert plan.next(0.5) == Wait(1.0, wake_on_change=True)  # waiting for the check
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH"))  # wakes the loop at 0.6
    assert plan.next(0.6) == Wait(pytest.approx(0.65), wake_on_change=False)  # type: ignore[arg-type, unused-ignore]
    plan.want(*want("ticker:KRW-ETH"))  # lands during the settle pause (it does not wake)
    action = plan.next(0.65)
    assert isinstance(action, Send)
    assert action.subscription == want("ticker:KRW-ETH")[0]  # the latest state, not the first
    plan.subscribed(action, 0.65)
    assert plan.next(0.7) == Wait(1.65, wake_on_change=True)  # one check, after the last send


def test_a_check_leaves_a_slot_free_for_a_real_subscribe() -> None:
    budget = RateBudget(UPBIT)
    plan = planner(budget)
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    for t in (0.5, 0.6, 0.7, 0.8):
        budget.record(t)
    # the check is due at 1.0, but 5 messages went in the last second: it waits until the
    # 4th newest (0.5) has left, so that after it one slot stays free for a subscribe
    assert plan.next(1.0) == Wait(1.5, wake_on_change=True)
    assert plan.next(1.5) == VERIFY


def test_rate_limited_to_one_message_the_check_waits_for_recovery() -> None:
    budget = RateBudget(UPBIT, recovery=60.0)
    plan = planner(budget)
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    for _ in range(3):
        budget.penalize(0.5)  # 5 >> 3 = 0 -> 1 per second: no slot to spare for a check
    assert budget.delay(2.0, reserve=1) == math.inf
    assert plan.next(2.0) == Wait(62.0, wake_on_change=True)


def test_other_topics_for_the_same_request_are_a_retopic_and_no_message() -> None:
    plan = planner(verify=False)
    plan.want(*want("orderbook:KRW-BTC"))
    subscribe(plan, 0.0)
    subscription, _ = want("orderbook:KRW-BTC")
    both = frozenset({parse_topic("orderbook:KRW-BTC"), parse_topic("orderbook:KRW-BTC.5")})
    assert subscription_for(both) == subscription  # the premise: one request serves both
    plan.want(subscription, both)
    assert plan.next(1.0) == Retopic(both)
    assert plan.union == both
    assert plan.next(1.0) == Wait(None, wake_on_change=True)


# -- LIST_SUBSCRIPTIONS differences and their resend backoff -------------------------------------
@pytest.mark.parametrize(
    ("verify_delay", "waits"),
    [
        (1.0, [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]),
        (0.3, [0.0, 1.0, 2.0, 4.0]),  # never under MIN_RESEND_WAIT
        (5.0, [0.0, 5.0, 10.0, 20.0, 40.0, 60.0]),  # a longer verify delay is the base
    ],
)
def test_repeated_differences_wait_longer_before_each_resend(
    verify_delay: float, waits: list[float]
) -> None:
    plan = planner(verify_delay=verify_delay)
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH"))
    now, first = until_send(plan, 0.0)
    plan.subscribed(first, now)
    for expected in waits:
        now += 100.0  # far apart: the budget never matters here
        assert plan.next(now) == VERIFY
        plan.listing_sent(now)
        check = plan.listed([BTC], now)  # Upbit keeps dropping KRW-ETH
        assert check is not None
        assert check.missing == {ETH}
        assert plan.applied == {BTC}  # ETH is new again: re-sent with its snapshot
        if expected:
            assert plan.next(now) == Wait(now + expected, wake_on_change=True)
        at, resend = until_send(plan, now)
        assert at == pytest.approx(now + expected + 0.05)  # then it settles like any change
        assert resend.resend
        assert resend.realtime == {BTC}
        plan.subscribed(resend, at)
        now = at
    assert max(waits) <= MAX_RESEND_WAIT


def mismatch(plan: SendPlanner, now: float, listed: list[StreamKey]) -> float:
    """Check at ``now`` and get ``listed`` back; the wait before the resend."""
    plan.listing_sent(now)
    plan.listed(listed, now)
    at, _ = until_send(plan, now)
    return round(at - now - 0.05, 6)


def test_a_good_listing_resets_the_backoff() -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH"))
    subscribe(plan, 0.0)
    assert mismatch(plan, 10.0, [BTC]) == 0.0
    plan.subscribed(until_send(plan, 10.0)[1], 10.05)
    assert mismatch(plan, 20.0, [BTC]) == 1.0
    plan.subscribed(until_send(plan, 20.0)[1], 21.05)
    plan.listing_sent(30.0)
    assert plan.listed([BTC, ETH], 30.0) == ListingCheck(
        frozenset(), frozenset(), frozenset({BTC, ETH})
    )
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH", "ticker:KRW-XRP"))
    now, action = until_send(plan, 40.0)
    plan.subscribed(action, now)
    assert mismatch(plan, 50.0, [BTC]) == 0.0  # the first difference after a good check: at once


def test_a_change_cuts_a_resend_wait_short() -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH"))
    subscribe(plan, 0.0)
    assert mismatch(plan, 10.0, [BTC]) == 0.0
    plan.subscribed(until_send(plan, 10.0)[1], 10.05)
    plan.listing_sent(20.0)
    plan.listed([BTC], 20.0)  # the second difference: the resend waits 1 s
    assert plan.next(20.0) == Wait(21.0, wake_on_change=True)
    plan.want(*want("ticker:KRW-BTC", "ticker:KRW-ETH", "ticker:KRW-XRP"))  # the loop wakes
    at, action = until_send(plan, 20.1)
    assert at == pytest.approx(20.15)  # only the coalesce pause
    assert action.resend
    assert action.realtime == {BTC}


@pytest.mark.parametrize(
    ("asked", "sent_since", "listed"),
    [
        (False, False, [BTC]),  # nobody asked: not an answer to compare
        (True, True, []),  # about a subscription replaced since: its own check follows
        (True, False, None),  # an unreadable answer
    ],
)
def test_answers_that_are_not_about_the_current_subscription_are_ignored(
    asked: bool, sent_since: bool, listed: list[StreamKey] | None
) -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    if asked:
        plan.listing_sent(1.0)
    if sent_since:
        plan.subscribed(Send(*want("ticker:KRW-ETH"), frozenset(), False, False), 1.5)
    applied = plan.applied
    assert plan.listed(listed, 2.0) is None
    assert plan.applied == applied  # no stream made new again
    assert not isinstance(plan.next(2.0), Send)  # and no resend scheduled


# -- nothing wanted: the warm socket ------------------------------------------------------------
def test_with_no_warm_time_an_empty_want_closes_at_once() -> None:
    plan = planner(warm_seconds=0.0)
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    plan.want(Subscription(), frozenset())
    assert plan.next(5.0) == CLOSE


def test_a_warm_socket_is_parked_then_closed_at_its_deadline() -> None:
    budget = RateBudget(UPBIT)
    plan = planner(budget, warm_seconds=30.0)
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    for t in (0.1, 0.2, 0.3, 0.4):
        budget.record(t)
    plan.want(Subscription(), frozenset())
    assert plan.next(0.5) == Warm(30.5)
    assert plan.warm
    assert plan.next(0.5) == Wait(1.0, wake_on_change=True)  # the park waits for the budget
    assert plan.next(1.0) == Park(want("ticker:KRW-BTC")[0])
    plan.parked(1.0)
    assert plan.next(1.0) == Wait(30.5, wake_on_change=True)
    assert plan.next(30.5) == CLOSE
    assert not plan.warm


def test_a_private_subscription_is_quiet_already_and_not_parked() -> None:
    plan = planner(warm_seconds=30.0)
    plan.want(*want("myOrder:*"))
    subscribe(plan, 0.0)
    plan.want(Subscription(), frozenset())
    assert plan.next(1.0) == Warm(31.0)
    assert plan.next(1.0) == Wait(31.0, wake_on_change=True)


def test_a_want_on_a_warm_socket_reuses_it_with_fresh_snapshots() -> None:
    plan = planner(warm_seconds=30.0)
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    plan.want(Subscription(), frozenset())
    assert isinstance(plan.next(5.0), Warm)
    plan.want(*want("ticker:KRW-BTC"))  # the same code again, while warm
    assert plan.next(6.0) == REUSE
    assert not plan.warm
    assert plan.applied == frozenset()
    assert plan.next(6.0) == Wait(6.05, wake_on_change=False)
    action = plan.next(6.05)
    assert isinstance(action, Send)
    assert (action.fresh, action.realtime) == (False, frozenset())  # its snapshot again


def test_a_closed_socket_starts_the_next_one_fresh() -> None:
    plan = planner()
    plan.want(*want("ticker:KRW-BTC"))
    subscribe(plan, 0.0)
    plan.socket_closed()
    plan.socket_opened()
    action = plan.next(0.1)  # no coalesce pause for a new socket, though the budget is used
    assert isinstance(action, Send)
    assert action.fresh
    assert action.realtime == frozenset()
    assert plan.union == want("ticker:KRW-BTC")[1]  # the union outlives the socket


# -- whole runs on a virtual clock ---------------------------------------------------------------
def test_a_burst_of_changes_in_a_second_becomes_a_few_messages_with_the_latest_state() -> None:
    plan = planner(verify=False)
    plan.want(*want("ticker:KRW-BTC"))
    topics = [parse_topic(f"ticker:KRW-C{i:03d}") for i in range(300)]
    changes = {}
    for i in range(300):  # one more code every 3.3 ms
        chosen = frozenset(topics[: i + 1])
        changes[1.0 + i / 300] = (subscription_for(chosen), chosen)
    actions = run(plan, 0.0, 10.0, changes)
    times = sends(actions)
    assert times[0] == 0.0
    assert len(times) <= 1 + 5 * 2  # within the budget, one message per coalesce at most
    last = [a for _, a in actions if isinstance(a, Send)][-1]
    assert last.subscription == changes[max(changes)][0]  # the latest state was sent


def test_a_change_every_100_ms_for_two_minutes_stays_within_5_per_s_and_100_per_min() -> None:
    plan = planner(verify=False, coalesce=0.0)
    changes = {i / 10: want(f"ticker:KRW-C{i % 2}", "ticker:KRW-BTC") for i in range(1200)}
    times = sends(run(plan, 0.0, 125.0, changes))
    assert len(times) > 100  # it did keep up, as far as the budget allows
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 1.0 - 1e-9) <= 5
        assert sum(1 for u in times[i:] if u < t + 60.0 - 1e-9) <= 100


def test_checks_always_leave_a_slot_for_a_subscribe() -> None:
    plan = planner(verify_delay=0.0, coalesce=0.0)
    plan.want(*want("ticker:KRW-BTC"))
    changes = {i / 20: want(f"ticker:KRW-C{i}") for i in range(1, 40)}
    actions = run(plan, 0.0, 5.0, changes)
    checks = [i for i, (_, action) in enumerate(actions) if action == VERIFY]
    assert checks  # some were made
    for i in checks:  # with the check itself, at most 4 of the 5 per second were used
        t = actions[i][0]
        assert sum(1 for u, _ in actions[: i + 1] if u > t - 1.0 + 1e-9) <= 4
    for t, _ in actions:  # and every message, checks included, kept 5 per second
        assert sum(1 for u, _ in actions if t <= u < t + 1.0 - 1e-9) <= 5


_CODES = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL")


@settings(max_examples=100, deadline=None)
@example(changes=[(1.0, set()), (2.0, {"KRW-BTC"})], refused=set(), warm_seconds=5.0)  # reuse
@example(changes=[(1.0, set()), (2.0, {"KRW-BTC"})], refused=set(), warm_seconds=0.0)  # reopen
@example(changes=[(1.0, {"KRW-BTC", "KRW-ETH"})], refused={"KRW-ETH"}, warm_seconds=0.0)
@given(
    changes=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=120.0),
            st.sets(st.sampled_from(_CODES)),
        ),
        max_size=40,
    ),
    refused=st.sets(st.sampled_from(_CODES), max_size=1),
    warm_seconds=st.sampled_from([0.0, 5.0]),
)
def test_any_sequence_of_changes_keeps_the_budget_and_ends_on_the_latest_state(
    changes: list[tuple[float, set[str]]], refused: set[str], warm_seconds: float
) -> None:
    plan = planner(warm_seconds=warm_seconds)
    plan.want(*want("ticker:KRW-BTC"))  # a socket is opened only when something is wanted
    timed = {at: want(*(f"ticker:{code}" for code in codes)) for at, codes in changes}
    refused_streams = frozenset(("ticker", code, None) for code in refused)
    actions = run(plan, 0.0, 400.0, timed, refused_streams)
    messages = [t for t, action in actions if isinstance(action, Send | Park) or action == VERIFY]
    for i, t in enumerate(messages):  # Upbit's limits, checks and parking included
        assert sum(1 for u in messages[i:] if u < t + 1.0 - 1e-9) <= 5
        assert sum(1 for u in messages[i:] if u < t + 60.0 - 1e-9) <= 100
    final = timed[max(timed)] if timed else want("ticker:KRW-BTC")
    sent = [action for _, action in actions if isinstance(action, Send)]
    if final[0].is_empty:  # nothing wanted in the end: parked, then closed
        assert actions[-1][1] == CLOSE
    else:  # the socket ends up carrying the latest state, whatever came before
        assert sent[-1].subscription == final[0]
        assert plan.union == final[1]
    last: Subscription | None = None
    for _, action in actions:
        if action in (REUSE, CLOSE):  # the socket carries nothing (parked, or a new one)
            last = None
        elif isinstance(action, Send):
            # the same message again only to re-send what a check found missing
            assert action.subscription != last or action.resend
            last = action.subscription
