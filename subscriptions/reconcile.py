"""Reconciliation as pure functions: live intents -> desired upstream state -> the next message.

The collector holds one public connection and, when private topics are wanted and keys are
configured, one private connection. For each it keeps what it last sent. On every change it asks
:func:`desired_state` for the union of all live, valid intents, and :func:`next_message` whether a
new subscribe message is needed (None when the desired state equals what was sent). Upbit has
no unsubscribe and every message replaces the connection's whole subscription
(docs/upbit-protocol.md §3), so the message always carries the complete state, in a deterministic
order.

Rules (docs/contract.md, "Upstream behaviour"):
- one object per type, codes sorted; types in a fixed order;
- orderbook: one code per market at the LARGEST depth any intent asks for (no suffix for 30),
  smaller depths are cut from it by the collector;
- myOrder without codes as soon as anyone wants ``myOrder:*``; myAsset never carries codes;
- invalid topics never reach a message; they are returned for reporting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.topics import (
    ALL_MARKETS,
    DEFAULT_ORDERBOOK_DEPTH,
    TOPIC_TYPES,
    Topic,
    parse_topic,
)

__all__ = [
    "REQUEST_OVERHEAD",
    "DesiredState",
    "Entry",
    "RequestSize",
    "Subscription",
    "desired_state",
    "next_message",
    "subscription_for",
]

_TYPE_ORDER = {name: index for index, name in enumerate(TOPIC_TYPES)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One type object of a subscribe message: ``{"type": ..., "codes": [...]}``.

    ``codes`` is None for a type sent without codes (myAsset, and myOrder for every market).
    Orderbook codes carry the depth suffix as Upbit spells it (``KRW-BTC.15``).
    """

    type: str
    codes: tuple[str, ...] | None

    def as_json(self) -> dict[str, Any]:
        if self.codes is None:
            return {"type": self.type}
        return {"type": self.type, "codes": list(self.codes)}


@dataclass(frozen=True, slots=True)
class Subscription:
    """What one upstream connection is (or should be) subscribed to."""

    entries: tuple[Entry, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.entries

    def message(self, ticket: str, fmt: str = "DEFAULT") -> list[dict[str, Any]]:
        """The complete subscribe message: ticket, every type object, format."""
        return [{"ticket": ticket}, *(entry.as_json() for entry in self.entries), {"format": fmt}]

    def upstream_codes(self, type_name: str) -> tuple[str, ...]:
        for entry in self.entries:
            if entry.type == type_name:
                return entry.codes or ()
        return ()


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The union of live intents, split per connection, plus what had to be refused."""

    topics: frozenset[Topic] = frozenset()
    public: Subscription = field(default_factory=Subscription)
    private: Subscription = field(default_factory=Subscription)
    invalid: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """``(client_id, topic text) -> reason`` for every refused intent."""

    @property
    def public_topics(self) -> frozenset[Topic]:
        return frozenset(topic for topic in self.topics if not topic.is_private)

    @property
    def private_topics(self) -> frozenset[Topic]:
        return frozenset(topic for topic in self.topics if topic.is_private)


def subscription_for(topics: Iterable[Topic]) -> Subscription:
    """The deterministic subscription serving ``topics`` (all public, or all private)."""
    codes: dict[str, set[str]] = {}
    depth: dict[str, int] = {}
    every_market: set[str] = set()
    for topic in topics:
        if topic.code is None or topic.code == ALL_MARKETS:
            every_market.add(topic.type)
            codes.setdefault(topic.type, set())
            continue
        codes.setdefault(topic.type, set()).add(topic.code)
        if topic.type == "orderbook":
            depth[topic.code] = max(depth.get(topic.code, 0), topic.units)
    entries: list[Entry] = []
    for type_name in sorted(codes, key=_TYPE_ORDER.__getitem__):
        if type_name in every_market:
            entries.append(Entry(type_name, None))
        elif type_name == "orderbook":
            entries.append(
                Entry(type_name, tuple(sorted(_depth_code(c, depth[c]) for c in codes[type_name])))
            )
        else:
            entries.append(Entry(type_name, tuple(sorted(codes[type_name]))))
    return Subscription(tuple(entries))


def _depth_code(code: str, depth: int) -> str:
    return code if depth == DEFAULT_ORDERBOOK_DEPTH else f"{code}.{depth}"


def desired_state(intents: Mapping[str, Iterable[str]]) -> DesiredState:
    """Union of every client's intents (``client_id -> topic strings``), validated."""
    topics: set[Topic] = set()
    invalid: dict[tuple[str, str], str] = {}
    for client_id, texts in intents.items():
        for text in texts:
            try:
                topics.add(parse_topic(text))
            except InvalidTopicError as exc:
                invalid[(client_id, text)] = exc.reason
    public = subscription_for(topic for topic in topics if not topic.is_private)
    private = subscription_for(topic for topic in topics if topic.is_private)
    return DesiredState(frozenset(topics), public, private, invalid)


def next_message(
    desired: Subscription, sent: Subscription | None, ticket: str, fmt: str = "DEFAULT"
) -> list[dict[str, Any]] | None:
    """The message to send so that upstream matches ``desired``; None when nothing must be sent.

    An empty ``desired`` yields None too: Upbit has no unsubscribe, so stopping a stream is the
    connection's business (the collector closes it), not a message.
    """
    if desired.is_empty or desired == sent:
        return None
    return desired.message(ticket, fmt)


REQUEST_OVERHEAD = 128
"""Bytes of a subscribe message besides its type objects: the ticket object (a 36-character
UUID), the format object and the brackets, rounded up."""
_TYPE_OVERHEAD = len('{"type":"","codes":[]},')
_CODE_OVERHEAD = len('"",') + len(".30")  # quotes, comma, the largest orderbook suffix


class RequestSize:
    """A running upper bound of the subscribe message's size while topics are admitted.

    :meth:`cost` is what one more topic would add (0 when its type and code are already in),
    :meth:`add` admits it. The bound is never below ``len(message)`` of the real
    :meth:`Subscription.message` for the same topics (a property test holds it to that), so a
    limit checked here holds on the wire.
    """

    __slots__ = ("_pairs", "_types", "bytes")

    def __init__(self) -> None:
        self._pairs: set[tuple[str, str | None]] = set()
        self._types: set[str] = set()
        self.bytes = REQUEST_OVERHEAD

    def cost(self, topic: Topic) -> int:
        code = None if topic.code in (None, ALL_MARKETS) else topic.code
        if (topic.type, code) in self._pairs:
            return 0
        extra = 0 if code is None else len(code.encode()) + _CODE_OVERHEAD
        if topic.type not in self._types:
            extra += _TYPE_OVERHEAD + len(topic.type)
        return extra

    def add(self, topic: Topic) -> None:
        self.bytes += self.cost(topic)
        self._types.add(topic.type)
        self._pairs.add((topic.type, None if topic.code in (None, ALL_MARKETS) else topic.code))
