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
- orderbook: one code per market and level at the LARGEST depth any intent asks for (no suffix
  for 30), smaller depths are cut from it by the collector; one orderbook object per level
  (``{"type": "orderbook", "codes": [...], "level": 10000}``, §2.2, §2.4), the ungrouped one
  first, then by level;
- myOrder without codes as soon as anyone wants ``myOrder:*``; myAsset never carries codes;
- invalid topics never reach a message; they are returned for reporting.

Snapshots only for what is new (:func:`request_entries`). Every subscribe message replaces the
connection's subscription and each code of it starts with a SNAPSHOT unless its object says
``is_only_realtime`` (§3). So the message sent on a connection splits every quotation object in
two: the codes the connection already streams (:data:`StreamKey` in ``applied``) go in an object
with ``is_only_realtime: true``, the codes new to the connection in one without it (Upbit takes
the same type twice in one request, §2.4). After a reconnect nothing is applied: every code gets
its snapshot again.

Verification (:func:`listed_streams`, :func:`compare_listing`): what a LIST_SUBSCRIPTIONS answer
(§2.7) says the connection streams, compared with what was sent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.topics import (
    ALL_MARKETS,
    DEFAULT_ORDERBOOK_DEPTH,
    TOPIC_TYPES,
    Topic,
    canonical_level,
    parse_topic,
)
from upbit_fanout.subscriptions.upbit_fields import PRIVATE_TYPES

__all__ = [
    "REQUEST_OVERHEAD",
    "DesiredState",
    "Entry",
    "ListingCheck",
    "RequestSize",
    "StreamKey",
    "Subscription",
    "compare_listing",
    "desired_state",
    "list_message",
    "listed_streams",
    "next_message",
    "parking_message",
    "request_entries",
    "streams_serving",
    "subscription_for",
]

StreamKey = tuple[str, str | None, str | None]
"""One upstream stream of a connection: ``(type, code as sent, level)``. The code carries the
orderbook depth suffix (``KRW-BTC.15``; another depth is another stream) and is None for a type
sent without codes (myAsset, myOrder of every market); the level is the canonical text of an
orderbook grouping step, None for none."""

