"""The union of every client's intents, kept incrementally: the cost of a change is the size of
the change, not the number of clients.

:class:`UnionIndex` holds, per client, what :func:`collector.intents.plan` would make of its
members (valid topics and refused ones, cached per distinct member set) and, per topic, how many
served clients want it (a reference count). A client's change moves only its own topics' counts;
the union changes only when a count goes from 0 to 1 or back, and only then are the
subscriptions rebuilt. :meth:`UnionIndex.plan` returns the SAME :class:`~collector.intents.Plan`
object for as long as nothing it holds changed, so a caller can skip all work with an ``is``
test.

Exactness. While the whole union fits the limits (``max_union_topics`` topics and
``max_request_bytes`` per subscribe message), :func:`~collector.intents.plan` admits every
valid topic of every client, whatever their order, so the index's union is exactly its result
(``RequestSize`` only grows as topics are added, so a union that fits was never over the limit
along the way). When the union does not fit, which clients' excess is refused depends on every
client's age: the index then calls :func:`~collector.intents.plan` itself on everything it holds
(O(clients) per change, the price of an overloaded collector; it is logged by the refusals).
A Hypothesis test holds the index to :func:`~collector.intents.plan` after any sequence of
changes, both regimes included (tests/collector/test_union.py).

Pure: no I/O, no clock; the tracker and the service feed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from upbit_fanout.collector.intents import (
    DEFAULT_LIMITS,
    RECORDED_TOPICS,
    ClientRefusal,
    KeyRefusal,
    Limits,
    Plan,
    escape,
    plan,
    refusal_for,
    too_many_reason,
    whole_refusal,
)
from upbit_fanout.collector.markets import MarketSet
from upbit_fanout.subscriptions.reconcile import RequestSize, subscription_for
from upbit_fanout.subscriptions.topics import Topic

__all__ = ["UnionIndex"]


@dataclass(slots=True)
class _Client:
    members: frozenset[str]
    seen: float
    topics: tuple[Topic, ...]  # the valid topics it contributes (empty when refused whole)
    refusal: ClientRefusal | None  # what plan() reports for it (None: nothing refused)


class UnionIndex:
    """Per-topic reference counts over every client's valid intents; see the module docstring.

    :meth:`set_client` / :meth:`remove_client` apply one client's change; :meth:`plan` gives the
    current plan (cached until something changes). The settings that change how every member is
    judged (keys present, the market list, limits, recording) are given to :meth:`reset`, which
    starts over from a full view.
    """

    def __init__(
        self,
        *,
        private_allowed: bool = False,
        markets: MarketSet | None = None,
        limits: Limits = DEFAULT_LIMITS,
        record_private: bool = False,
    ) -> None:
        self._private_allowed = private_allowed
        self._markets = markets
        self.limits = limits
        self._record_private = record_private
        self._clients: dict[str, _Client] = {}
        self._keys: dict[str, KeyRefusal] = {}
        self._key_seen: dict[str, float] = {}
        self._counts: dict[Topic, int] = {}
        self._union_dirty = True
        self._refusals_dirty = True
        self._plan: Plan | None = None
        self._topics: tuple[frozenset[Topic], frozenset[Topic]] = (frozenset(), frozenset())
        self._fits = True
        self._refused: tuple[dict[str, ClientRefusal], int, int] = ({}, 0, 0)
        self.full_plans = 0
        """How many times the union did not fit and plan() ran over every client."""

    # -- settings ---------------------------------------------------------------------------------
    def reset(
        self,
        intents: Mapping[str, Iterable[str]],
        *,
        private_allowed: bool,
        markets: MarketSet | None,
        record_private: bool,
        refused_keys: Mapping[str, KeyRefusal] | None = None,
        seen: Mapping[str, float] | None = None,
    ) -> None:
        """Start over from a full view (O(clients)): for a new market list, keys or recording."""
        self._private_allowed = private_allowed
        self._markets = markets
        self._record_private = record_private
        self._clients.clear()
        self._keys.clear()
        self._key_seen.clear()
        self._counts.clear()
        when = seen or {}
        for client, members in intents.items():
            self.set_client(client, frozenset(members), when.get(client, 0.0))
        for client, refusal in (refused_keys or {}).items():
            self.set_key_refusal(client, refusal, when.get(client, 0.0))
        self._union_dirty = self._refusals_dirty = True
        self._plan = None

    def settings(self) -> tuple[bool, MarketSet | None, bool]:
        """(private_allowed, markets, record_private) as last given."""
        return self._private_allowed, self._markets, self._record_private

    # -- changes ----------------------------------------------------------------------------------
    def set_client(self, client: str, members: frozenset[str], seen: float = 0.0) -> None:
        """Client ``client`` is served ``members`` (first seen at ``seen``)."""
        old = self._clients.get(client)
        if old is not None and old.members == members and old.seen == seen:
            return
        limits = self.limits
        if len(members) > limits.max_topics_per_client:
            topics: tuple[Topic, ...] = ()
            refusal: ClientRefusal | None = whole_refusal(
                len(members), too_many_reason("the key", len(members), limits), members, limits
            )
        else:
            topics, refusal = refusal_for(members, self._private_allowed, self._markets, limits)
        self._drop_topics(old)
        self._clients[client] = _Client(members, seen, topics, refusal)
        self._add_topics(topics)
        if (old.refusal if old is not None else None) != refusal:
            self._refusals_dirty = True
        if old is None or old.seen != seen:
            self._refusals_dirty = True  # the admission order may matter (overloaded union)
        self._plan = None

    def remove_client(self, client: str) -> None:
        """Client ``client`` asks for nothing (its key is gone or empty, or refused whole)."""
        old = self._clients.pop(client, None)
        if old is None:
            return
        self._drop_topics(old)
        if old.refusal is not None:
            self._refusals_dirty = True
        self._plan = None

    def set_key_refusal(self, client: str, refusal: KeyRefusal | None, seen: float = 0.0) -> None:
        """The whole key of ``client`` is refused (None: not any more)."""
        if refusal is None:
            if self._keys.pop(client, None) is not None:
                self._key_seen.pop(client, None)
                self._refusals_dirty = True
                self._plan = None
            return
        if self._keys.get(client) == refusal and self._key_seen.get(client) == seen:
            return
        self._keys[client] = refusal
        self._key_seen[client] = seen
        self._refusals_dirty = True
        self._plan = None

    def _add_topics(self, topics: tuple[Topic, ...]) -> None:
        counts = self._counts
        for topic in topics:
            count = counts.get(topic, 0)
            counts[topic] = count + 1
            if not count:
                self._union_dirty = True

    def _drop_topics(self, old: _Client | None) -> None:
        if old is None:
            return
        counts = self._counts
        for topic in old.topics:
            count = counts[topic] - 1
            if count:
                counts[topic] = count
            else:
                del counts[topic]
                self._union_dirty = True

    # -- reading ----------------------------------------------------------------------------------
    @property
    def clients(self) -> int:
        return len(self._clients)

    def count(self, topic: Topic) -> int:
        """How many served clients want ``topic``."""
        return self._counts.get(topic, 0)

    def plan(self) -> Plan:
        """The current plan: the same object until something changes."""
        if self._plan is not None:
            return self._plan
        if self._union_dirty:
            public = frozenset(topic for topic in self._counts if not topic.is_private)
            private = frozenset(topic for topic in self._counts if topic.is_private)
            self._topics = (public, private)
            self._fits = self._fit(public, private)
            self._union_dirty = False
            self._refusals_dirty = True  # the fallback below depends on the union too
        if not self._fits:
            self.full_plans += 1
            self._plan = plan(
                {client: entry.members for client, entry in self._clients.items()},
                private_allowed=self._private_allowed,
                markets=self._markets,
                limits=self.limits,
                refused_keys=self._keys,
                seen={
                    **self._key_seen,
                    **{client: entry.seen for client, entry in self._clients.items()},
                },
                record_private=self._record_private,
            )
            return self._plan
        if self._refusals_dirty:
            self._refused = self._refusals()
            self._refusals_dirty = False
        public, private = self._topics
        previous = self._plan_cache
        if previous is not None and previous.public_topics is public:
            public_sub = previous.public
        else:
            public_sub = subscription_for(public)
        if previous is not None and previous.private_topics is private:
            private_sub = previous.private
        else:
            recorded = (
                private | RECORDED_TOPICS
                if self._record_private and self._private_allowed
                else private
            )
            private_sub = subscription_for(recorded)
        shown, hidden_clients, hidden_count = self._refused
        self._plan = self._plan_cache = Plan(
            public_sub, public, private_sub, private, shown, hidden_clients, hidden_count
        )
        return self._plan

    _plan_cache: Plan | None = None

    def _fit(self, public: frozenset[Topic], private: frozenset[Topic]) -> bool:
        limits = self.limits
        if len(public) + len(private) > limits.max_union_topics:
            return False
        for side in (public, private):
            size = RequestSize()
            for topic in side:
                size.add(topic)
            if size.bytes > limits.max_request_bytes:
                return False
        return True

    def _refusals(self) -> tuple[dict[str, ClientRefusal], int, int]:
        refused: dict[str, ClientRefusal] = {}
        for client, entry in self._clients.items():
            if entry.refusal is not None:
                refused[escape(client)] = entry.refusal
        limits = self.limits
        for client, key_refusal in self._keys.items():
            refused[client] = whole_refusal(
                key_refusal.size, key_refusal.reason, key_refusal.sample, limits
            )
        if len(refused) <= limits.max_invalid_clients:
            return dict(sorted(refused.items())), 0, 0
        ordered = sorted(refused.items())
        shown = dict(ordered[: limits.max_invalid_clients])
        hidden = [refusal.count for _, refusal in ordered[limits.max_invalid_clients :]]
        return shown, len(hidden), sum(hidden)
