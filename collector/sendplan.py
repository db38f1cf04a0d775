"""What one upstream socket should do next, as a pure object: the send planner.

:class:`SendPlanner` holds everything the sender of one open socket decides with: the desired
subscription, what the socket carries (sent, applied, the topics last sent), the per-connection
:class:`~upbit_fanout.collector.budget.RateBudget`, the LIST_SUBSCRIPTIONS check and its resend
backoff, the pause that coalesces a burst of changes, and the warm socket's deadline. Asked
:meth:`SendPlanner.next` with the time, it answers with one action; the I/O loop
(:class:`upbit_fanout.collector.upstream.Upstream`) performs it and reports the outcome of a send
(:meth:`~SendPlanner.subscribed`, :meth:`~SendPlanner.listing_sent`, :meth:`~SendPlanner.parked`,
:meth:`~SendPlanner.listed`). No event loop, no socket, no clock of its own: tested from tables.

The decisions, in order (docs/collector.md, "Sending"):

1. Nothing wanted: with ``warm_seconds`` 0, :data:`CLOSE`. Otherwise :class:`Warm` (the socket
   is kept open until a deadline), then :class:`Park` once the budget allows (the cheapest
   subscription replaces the last one: Upbit has no unsubscribe, docs/upbit-protocol.md §3), then
   wait; :data:`CLOSE` at the deadline. Something wanted again on a warm socket: :data:`REUSE`
   (every stream asked from then on is new to the socket and gets its snapshot).
2. The socket carries what is wanted: other topics for the same request are a :class:`Retopic`
   (the router feeds them; nothing is sent). After a send, once ``verify_delay`` passed and the
   budget keeps one message free for a real subscribe, :data:`VERIFY` (LIST_SUBSCRIPTIONS,
   §2.7). Else wait, for the time or for a change.
3. A check found a difference: wait until the resend time (at once the first time, then 1, 2,
   4 ... s, at most :data:`MAX_RESEND_WAIT`), unless the wanted subscription changes meanwhile.
4. Something to send: except for a fresh socket's first message, wait ``coalesce`` s so that a
   burst of changes becomes one message; then wait for the budget (5/s and 100/min, §6); then
   :class:`Send` the LATEST desired state, asking snapshots only for streams new to the socket.

Waits that a change should cut short say so (:attr:`Wait.wake_on_change`); the coalesce pause and
the budget wait do not (the message sent at their end carries the latest state anyway).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.subscriptions.reconcile import (
    ListingCheck,
    StreamKey,
    Subscription,
    compare_listing,
    parking_message,
    streams_serving,
)
from upbit_fanout.subscriptions.topics import Topic

__all__ = [
    "CLOSE",
    "MAX_RESEND_WAIT",
    "MIN_RESEND_WAIT",
    "REUSE",
    "VERIFY",
    "Action",
    "Close",
    "Park",
    "Retopic",
    "Reuse",
    "Send",
    "SendPlanner",
    "Verify",
    "Wait",
    "Warm",
]

MIN_RESEND_WAIT: Final = 1.0
MAX_RESEND_WAIT: Final = 60.0
"""The waits before re-sending a subscription that LIST_SUBSCRIPTIONS found applied in part
again: the first difference is re-sent at once, the next ones after 1, 2, 4 ... s (or
``verify_delay`` doubled, when longer), at most 60 s."""


# -- the actions ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Send ``subscription`` (serving ``topics``); ``realtime``: streams the socket already
    carries, asked without a snapshot. ``fresh``: the socket's first subscription; ``resend``:
    re-sent after a LIST_SUBSCRIPTIONS difference."""

    subscription: Subscription
    topics: frozenset[Topic]
    realtime: frozenset[StreamKey]
    fresh: bool
    resend: bool


@dataclass(frozen=True, slots=True)
class Verify:
    """Send a LIST_SUBSCRIPTIONS request about the last send."""