_TYPE_ORDER = {name: index for index, name in enumerate(TOPIC_TYPES)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One type object of a subscribe message: ``{"type": ..., "codes": [...]}``.

    ``codes`` is None for a type sent without codes (myAsset, and myOrder for every market).
    Orderbook codes carry the depth suffix as Upbit spells it (``KRW-BTC.15``). ``level`` is an
    orderbook's grouping step (canonical text, sent as a JSON number; None: not sent, level 0).
    ``only_realtime`` / ``only_snapshot`` add Upbit's ``is_only_realtime`` /
    ``is_only_snapshot`` flags; a desired :class:`Subscription` never sets them, only the
    request built from it does.
    """

    type: str
    codes: tuple[str, ...] | None
    level: str | None = None
    only_realtime: bool = False
    only_snapshot: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.codes is not None:
            out["codes"] = list(self.codes)
        if self.level is not None:
            out["level"] = _level_number(self.level)
        if self.only_realtime:
            out["is_only_realtime"] = True
        if self.only_snapshot:
            out["is_only_snapshot"] = True
        return out

    def streams(self) -> Iterable[StreamKey]:
        if self.codes is None:
            yield (self.type, None, None)
            return
        for code in self.codes:
            yield (self.type, code, self.level)


def _level_number(level: str) -> int | float:
    """A canonical level text as the JSON number Upbit's examples send (§2.2)."""
    number = Decimal(level)
    if number == number.to_integral_value():
        return int(number)
    # at most 20 significant digits by the topic grammar's 12 + 8, but a double keeps 15-17:
    # levels are steps such as 0.1 or 0.01, whose shortest float text is the same text
    return float(number)


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

    def upstream_codes(self, type_name: str, level: str | None = None) -> tuple[str, ...]:
        for entry in self.entries:
            if entry.type == type_name and entry.level == level:
                return entry.codes or ()
        return ()

    def streams(self) -> frozenset[StreamKey]:
        """Every stream this subscription asks for."""
        return frozenset(key for entry in self.entries for key in entry.streams())

    def request(
        self, ticket: str, fmt: str = "DEFAULT", applied: Collection[StreamKey] = ()
    ) -> list[dict[str, Any]]:
        """The subscribe message for a connection that already streams ``applied``: snapshots
        only for the rest (:func:`request_entries`)."""
        entries = request_entries(self, applied)
        return [{"ticket": ticket}, *(entry.as_json() for entry in entries), {"format": fmt}]


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The union of live intents, split per connection, plus what had to be refused.

    The contract's reference reconciliation (:func:`desired_state`): topic grammar only, every
    refusal listed, no limits. The collector serves ``collector.intents.Plan`` instead, the same
    union under its limits, with bounded refusal reports and the private recording topics (its
    docstring says what differs); for intents within those limits the two agree on the
    subscriptions and topics.
    """

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
    books: dict[str | None, dict[str, int]] = {}  # level -> code -> largest depth
    every_market: set[str] = set()
    for topic in topics:
        if topic.code is None or topic.code == ALL_MARKETS:
            every_market.add(topic.type)
            codes.setdefault(topic.type, set())
            continue
        if topic.type == "orderbook":
            depth = books.setdefault(topic.level, {})
            depth[topic.code] = max(depth.get(topic.code, 0), topic.units)
            codes.setdefault(topic.type, set())
            continue
        codes.setdefault(topic.type, set()).add(topic.code)
    entries: list[Entry] = []
    for type_name in sorted(codes, key=_TYPE_ORDER.__getitem__):
        if type_name in every_market:
            entries.append(Entry(type_name, None))
        elif type_name == "orderbook":
            for level in sorted(books, key=_level_order):
                depth = books[level]
                entries.append(
                    Entry(
                        type_name, tuple(sorted(_depth_code(c, d) for c, d in depth.items())), level
                    )
                )
        else:
            entries.append(Entry(type_name, tuple(sorted(codes[type_name]))))
    return Subscription(tuple(entries))


def _level_order(level: str | None) -> tuple[int, Decimal]:
    return (0, Decimal(0)) if level is None else (1, Decimal(level))


def streams_serving(subscription: Subscription, topics: Iterable[Topic]) -> frozenset[StreamKey]:
    """The streams of ``subscription`` that feed ``topics`` (an orderbook topic is fed by the
    stream of its code and level, whatever depth that stream has)."""
    wanted: set[tuple[str, str | None, str | None]] = set()
    for topic in topics:
        code = None if topic.code in (None, ALL_MARKETS) else topic.code
        wanted.add((topic.type, code, topic.level))
    found: set[StreamKey] = set()
    for entry in subscription.entries:
        for key in entry.streams():
            type_name, code, level = key
            base = None if code is None else code.partition(".")[0]
            if (type_name, base, level) in wanted or (
                code is None and any(w[0] == type_name for w in wanted)
            ):
                found.add(key)
    return frozenset(found)


def request_entries(
    desired: Subscription, applied: Collection[StreamKey] = ()
) -> tuple[Entry, ...]:
    """The type objects of the message that makes a connection streaming ``applied`` stream
    ``desired``: for each quotation object, the codes already applied in a copy flagged
    ``is_only_realtime`` (no repeated snapshot, §3), the new ones in a copy without the flag
    (their snapshot), in that order; empty halves are left out. Private objects (myOrder,
    myAsset take no flags, §2.2) and objects without codes are sent as they are."""
    out: list[Entry] = []
    for entry in desired.entries:
        if entry.codes is None or entry.type in PRIVATE_TYPES or not applied:
            out.append(entry)
            continue
        old = tuple(c for c in entry.codes if (entry.type, c, entry.level) in applied)
        if not old:
            out.append(entry)
            continue
        new = tuple(c for c in entry.codes if (entry.type, c, entry.level) not in applied)
        out.append(replace(entry, codes=old, only_realtime=True))
        if new:
            out.append(replace(entry, codes=new))
    return tuple(out)


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
    desired: Subscription,
    sent: Subscription | None,
    ticket: str,
    fmt: str = "DEFAULT",
    applied: Collection[StreamKey] | None = None,
) -> list[dict[str, Any]] | None:
    """The message to send so that upstream matches ``desired``; None when nothing must be sent.

    ``sent`` is what the connection carries (None: a fresh connection); the streams it already
    has (``applied``, by default those of ``sent``) get no snapshot again (:func:`request_entries`).
    An empty ``desired`` yields None too: Upbit has no unsubscribe, so stopping a stream is the
    connection's business (the collector closes or parks it), not a message.
    """
    if desired.is_empty or desired == sent:
        return None
    if applied is None:
        applied = sent.streams() if sent is not None else ()
    return desired.request(ticket, fmt, applied)


def list_message(ticket: str, fmt: str = "DEFAULT") -> list[dict[str, Any]]:
    """The LIST_SUBSCRIPTIONS request (§2.7), naming the connection's own format: another
    format would switch every stream of the connection (§2.5)."""
    return [{"ticket": ticket}, {"method": "LIST_SUBSCRIPTIONS"}, {"format": fmt}]


def parking_message(
    last: Subscription, ticket: str, fmt: str = "DEFAULT"
) -> list[dict[str, Any]] | None:
    """What a connection kept open with nothing wanted (a warm socket) is subscribed to.

    Upbit has no unsubscribe (§3), so the cheapest subscription replaces the last one: one code
    of the last quotation object, ``is_only_snapshot`` (one frame, then silence: §2.2). A code
    that was just served is one Upbit knows. None when ``last`` has no quotation code (a private
    connection: myOrder and myAsset send only on account activity, so the last subscription is
    already quiet and is kept, which costs no message).
    """
    for entry in last.entries:
        if entry.codes and entry.type not in PRIVATE_TYPES:
            first = entry.codes[0].partition(".")[0]
            park = Entry("ticker", (first,), only_snapshot=True)
            return [{"ticket": ticket}, park.as_json(), {"format": fmt}]
    return None


def listed_streams(result: object) -> frozenset[StreamKey]:
    """The streams a LIST_SUBSCRIPTIONS ``result`` (DEFAULT keys: ``type``, ``codes``,
    ``level``) reports; malformed items are skipped. myOrder with no or empty codes means every
    market, as when subscribing (§8)."""
    found: set[StreamKey] = set()
    if not isinstance(result, list):
        return frozenset()
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            continue
        type_name = item["type"]
        level = canonical_level(item.get("level")) if type_name == "orderbook" else None
        codes = item.get("codes")
        if not codes or not isinstance(codes, list):
            if type_name in PRIVATE_TYPES:
                found.add((type_name, None, None))
            continue
        for code in codes:
            if isinstance(code, str):
                found.add((type_name, code, level))
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class ListingCheck:
    """The comparison of a LIST_SUBSCRIPTIONS answer with what was sent."""

    missing: frozenset[StreamKey]
    """Sent but not listed: Upbit did not apply them."""
    extra: frozenset[StreamKey]
    """Listed but not sent."""
    confirmed: frozenset[StreamKey]
    """Sent and listed."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def compare_listing(sent: Subscription, listed: Collection[StreamKey]) -> ListingCheck:
    """What Upbit applied of ``sent``, by its LIST_SUBSCRIPTIONS answer.

    CHOICE (the docs do not say whether a listing echoes the depth suffix): an orderbook code
    sent as ``KRW-BTC.15`` is confirmed by a listed ``KRW-BTC.15`` or a bare ``KRW-BTC``.
    """
    listed_set = frozenset(listed)
    confirmed: set[StreamKey] = set()
    used: set[StreamKey] = set()
    for key in sent.streams():
        type_name, code, level = key
        if key in listed_set:
            confirmed.add(key)
            used.add(key)
            continue
        if code is not None and "." in code:
            bare = (type_name, code.partition(".")[0], level)
            if bare in listed_set:
                confirmed.add(key)
                used.add(bare)
    missing = sent.streams() - confirmed
    return ListingCheck(frozenset(missing), listed_set - used, frozenset(confirmed))


REQUEST_OVERHEAD = 128
"""Bytes of a subscribe message besides its type objects: the ticket object (a 36-character
UUID), the format object and the brackets, rounded up."""
# A type object may be sent twice (its applied codes flagged is_only_realtime, its new codes
# not: request_entries), so each is counted twice, with the flag.
_TYPE_OVERHEAD = 2 * len('{"type":"","codes":[]},') + len(',"is_only_realtime":true')
_LEVEL_OVERHEAD = 2 * len(',"level":')
_CODE_OVERHEAD = len('"",') + len(".30")  # quotes, comma, the largest orderbook suffix


class RequestSize:
    """A running upper bound of the subscribe message's size while topics are admitted.

    :meth:`cost` is what one more topic would add (0 when its type, code and level are already
    in), :meth:`add` admits it. The bound is never below ``len(message)`` of the real
    :meth:`Subscription.request` for the same topics, whatever is applied (a property test
    holds it to that), so a limit checked here holds on the wire.
    """

    __slots__ = ("_pairs", "_types", "bytes")

    def __init__(self) -> None:
        self._pairs: set[tuple[str, str | None, str | None]] = set()
        self._types: set[tuple[str, str | None]] = set()
        self.bytes = REQUEST_OVERHEAD

    def cost(self, topic: Topic) -> int:
        code = None if topic.code in (None, ALL_MARKETS) else topic.code
        if (topic.type, code, topic.level) in self._pairs:
            return 0
        extra = 0 if code is None else len(code.encode()) + _CODE_OVERHEAD
        if (topic.type, topic.level) not in self._types:
            extra += _TYPE_OVERHEAD + 2 * len(topic.type)
            if topic.level is not None:
                extra += _LEVEL_OVERHEAD + 2 * (len(topic.level) + 8)  # a float's text at worst
        return extra

    def add(self, topic: Topic) -> None:
        self.bytes += self.cost(topic)
        self._types.add((topic.type, topic.level))
        code = None if topic.code in (None, ALL_MARKETS) else topic.code
        self._pairs.add((topic.type, code, topic.level))