@dataclass(frozen=True, slots=True)
class Retopic:
    """Same upstream request, other topics (``orderbook:KRW-BTC.5`` next to
    ``orderbook:KRW-BTC``): nothing to send, the router feeds ``topics`` from now on."""

    topics: frozenset[Topic]


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait until clock time ``until`` (None: no limit), or until a change when
    ``wake_on_change`` (the reader ending always ends a wait)."""

    until: float | None
    wake_on_change: bool


@dataclass(frozen=True, slots=True)
class Warm:
    """Nothing is wanted: the socket is kept open until ``until`` (a warm socket)."""

    until: float


@dataclass(frozen=True, slots=True)
class Park:
    """Replace ``last`` on the socket with the cheapest subscription
    (:func:`subscriptions.reconcile.parking_message`)."""

    last: Subscription


@dataclass(frozen=True, slots=True)
class Reuse:
    """Something is wanted again while the socket is warm: use it."""


@dataclass(frozen=True, slots=True)
class Close:
    """Nothing is wanted (and the warm time, if any, is over): close the socket."""


VERIFY: Final = Verify()
REUSE: Final = Reuse()
CLOSE: Final = Close()

Action = Send | Verify | Retopic | Wait | Warm | Park | Reuse | Close


# -- the planner ---------------------------------------------------------------------------------
class SendPlanner:
    """The sender's decisions for one upstream connection, with the clock passed in.

    One planner lives as long as its :class:`~upbit_fanout.collector.upstream.Upstream`:
    :meth:`socket_opened` and :meth:`socket_closed` mark each socket's life. Read-only state for
    the I/O loop: :attr:`desired`, :attr:`desired_topics`, :attr:`sent` (what the current socket
    carries; None: nothing sent on it), :attr:`applied` (the streams it carries, as far as the
    last send and check tell), :attr:`union` (the topics last sent: kept across reconnects, the
    loop empties it when it parks or closes for lack of topics), :attr:`warm`.
    """

    def __init__(
        self,
        budget: RateBudget,
        *,
        coalesce: float = 0.05,
        verify: bool = True,
        verify_delay: float = 1.0,
        warm_seconds: float = 0.0,
    ) -> None:
        if verify_delay < 0 or warm_seconds < 0:
            raise ValueError("verify_delay and warm_seconds must be >= 0")
        self.budget = budget
        self.coalesce = coalesce
        self.verify = verify
        self.verify_delay = verify_delay
        self.warm_seconds = warm_seconds

        self.desired = Subscription()
        self.desired_topics: frozenset[Topic] = frozenset()
        self.sent: Subscription | None = None
        self.applied: frozenset[StreamKey] = frozenset()
        self.union: frozenset[Topic] = frozenset()
        self._fresh = True  # nothing sent on this socket yet
        self._settle_until: float | None = None  # the coalesce pause of the pending send
        self._verify_due: float | None = None  # when to check the last send
        self._verifying: Subscription | None = None  # what the LIST request in flight checks
        self._resend_at: float | None = None  # a check found a difference: re-send from then
        self._mismatches = 0  # differences found in a row
        self._warm_until: float | None = None
        self._park: Subscription | None = None  # to be replaced by the parking message

    @property
    def warm(self) -> bool:
        """True while the socket is kept open with nothing wanted."""
        return self._warm_until is not None

    # -- inputs -----------------------------------------------------------------------------------
    def want(self, subscription: Subscription, topics: frozenset[Topic]) -> bool:
        """Set the desired subscription; True when it changed (wake the loop)."""
        if subscription == self.desired and topics == self.desired_topics:
            return False
        self.desired = subscription
        self.desired_topics = topics
        return True

    def socket_opened(self) -> None:
        """A new socket: its first message carries every stream with its snapshot, at once."""
        self.socket_closed()

    def socket_closed(self) -> None:
        """The socket is gone: what it carried and what was being checked go with it."""
        self.sent = None
        self.applied = frozenset()
        self._fresh = True
        self._settle_until = self._verify_due = self._verifying = self._resend_at = None
        self._mismatches = 0
        self._warm_until = None
        self._park = None

    def subscribed(self, action: Send, now: float) -> None:
        """``action`` went out at ``now``."""
        self.budget.record(now)
        self.sent = action.subscription
        self.applied = action.subscription.streams()
        self.union = action.topics
        self._fresh = False
        self._settle_until = self._verifying = self._resend_at = None
        self._verify_due = now + self.verify_delay if self.verify else None

    def listing_sent(self, now: float) -> None:
        """The LIST_SUBSCRIPTIONS request went out at ``now``."""
        self.budget.record(now)
        self._verify_due = None
        self._verifying = self.sent

    def parked(self, now: float) -> None:
        """The parking message went out at ``now``."""
        self.budget.record(now)
        self._park = None

    def listed(self, streams: Collection[StreamKey] | None, now: float) -> ListingCheck | None:
        """A LIST_SUBSCRIPTIONS answer listing ``streams`` arrived at ``now`` (None: it listed
        nothing readable). The comparison with what was asked, or None when the answer is
        unasked or about a subscription replaced since (its own check follows). A difference
        makes the missing streams new again (they get their snapshot) and schedules a resend."""
        checked, self._verifying = self._verifying, None
        if checked is None or checked != self.sent or streams is None:
            return None
        check = compare_listing(checked, streams)
        if check.ok:
            self._mismatches = 0
            return check
        self._mismatches += 1
        self.applied = check.confirmed
        base = max(self.verify_delay, MIN_RESEND_WAIT)
        wait = 0.0 if self._mismatches == 1 else base * 2 ** (self._mismatches - 2)
        self._resend_at = now + min(MAX_RESEND_WAIT, wait)
        return check

    # -- the decision -----------------------------------------------------------------------------
    def next(self, now: float) -> Action:
        """What to do at ``now``. Deciding :class:`Warm`, :data:`REUSE`, :data:`CLOSE` or
        :class:`Retopic` also takes that step in the planner's state; a send is taken only when
        reported (:meth:`subscribed`, :meth:`listing_sent`, :meth:`parked`)."""
        if self.desired.is_empty:
            return self._nothing_wanted(now)
        if self._warm_until is not None:
            # Nothing flows now (or what still flows is no topic's): every stream asked from
            # here on is new to this socket and gets its snapshot.
            self._warm_until = self._park = None
            self.sent = Subscription()
            self.applied = frozenset()
            self._verify_due = self._verifying = self._resend_at = None
            return REUSE
        if self.desired == self.sent and self._resend_at is None:
            self._settle_until = None
            if self.desired_topics != self.union:
                self.union = self.desired_topics
                return Retopic(self.desired_topics)
            wait = self._verify_wait(now)
            if wait is None:
                return Wait(None, wake_on_change=True)
            if wait == 0.0:
                return VERIFY
            return Wait(now + wait, wake_on_change=True)
        if self._resend_at is not None and self.desired == self.sent and now < self._resend_at:
            self._settle_until = None
            return Wait(self._resend_at, wake_on_change=True)
        if not self._fresh and self.coalesce > 0:
            # A burst of intent changes becomes one message: let it settle a moment.
            if self._settle_until is None:
                self._settle_until = now + self.coalesce
            if now < self._settle_until:
                return Wait(self._settle_until, wake_on_change=False)
        delay = self.budget.delay(now)
        if delay > 0:
            return Wait(now + delay, wake_on_change=False)
        # Streams already flowing on this socket get no snapshot again, unless a topic they
        # feed is new to the router (it wants its snapshot: consumers need a starting state).
        subscription, topics = self.desired, self.desired_topics
        realtime = self.applied - streams_serving(subscription, topics - self.union)
        return Send(subscription, topics, realtime, self._fresh, self._resend_at is not None)

    def _nothing_wanted(self, now: float) -> Action:
        if self._warm_until is None:
            if self.warm_seconds <= 0:
                return CLOSE
            self._warm_until = now + self.warm_seconds
            last = self.sent
            # Only a subscription with a quotation code is parked (a private one is quiet already).
            self._park = last if last is not None and parking_message(last, "") else None
            return Warm(self._warm_until)
        if now >= self._warm_until:
            self._warm_until = self._park = None
            return CLOSE
        if self._park is not None:
            delay = self.budget.delay(now)
            if delay == 0:
                return Park(self._park)
            return Wait(min(now + delay, self._warm_until), wake_on_change=True)
        return Wait(self._warm_until, wake_on_change=True)

    def _verify_wait(self, now: float) -> float | None:
        """Seconds until a LIST_SUBSCRIPTIONS check may go (0.0: now; None: none is due).

        It waits ``verify_delay`` after the last send (a burst of sends is checked once) and
        for the budget to keep one message free after it: a check never takes the slot a real
        subscribe would need (while rate limited, at 1 message per window, it waits for that)."""
        if self._verify_due is None or self.sent is None:
            return None
        wait = max(self._verify_due - now, self.budget.delay(now, reserve=1))
        if wait == math.inf:  # rate limited down to 1 message: look again once it recovers
            return self.budget.recovery
        return 0.0 if wait <= 0 else wait
