"""Intent tracking: the live view of every ``P:intents:{client_id}`` SET, kept current three ways.

1. ``P:control`` messages (payload: a client id): that client's key is re-read at once;
2. keyevent notifications (``SUBSCRIBE __keyevent@DB__:EVENT`` for each of
   :data:`WATCHED_EVENTS`: the events that can create, change or remove a SET of intents) whose
   key (the payload) is an intent key re-read just that key. The tracker enables them with
   ``CONFIG SET notify-keyspace-events``, merging the flags it needs (``E g s x e``) into the
   current value, never removing anyone else's; when CONFIG is not allowed it says so ONCE and
   relies on the sweep. Per-event channels rather than the ``__keyspace@DB__:P:intents:*``
   pattern, because a pattern subscription receives every event of the intent keys, and every
   heartbeat makes one (``expire``) that changes no member: at 10,000 clients that was 1,000
   messages a second to parse and drop. Redis now drops those itself (a channel nobody
   subscribed to). What a watched event does not cover is left to the sweep (``expire``,
   ``persist``: a TTL raised above ``max_lease``; a ``SET``, ``SORT ... STORE`` or ``Z*STORE``
   writing another type over an intent key);
3. a periodic pass (every ``sweep_interval`` s), so correctness never depends on
   notifications (Redis sends them fire-and-forget, and an expiry only when it actually
   deletes the key, which for a key nobody touches can be long after its TTL ran out). While
   notifications work most passes are light (:meth:`IntentTracker.light_sweep`): they touch
   only the keys whose lease ran out by the view's own reckoning (each read notes the key's
   PTTL) and the keys still without one, so a pass costs what changed, not what exists: at
   10,000 clients with 30 s leases, about 700 PTTLs every 2 s instead of a SCAN of 10,000 keys.
   Touching an expired key makes Redis delete it there and then. Every ``full_sweep_every``-th
   pass is full (:meth:`IntentTracker.sweep`: ``SCAN MATCH P:intents:*`` and a re-read of
   everything), the safety net for what no notification announces. Both go one chunk of keys
   at a time, so the event loop runs between chunks, and apply changes in place, per client
   (:meth:`IntentTracker.take_changes` tells which: the service's
   :class:`collector.union.UnionIndex` works from that, never O(clients)).

Every key is read with one bounded Lua call (``_READ_SCRIPT``), whatever a client wrote into it.
Hostile input is normal input: keys of the wrong type, client ids outside the contract, keys
without a lease (after ``Limits.lease_grace``) and keys over ``Limits.max_topics_per_client``
members are refused whole (:class:`KeyRefusal`); :func:`plan` refuses members one by one (not a
topic, too long, an unknown market, private without keys, over the union limits) and reports a
count and a few examples per client (:class:`ClientRefusal`), which :class:`RefusalLog` logs in
a bounded number of lines.

When Redis is unreachable the last known intents are KEPT (the collector must not drop the
upstream subscription because it cannot read), and the tracker retries with backoff. After a
reconnect it sweeps at once, since notifications were missed.

The pure helpers (:func:`merge_notify_flags`, :func:`plan`,
:func:`lease_reason`, :func:`valid_client_id`, :func:`escape`, ...) hold the decisions;
:class:`IntentTracker` only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError, RedisError, ResponseError

from upbit_fanout.collector._log import log
from upbit_fanout.collector.markets import MarketSet
from upbit_fanout.collector.status import LogLimiter, RedisHealth
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.connection import (
    REDIS_FAILURES,
    cluster_of,
    cluster_primaries,
    node_client,
    primaries,
    refresh_slots,
)
from upbit_fanout.subscriptions.errors import InvalidTopicError
from upbit_fanout.subscriptions.keys import Keys, invalid_field, is_client_id
from upbit_fanout.subscriptions.reconcile import RequestSize, Subscription, subscription_for
from upbit_fanout.subscriptions.tasks import stop_tasks
from upbit_fanout.subscriptions.topics import Topic, could_be_topic, parse_topic

__all__ = [
    "DEFAULT_LIMITS",
    "NEEDED_FLAGS",
    "NO_KEYS_REASON",
    "RECORDED_TOPICS",
    "WATCHED_EVENTS",
    "ClientRefusal",
    "IntentTracker",
    "KeyRefusal",
    "Limits",
    "Plan",
    "RefusalLog",
    "changed_refusals",
    "clip",
    "escape",
    "id_reason",
    "lease_reason",
    "merge_notify_flags",
    "newly_invalid",
    "plan",
    "refusal_for",
    "too_many_reason",
    "valid_client_id",
    "whole_refusal",
]


NEEDED_FLAGS = "Egsxe"
"""E: keyevent channels; g: DEL, RENAME, MOVE, COPY, RESTORE; s: SADD, SREM, SPOP,
SMOVE, S*STORE; x: expired; e: evicted (see :data:`WATCHED_EVENTS`)."""

WATCHED_EVENTS = (
    # s: SADD (only when a member was added: a heartbeat's SADD of the same topics is silent),
    # SREM and SPOP (and ``del`` when that emptied the set), SMOVE (``srem`` on its source,
    # ``sadd`` on its destination), S*STORE into a key (``del`` when the result is empty).
    "sadd",
    "srem",
    "spop",
    "sinterstore",
    "sunionstore",
    "sdiffstore",
    # g: DEL/UNLINK/GETDEL, an EXPIRE into the past, RENAME (both keys), MOVE between
    # databases (both keys), COPY and RESTORE onto a key.
    "del",
    "rename_from",
    "rename_to",
    "move_from",
    "move_to",
    "copy_to",
    "restore",
    # x, e: a lease ran out; a key evicted under maxmemory.
    "expired",
    "evicted",
)
"""Keyevent channels the tracker subscribes (Redis 7). Not among them: ``expire``/``pexpire``
(every heartbeat; no member changes) and ``persist`` (a TTL made unfit for a lease is seen by
the full sweep, as are a ``SET``, ``BITOP``, ``SORT ... STORE`` or ``Z*STORE``/``GEO*STORE``
overwriting an intent key with another type: those events need the ``$``, ``l`` and ``z`` flags,
which would make Redis generate one for every such write to any key of the database)."""

_STOP_WITHIN = 5.0  # seconds a closing reader task is given
_A_CLASS = set("g$lshzxetd")  # what Redis's alias "A" stands for (Redis 7)

NO_KEYS_REASON = (
    "private topic, but the collector has no Upbit API keys "
    "(set UPBIT_FANOUT_ACCESS_KEY and UPBIT_FANOUT_SECRET_KEY)"
)

Intents = Mapping[str, frozenset[str]]


# -- pure helpers --------------------------------------------------------------------------------
def merge_notify_flags(current: str, needed: str = NEEDED_FLAGS) -> str:
    """``current`` plus whatever of ``needed`` it lacks (flags are never removed).

    Redis reports the class alias ``A`` for ``g$lshzxetd``; a flag covered by it is not added.
    Returns ``current`` unchanged when nothing is missing.
    """
    have = set(current)
    if "A" in have:
        have |= _A_CLASS
    missing = "".join(flag for flag in needed if flag not in have)
    return current + missing


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client, and all of them together, may ask for (every value is a setting)."""

    max_topics_per_client: int = 1000
    """A key with more members is refused whole, and never read past a few samples."""
    max_union_topics: int = 5000
    """Topics in the union (both connections); the newest clients' excess is refused."""
    max_request_bytes: int = 128 * 1024
    """Upper bound of one subscribe message, well below any server's frame limit (websockets
    and many servers default to 1 MiB); the newest clients' excess is refused."""
    max_topic_length: int = 64
    """Bytes of one member; longer ones are refused (and read only this far)."""
    max_client_id_length: int = 128
    """The contract allows 1-128; a smaller value refuses longer ids too."""
    max_lease: float = 300.0
    """Seconds: a key whose TTL is above this is not a lease."""
    lease_grace: float = 10.0
    """Seconds a key without a TTL (or with one above ``max_lease``) is served, so that
    ``SADD`` then ``EXPIRE`` from a shell works; then it is refused until it gets one."""
    invalid_examples: int = 5
    """Refused topics listed per client in ``P:invalid`` (the rest are counted)."""
    max_invalid_clients: int = 1000
    """Clients listed in ``P:invalid``; the rest are counted in one field ``*``."""
    reason_length: int = 200
    """Characters of a reason in ``P:invalid`` and in log lines."""

    def __post_init__(self) -> None:
        for name in (
            "max_topics_per_client",
            "max_union_topics",
            "max_request_bytes",
            "max_topic_length",
            "max_client_id_length",
            "invalid_examples",
            "max_invalid_clients",
            "reason_length",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_client_id_length > 128:
            raise ValueError("max_client_id_length is at most 128 (the contract's limit)")
        if self.max_lease <= 0 or self.lease_grace < 0:
            raise ValueError("max_lease must be > 0 and lease_grace >= 0")

    def describe(self) -> str:
        """One line for ``P:status`` field ``limits``."""
        return (
            f"topics/client {self.max_topics_per_client}, union {self.max_union_topics}, "
            f"request {self.max_request_bytes} B, topic {self.max_topic_length} B, "
            f"client id {self.max_client_id_length}, lease <= {self.max_lease:g} s "
            f"(grace {self.lease_grace:g} s)"
        )


DEFAULT_LIMITS = Limits()

_PRINTABLE = frozenset(range(0x21, 0x7F)) - {ord("\\")}


def escape(value: str | bytes, limit: int = 80) -> str:
    """``value`` as printable ASCII without spaces: other bytes as ``\\xNN``, a backslash as
    ``\\\\``; cut to ``limit`` characters (``...[NB]`` says it was N bytes long).

    Client ids and topics from Redis go through this before they reach a log line, a
    ``P:invalid`` field or ``status``: a newline or a 1 MB member cannot garble them.
    """
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    out: list[str] = []
    size = 0
    for byte in raw:
        piece = chr(byte) if byte in _PRINTABLE else "\\\\" if byte == 0x5C else f"\\x{byte:02x}"
        size += len(piece)
        if size > limit:
            return "".join(out) + f"...[{len(raw)}B]"
        out.append(piece)
    return "".join(out)


def clip(text: str, limit: int) -> str:
    """A reason fit for one line: control characters escaped, at most ``limit`` characters."""
    if text.isprintable() and len(text) <= limit:
        return text
    cleaned = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[: max(0, limit - 3)] + "..."


def valid_client_id(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The client id, when ``raw`` is one of the contract (1-128 of A-Z a-z 0-9 _ . - @)."""
    if not 1 <= len(raw) <= limits.max_client_id_length:
        return None
    text = raw.decode("ascii", "replace")
    return text if is_client_id(text) else None


def id_reason(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """Why an intent key's client id is refused (see :func:`valid_client_id`)."""
    if not raw:
        what = "this one is empty"
    elif len(raw) > limits.max_client_id_length:
        what = f"this one is {len(raw)} bytes long, more than {limits.max_client_id_length}"
    else:
        what = f"this one ('{escape(raw, 40)}') has other characters"
    return (
        f"client id not served: ids are 1-{limits.max_client_id_length} of "
        f"A-Z a-z 0-9 _ . - @, {what}; DEL the key and use a valid id"
    )


def lease_reason(
    key: str, ttl_ms: int, unleased_since: float | None, now: float, limits: Limits
) -> str | None:
    """Why a key is refused for its TTL (None: it is a lease, or still within the grace).

    ``ttl_ms`` is PTTL (-1: none); ``unleased_since`` is when the tracker first saw it without a
    proper lease.
    """
    if 0 <= ttl_ms <= limits.max_lease * 1000:
        return None
    if unleased_since is None or now - unleased_since < limits.lease_grace:
        return None
    if ttl_ms < 0:
        return (
            f"no TTL: {key} is not a lease and would pin the union forever; "
            f"EXPIRE it (EXPIRE {key} 30) and keep refreshing it"
        )
    return (
        f"TTL of {ttl_ms / 1000:.0f} s is above the maximum lease of {limits.max_lease:g} s; "
        f"EXPIRE it with {limits.max_lease:g} or less and keep refreshing it"
    )


def too_many_reason(key: str, size: int, limits: Limits) -> str:
    return (
        f"{key} holds {size} topics, more than the {limits.max_topics_per_client} a client may "
        "ask for (max_topics_per_client); none of it is read or served: remove topics"
    )


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    """An intent key refused whole (wrong type, invalid id, no lease, too many members)."""

    reason: str
    size: int = 1
    """How many intents that is (the key's member count; 1 for a key that is no SET)."""
    sample: tuple[str, ...] = ()
    """A few of its members, for the report."""


@dataclass(frozen=True, slots=True)
class ClientRefusal:
    """What ``P:invalid`` and the log say about one client: a count and a few examples."""

    count: int
    examples: tuple[tuple[str, str], ...] = ()
    """``(topic, reason)``, topics escaped, reasons clipped; at most ``invalid_examples``."""
    reason: str = ""
    """Set when the whole key is refused."""

    def summary(self) -> str:
        text = f"{self.count} refused"
        if self.reason:
            text += f": {self.reason}"
        if self.examples and self.count > len(self.examples):
            text += f" ({len(self.examples)} shown)"
        return text


@dataclass(frozen=True, slots=True)
class Plan:
    """What each upstream connection should carry, and which intents are refused: the
    collector's reconciliation, as :func:`plan` makes it.

    Not :class:`subscriptions.reconcile.DesiredState` under another name, though both hold the
    union split per connection (``public`` / ``private`` subscriptions and topics): that one is
    the contract's reference (topic grammar only, every refusal listed, nothing bounded), while
    a plan is what the collector serves, so it differs in three facts (pinned against
    :func:`subscriptions.reconcile.desired_state` in tests/collector/test_plan.py):

    - ``private`` may carry more than ``private_topics``: with always-on recording it holds
      :data:`RECORDED_TOPICS` too, while ``private_topics`` stays the channels intents ask for;
    - the collector's limits apply (:class:`Limits`, the market list, private topics without
      API keys), so a valid topic can be refused;
    - refusals are reports for ``P:invalid``: bounded per client (a count and a few examples,
      :class:`ClientRefusal`, the texts escaped) and over clients (``hidden_clients``), where
      ``DesiredState.invalid`` lists every one as it was written.
    """

    public: Subscription = field(default_factory=Subscription)
    public_topics: frozenset[Topic] = frozenset()
    private: Subscription = field(default_factory=Subscription)
    private_topics: frozenset[Topic] = frozenset()
    refused: Mapping[str, ClientRefusal] = field(default_factory=dict)
    """Client id (escaped) -> what was refused, for at most ``max_invalid_clients`` clients."""
    hidden_clients: int = 0
    """Clients with refusals beyond ``max_invalid_clients`` (counted, not listed)."""
    hidden_count: int = 0
    """Their refused intents."""

    @property
    def invalid(self) -> dict[tuple[str, str], str]:
        """``(client_id, topic) -> reason`` for every refusal listed as an example."""
        return {
            (client, topic): reason
            for client, refusal in self.refused.items()
            for topic, reason in refusal.examples
        }

    @property
    def refused_total(self) -> int:
        """Every refused intent, listed or not (``P:status`` ``invalid_intents``)."""
        return sum(refusal.count for refusal in self.refused.values()) + self.hidden_count

    def invalid_fields(self) -> dict[str, str]:
        """The ``P:invalid`` hash: ``"{client}" -> summary``, ``"{client} {topic}" -> reason``,
        and ``"*"`` when clients were left out."""
        fields: dict[str, str] = {}
        for client, refusal in self.refused.items():
            fields[invalid_field(client)] = refusal.summary()
            for topic, reason in refusal.examples:
                fields[invalid_field(client, topic)] = reason
        if self.hidden_clients:
            fields["*"] = (
                f"{self.hidden_count} refused intents of {self.hidden_clients} more clients, "
                "not listed (max_invalid_clients)"
            )
        return fields


RECORDED_TOPICS: frozenset[Topic] = frozenset({parse_topic("myOrder:*"), parse_topic("myAsset")})
"""What always-on recording keeps subscribed on the private connection (every market)."""


def plan(
    intents: Mapping[str, Iterable[str]],
    *,
    private_allowed: bool,
    markets: MarketSet | None = None,
    limits: Limits = DEFAULT_LIMITS,
    refused_keys: Mapping[str, KeyRefusal] | None = None,
    seen: Mapping[str, float] | None = None,
    record_private: bool = False,
) -> Plan:
    """The union of every client's intents, split per connection; refused intents reported.

    Refused, per member: longer than ``max_topic_length``; not a topic (:func:`parse_topic`);
    private without API keys (``private_allowed=False``: :data:`NO_KEYS_REASON`); a market
    ``markets`` does not list (None: not checked); over the union or request-size limit. Clients
    are admitted oldest first (``seen``: when each was first seen; then by id), each one's topics
    in sorted order, so when the union is full it is the newest client's excess that is refused,
    never the whole union. A client with more than ``max_topics_per_client`` members, and every
    key in ``refused_keys``, is refused whole.

    With keys and ``record_private`` the private subscription always carries
    :data:`RECORDED_TOPICS` (myOrder of every market and myAsset, for the streams), while
    ``private_topics``, the channels served, stay what intents ask for.
    """
    when = seen or {}
    order = sorted(intents, key=lambda client: (when.get(client, 0.0), client))
    chosen: dict[bool, set[Topic]] = {False: set(), True: set()}
    sizes = {False: RequestSize(), True: RequestSize()}
    union_full = (
        f"the union is full ({limits.max_union_topics} topics, max_union_topics); the newest "
        "clients' topics are refused first"
    )
    too_big = (
        f"the subscribe message would exceed {limits.max_request_bytes} bytes "
        "(max_request_bytes); the newest clients' topics are refused first"
    )
    refused: dict[str, ClientRefusal] = {}
    for client in order:
        members = frozenset(intents[client])
        if len(members) > limits.max_topics_per_client:
            excess = too_many_reason("the key", len(members), limits)
            refused[escape(client)] = whole_refusal(len(members), excess, members, limits)
            continue
        valid, invalid = _classify(members, private_allowed, markets, limits)
        over: list[tuple[str, str | Topic | None]] = []
        for text, topic in valid:
            if topic in chosen[topic.is_private]:
                continue
            size = sizes[topic.is_private]
            if len(chosen[False]) + len(chosen[True]) >= limits.max_union_topics:
                over.append((text, union_full))
            elif size.bytes + size.cost(topic) > limits.max_request_bytes:
                over.append((text, too_big))
            else:
                size.add(topic)
                chosen[topic.is_private].add(topic)
        if invalid or over:
            refused[escape(client)] = ClientRefusal(
                len(invalid) + len(over), _examples(invalid, over, markets, limits)
            )
    for client, key_refusal in (refused_keys or {}).items():
        refused[client] = whole_refusal(
            key_refusal.size, key_refusal.reason, key_refusal.sample, limits
        )
    shown = dict(sorted(refused.items())[: limits.max_invalid_clients])
    hidden = [refusal.count for client, refusal in refused.items() if client not in shown]
    public = frozenset(chosen[False])
    private = frozenset(chosen[True])
    recorded = private | RECORDED_TOPICS if record_private and private_allowed else private
    return Plan(
        subscription_for(public),
        public,
        subscription_for(recorded),
        private,
        shown,
        len(hidden),
        sum(hidden),
    )


def refusal_for(
    members: frozenset[str], private_allowed: bool, markets: MarketSet | None, limits: Limits
) -> tuple[tuple[Topic, ...], ClientRefusal | None]:
    """What :func:`plan` makes of one client's members while the union has room: its valid
    topics, and the refusal of the others (None when every member is served). For
    :class:`collector.union.UnionIndex`, which keeps the union incrementally."""
    valid, invalid = _classify(members, private_allowed, markets, limits)
    topics = tuple(topic for _, topic in valid)
    if not invalid:
        return topics, None
    return topics, ClientRefusal(len(invalid), _examples(invalid, (), markets, limits))


def _examples(
    invalid: Iterable[tuple[str, str | Topic | None]],
    over: Iterable[tuple[str, str | Topic | None]],
    markets: MarketSet | None,
    limits: Limits,
) -> tuple[tuple[str, str], ...]:
    # Both lists are sorted by text: the first few of the two are the examples.
    first = itertools.islice(heapq.merge(invalid, over, key=_first), limits.invalid_examples)
    return tuple(
        (escape(text, 60), clip(_reason(text, reason, markets), limits.reason_length))
        for text, reason in first
    )


def _first(item: tuple[str, object]) -> str:
    return item[0]


def _reason(text: str, reason: str | Topic | None, markets: MarketSet | None) -> str:
    """The words for a refusal kept in short form (see :func:`_classify`)."""
    if isinstance(reason, str):
        return reason
    if reason is None:
        try:
            parse_topic(text)
        except InvalidTopicError as exc:
            return exc.reason
        return "not a topic"  # pragma: no cover - could_be_topic is a superset of valid topics
    return (markets.refusal(reason) if markets is not None else None) or "unknown market"


@lru_cache(maxsize=512)
def _classify(
    members: frozenset[str], private_allowed: bool, markets: MarketSet | None, limits: Limits
) -> tuple[tuple[tuple[str, Topic], ...], tuple[tuple[str, str | Topic | None], ...]]:
    """One client's members sorted into ``(text, topic)`` that may be served and ``(text,
    reason)`` refused, both in text order. Reasons are kept short and worded only when shown:
    None is "not a topic" (:func:`could_be_topic` said so without parsing; ``parse_topic`` says
    why), a Topic is an unknown market (the suggestion is looked up then).

    Depends on nothing but its arguments, so it is cached: a client whose key did not change
    costs nothing when another client's did (1,000 junk members are parsed once, not at every
    change of anybody's intents)."""
    valid: list[tuple[str, Topic]] = []
    invalid: list[tuple[str, str | Topic | None]] = []
    too_long = f"longer than {limits.max_topic_length} bytes (max_topic_length)"
    for text in sorted(members):
        if len(text.encode("utf-8", "surrogateescape")) > limits.max_topic_length:
            invalid.append((text, too_long))
            continue
        if not could_be_topic(text):
            invalid.append((text, None))
            continue
        try:
            topic = parse_topic(text)
        except InvalidTopicError as exc:
            invalid.append((text, exc.reason))
            continue
        if topic.is_private and not private_allowed:
            invalid.append((text, NO_KEYS_REASON))
        elif markets is not None and not markets.lists(topic):
            invalid.append((text, topic))
        else:
            valid.append((text, topic))
    return tuple(valid), tuple(invalid)


def whole_refusal(size: int, reason: str, sample: Iterable[str], limits: Limits) -> ClientRefusal:
    """The refusal of a whole key (``size`` intents; a few of ``sample`` as examples)."""
    text = clip(reason, limits.reason_length)
    shown = heapq.nsmallest(limits.invalid_examples, sample)
    return ClientRefusal(max(1, size), tuple((escape(member, 60), text) for member in shown), text)


def changed_refusals(
    before: Mapping[str, ClientRefusal], after: Mapping[str, ClientRefusal]
) -> dict[str, ClientRefusal]:
    """The clients whose refusals are new or different (log these)."""
    return {client: new for client, new in after.items() if before.get(client) != new}


def newly_invalid(
    before: Mapping[tuple[str, str], str], after: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """The refused intents in ``after`` that were not refused in ``before``."""
    return {item: reason for item, reason in after.items() if item not in before}


class RefusalLog:
    """Logs refused intents: one WARNING line per client (a count and an example), at most one
    per client every ``interval`` s and ``per_interval`` client lines in all per ``interval``
    (the rest are counted in one line), every part of a line cut short. 100,000 junk members
    make one line, not 100,000; 100,000 junk clients make ``per_interval`` + 2 lines."""

    def __init__(
        self,
        interval: float = 10.0,
        per_interval: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._limiter = LogLimiter(interval, clock)
        self._clock = clock
        self._limited_since = clock()
        self._per_interval = per_interval
        self._window = -1e18
        self._in_window = 0
        self._skipped = 0

    def report(self, before: Plan, after: Plan) -> int:
        """Log what changed from ``before`` to ``after``; return the number of lines written."""
        lines = 0
        now = self._clock()
        if now - self._window >= self.interval:
            if self._skipped:
                log.warning(
                    "refused intents of %d more client(s) were not logged in the last %.0f s; "
                    "see upbit-fanout status or P:invalid",
                    self._skipped,
                    now - self._window,
                )
                lines += 1
            self._window, self._in_window, self._skipped = now, 0, 0
        if now - self._limited_since > 10 * self.interval:
            # Forget the per-client timers now and then: 100,000 junk client ids seen once
            # must not stay in memory for the collector's lifetime.
            self._limiter = LogLimiter(self.interval, self._clock)
            self._limited_since = now
        for client, refusal in sorted(changed_refusals(before.refused, after.refused).items()):
            if self._in_window >= self._per_interval:
                if not self._skipped:
                    log.warning(
                        "refusing intents of more clients; not logging them for %.0f s "
                        "(see upbit-fanout status or P:invalid)",
                        self.interval - (now - self._window),
                    )
                    lines += 1
                self._skipped += 1
                continue
            allowed, held = self._limiter.allow(client)
            if not allowed:
                continue
            topic, reason = refusal.examples[0] if refusal.examples else ("-", refusal.reason)
            log.warning(
                "refusing %d intent(s) of client %s, e.g. %s: %s%s",
                refusal.count,
                client,
                topic,
                reason,
                f" ({held} similar lines held back)" if held else "",
            )
            self._in_window += 1
            lines += 1
        return lines


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


# One round trip per key, bounded whatever the key holds: TYPE, PTTL, SCARD; the members only
# when there are at most ARGV[1] of them (else ARGV[3] samples), each cut to ARGV[2] + 1 bytes.
_READ_SCRIPT = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return {kind} end
local ttl = redis.call('PTTL', KEYS[1])
if kind ~= 'set' then return {kind, 1, ttl, {}} end
local size = redis.call('SCARD', KEYS[1])
local members
if size > tonumber(ARGV[1]) then
  members = redis.call('SRANDMEMBER', KEYS[1], tonumber(ARGV[3]))
else
  members = redis.call('SMEMBERS', KEYS[1])
end
local limit = tonumber(ARGV[2])
for i, member in ipairs(members) do
  if #member > limit then members[i] = string.sub(member, 1, limit + 1) end
end
return {kind, size, ttl, members}
"""

# The same for every key in KEYS (a sweep's chunk): one reply of one entry per key.
_READ_MANY_SCRIPT = """
local most, limit, samples = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for k, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    out[k] = {kind}
  else
    local ttl = redis.call('PTTL', key)
    if kind ~= 'set' then
      out[k] = {kind, 1, ttl, {}}
    else
      local size = redis.call('SCARD', key)
      local members
      if size > most then
        members = redis.call('SRANDMEMBER', key, samples)
      else
        members = redis.call('SMEMBERS', key)
      end
      for i, member in ipairs(members) do
        if #member > limit then members[i] = string.sub(member, 1, limit + 1) end
      end
      out[k] = {kind, size, ttl, members}
    end
  end
end
return out
"""


# The lease check of a light pass: PTTL of every key in KEYS (-2: gone, -1: no TTL), one reply.
# Touching a key whose TTL ran out makes Redis delete it (and send its ``expired`` event).
_PTTL_MANY_SCRIPT = """
local out = {}
for k, key in ipairs(KEYS) do out[k] = redis.call('PTTL', key) end
return out
"""

_LEASE_SLACK = 0.005  # s after a noted expiry before a light pass checks the key


@dataclass(frozen=True, slots=True)
class _Read:
    kind: str
    size: int = 0
    ttl_ms: int = -2
    members: frozenset[str] = frozenset()


# -- the I/O part --------------------------------------------------------------------------------
class IntentTracker:
    """Keeps :attr:`intents` (client id -> topic texts) in step with Redis.

    :attr:`refused_keys` holds the keys refused whole (a key that is no SET, a client id outside
    the contract, no lease after the grace period, too many members), :attr:`seen` when each
    client was first seen (the oldest are served first when the union is full).
    ``on_change()`` is called (synchronously) whenever intents or refused keys changed.

    Reading is bounded per key whatever a client wrote (one Lua call: TYPE, PTTL, SCARD, then
    the members only when there are at most ``max_topics_per_client``, each cut to
    ``max_topic_length`` + 1 bytes inside Redis): a key of 100,000 members or of 1 MB members
    costs a few samples per sweep, not 100 MB.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        health: RedisHealth,
        on_change: Callable[[], None],
        sweep_interval: float = 2.0,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        scan_count: int = 1000,
        read_chunk: int = 200,
        full_sweep_every: int = 15,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sweep_interval <= 0:
            raise ValueError("sweep_interval must be > 0")
        if read_chunk < 1 or full_sweep_every < 1:
            raise ValueError("read_chunk and full_sweep_every must be at least 1")
        self._redis = redis
        self._keys = keys
        self._health = health
        self._on_change = on_change
        self.sweep_interval = sweep_interval
        self._retry = (retry_initial, retry_max)
        self._scan_count = scan_count
        self.limits = limits
        self._clock = clock
        self._script = redis.register_script(_READ_SCRIPT)
        self._read_many = redis.register_script(_READ_MANY_SCRIPT)
        self._pttl_many = redis.register_script(_PTTL_MANY_SCRIPT)
        # One Lua call per chunk of keys, except on a Redis Cluster (the keys live in different
        # slots) or once Redis refused a multi-key script: then one call per key, pipelined.
        self._many_keys = cluster_of(redis) is None
        self._read_chunk = read_chunk
        self.full_sweep_every = full_sweep_every
        """A pass in this many is a full sweep while notifications work (every one otherwise)."""
        self._passes_since_full = 0
        self._changed: set[str] = set()
        self._all_changed = True
        self._refreshed: set[str] | None = None  # clients refreshed while a pass runs
        self._prefix = _raw(keys.intents_pattern[:-1])
        self.intents: dict[str, frozenset[str]] = {}
        self.refused_keys: dict[str, KeyRefusal] = {}
        self.seen: dict[str, float] = {}
        self._unleased: dict[str, float] = {}
        # When each key's lease runs out, as last read (this tracker's clock), with the key
        # itself; a heap of (deadline, name) orders them (entries a newer reading replaced are
        # skipped when they come up).
        self._leases: dict[str, tuple[float, bytes]] = {}
        self._due: list[tuple[float, str]] = []
        self._lost_notifications = 0
        # The run loop's subscription while its own pass runs (a pass called by anyone else
        # must not read it: one reader per connection).
        self._listening: PubSub | NodesPubSub | None = None
        self.lease_checks = 0
        """Keys whose lease a light pass checked (PTTL) because it had run out."""
        self.loaded = False
        """True once a first sweep succeeded (until then the view is empty, not known)."""
        self.notifications = False
        """True when keyspace notifications are known to be on."""
        self._config_refused_logged = False
        self._event_channels: frozenset[bytes] = frozenset()
        self.notified = 0
        """Keyevent notifications received about intent keys (a heartbeat sends none)."""
        self.sweeps = 0
        """Passes over the keys, light or full."""
        self.full_sweeps = 0

    @property
    def db(self) -> int:
        if cluster_of(self._redis) is not None:
            return 0  # a cluster has one database
        return int(self._redis.connection_pool.connection_kwargs.get("db", 0) or 0)

    # -- reading --------------------------------------------------------------------------------
    def take_changes(self) -> set[str] | None:
        """The clients whose entry (in :attr:`intents` or :attr:`refused_keys`) changed since the
        last call; None the first time (everything is new). For an incremental consumer
        (:class:`collector.union.UnionIndex`): nothing here is O(clients)."""
        if self._all_changed:
            self._all_changed = False
            self._changed = set()
            return None
        changed, self._changed = self._changed, set()
        return changed

    async def sweep(self) -> bool:
        """Re-read every intent key, in chunks; return True when the view changed. Raises
        RedisError.

        Every key under ``P:intents:`` is looked at, whatever its type or name, so that nothing
        a client wrote is silently ignored. The keys come from :meth:`key_chunks` (one SCAN
        reply at a time) and are read ``read_chunk`` at a time (one Lua call each), so the event
        loop runs between chunks: a sweep of 10,000 keys never holds it for long. A client
        refreshed by a notification while the sweep runs is not taken as gone because the
        sweep's SCAN had already passed its key.
        """
        first = not self.loaded
        names: set[str] = set()
        changed = False
        self._refreshed = set()
        try:
            async for chunk in self.key_chunks():
                changed |= await self._read_and_apply(chunk, names, notify=not first)
        finally:
            refreshed, self._refreshed = self._refreshed, None
        gone = (self.intents.keys() | self.refused_keys.keys()) - names - (refreshed or set())
        removed = False
        for name in gone:
            removed |= self._apply(name, None, None)
        for name in set(self._unleased) - self.intents.keys() - self.refused_keys.keys():
            del self._unleased[name]
        self.sweeps += 1
        self.full_sweeps += 1
        self._passes_since_full = 0
        self.loaded = True
        if removed or first:
            self._on_change()
        return changed or removed or first

    async def light_sweep(self) -> bool:
        """The frequent pass while notifications work: check the keys whose lease ran out by
        the view's reckoning, re-read the ones still without a lease, and nothing else.

        Every read notes when the key's TTL runs out. A heartbeat renews it without a
        notification, so at that moment the key is asked its PTTL (one Lua call per
        ``read_chunk`` keys): gone (``-2``, and Redis deletes an expired key right there) drops
        the client; a new lease moves its deadline; no TTL, or one above ``max_lease``, gets
        the key re-read whole (and judged: a lease refused after the grace). Changes to members
        come from notifications; a key created, changed or removed without any is found by
        :meth:`sweep` every ``full_sweep_every`` passes, the safety net. Cost: one small
        command per client per lease, not a SCAN of every key every pass. Raises RedisError."""
        now = self._clock()
        due: list[tuple[str, bytes]] = []
        heap, leases = self._due, self._leases
        while heap and heap[0][0] <= now:
            deadline, name = heapq.heappop(heap)
            entry = leases.get(name)
            if entry is not None and entry[0] == deadline:
                del leases[name]
                due.append((name, entry[1]))
        reread: list[bytes] = []
        for name in self._unleased:
            try:
                reread.append(_raw(self._keys.intents(name)))
            except ValueError:
                continue
        changed = False
        step = self._read_chunk
        for start in range(0, len(due), step):
            chunk = due[start : start + step]
            ttls = await self._pttls([key for _, key in chunk])
            self.lease_checks += len(chunk)
            chunk_changed = False
            max_ms = self.limits.max_lease * 1000
            for (name, key), ttl_ms in zip(chunk, ttls, strict=True):
                if ttl_ms == -2:
                    chunk_changed |= self._apply(name, None, None)
                elif 0 <= ttl_ms <= max_ms:
                    self._note_lease(name, key, ttl_ms)
                else:
                    reread.append(key)
            if chunk_changed:
                changed = True
                self._on_change()
            await self._serve_waiting()
        if reread:
            changed |= await self._reread(reread)
        self.sweeps += 1
        self._passes_since_full += 1
        return changed

    async def _pttls(self, intent_keys: list[bytes]) -> list[int]:
        """PTTL of each key, in order (one Lua call; one command each, pipelined, on a Redis
        Cluster, where the keys live in different slots)."""
        if self._many_keys:
            try:
                return [int(ttl) for ttl in await self._pttl_many(keys=intent_keys)]
            except ResponseError as exc:
                if "CROSSSLOT" not in str(exc) and "slot" not in str(exc).lower():
                    raise
                self._many_keys = False  # logged by _read when it meets the same refusal
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in intent_keys:
                pipe.pttl(key)
            return [int(ttl) for ttl in await pipe.execute()]

    def _note_lease(self, name: str, key: bytes, ttl_ms: int) -> None:
        """Remember when ``name``'s lease runs out (``ttl_ms`` from now); forget it without
        one (a negative TTL: no lease, or gone)."""
        if ttl_ms < 0:
            self._leases.pop(name, None)
            return
        deadline = self._clock() + ttl_ms / 1000 + _LEASE_SLACK
        self._leases[name] = (deadline, key)
        heap = self._due
        heapq.heappush(heap, (deadline, name))
        if len(heap) > 2 * len(self._leases) + 1024:  # mostly replaced entries: rebuild
            self._due = [(when, who) for who, (when, _) in self._leases.items()]
            heapq.heapify(self._due)

    async def key_chunks(self) -> AsyncIterator[list[bytes]]:
        """Every intent key, one SCAN reply at a time (the sweep's source of keys; on a Redis
        Cluster, redis-py's SCAN of every primary, ``scan_count`` keys at a time)."""
        if cluster_of(self._redis) is not None:
            chunk: list[bytes] = []
            async for key in self._redis.scan_iter(
                match=self._keys.intents_pattern, count=self._scan_count
            ):
                chunk.append(_raw(key))
                if len(chunk) >= self._scan_count:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            return
        cursor: int | bytes | str = 0
        while True:
            cursor, found = await self._redis.scan(
                cursor=int(cursor), match=self._keys.intents_pattern, count=self._scan_count
            )
            if found:
                yield [_raw(key) for key in found]
            if not int(cursor):
                return

    async def refresh(self, client_ids: Iterable[str]) -> bool:
        """Re-read the keys of ``client_ids``; return True when the view changed.

        Ids outside the contract are left to the sweep, which reports them.
        """
        wanted: list[bytes] = []
        for client_id in client_ids:
            try:
                wanted.append(_raw(self._keys.intents(client_id)))
            except ValueError:
                continue
        return await self._reread(wanted)

    async def _reread(self, wanted: list[bytes]) -> bool:
        """Re-read the intent keys ``wanted`` (``read_chunk`` at a time) and apply what they
        hold, a key gone included; call ``on_change`` after each chunk that changed something."""
        changed = False
        prefix = len(self._prefix)
        step = self._read_chunk
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            reads = await self._read(chunk)
            chunk_changed = False
            for key in chunk:
                raw_id = key[prefix:]
                read = reads.get(raw_id)
                judged = self._judge(raw_id, read) if read is not None else None
                if judged is None:
                    name = valid_client_id(raw_id, self.limits) or escape(raw_id)
                    chunk_changed |= self._apply(name, None, None)
                else:
                    name = judged[0]
                    self._note_lease(name, key, read.ttl_ms if read is not None else -2)
                    chunk_changed |= self._apply(*judged)
                if self._refreshed is not None:
                    self._refreshed.add(name)
            if chunk_changed:
                changed = True
                self._on_change()
        return changed

    async def _read_and_apply(self, keys: list[bytes], names: set[str], *, notify: bool) -> bool:
        """Read ``keys`` (``read_chunk`` at a time) and apply what they hold; add the names
        seen to ``names``; call ``on_change`` after each chunk that changed something."""
        changed = False
        step = self._read_chunk
        for start in range(0, len(keys), step):
            reads = await self._read(keys[start : start + step])
            chunk_changed = False
            for raw_id, read in reads.items():
                judged = self._judge(raw_id, read)
                if judged is None:
                    continue
                names.add(judged[0])
                self._note_lease(judged[0], self._prefix + raw_id, read.ttl_ms)
                chunk_changed |= self._apply(*judged)
            if chunk_changed:
                changed = True
                if notify:
                    self._on_change()
            await self._serve_waiting()
        return changed

    def _apply(self, name: str, members: frozenset[str] | None, refusal: KeyRefusal | None) -> bool:
        """Set one client's entry (served members, a whole-key refusal, or neither: gone);
        return True when it changed."""
        changed = False
        if members is None:
            changed = self.intents.pop(name, None) is not None
        elif self.intents.get(name) != members:
            self.intents[name] = members
            changed = True
        if refusal is None:
            changed |= self.refused_keys.pop(name, None) is not None
        elif self.refused_keys.get(name) != refusal:
            self.refused_keys[name] = refusal
            changed = True
        if members is None and refusal is None:
            self.seen.pop(name, None)
            self._unleased.pop(name, None)
            self._leases.pop(name, None)
        else:
            self.seen.setdefault(name, self._clock())
        if changed:
            self._changed.add(name)
        return changed

    def _judge(
        self, raw_id: bytes, read: _Read
    ) -> tuple[str, frozenset[str] | None, KeyRefusal | None] | None:
        """One key as ``(name, served members, whole-key refusal)``; None when it is gone."""
        if read.kind == "none" or (read.kind == "set" and read.size == 0):
            return None
        limits = self.limits
        client_id = valid_client_id(raw_id, limits)
        if (
            client_id is not None
            and read.kind == "set"
            and 0 <= read.ttl_ms <= limits.max_lease * 1000
            and read.size <= limits.max_topics_per_client
        ):  # the common case, with no words to build: a leased SET of a valid size
            if self._unleased:
                self._unleased.pop(client_id, None)
            return client_id, read.members, None
        key = escape(self._prefix + raw_id, 200)
        sample = tuple(sorted(read.members))[: limits.invalid_examples]
        if client_id is None:
            return escape(raw_id), None, KeyRefusal(id_reason(raw_id, limits), read.size, sample)
        if read.kind != "set":
            return (
                client_id,
                None,
                KeyRefusal(
                    f"{key} is a {read.kind}, not a SET of topics: nothing of it is served; DEL it"
                ),
            )
        if read.size > limits.max_topics_per_client:
            return (
                client_id,
                None,
                KeyRefusal(too_many_reason(key, read.size, limits), read.size, sample),
            )
        now = self._clock()
        if 0 <= read.ttl_ms <= limits.max_lease * 1000:
            self._unleased.pop(client_id, None)
        else:
            since = self._unleased.setdefault(client_id, now)
            reason = lease_reason(key, read.ttl_ms, since, now, limits)
            if reason is not None:
                return client_id, None, KeyRefusal(reason, read.size, sample)
        return client_id, read.members, None

    async def _read(self, intent_keys: list[bytes]) -> dict[bytes, _Read]:
        """``raw client id -> what its key holds`` (bounded: see ``_READ_SCRIPT``).

        One Lua call reads all of ``intent_keys`` (the caller passes at most ``read_chunk``):
        one reply to parse instead of one per key, which is most of a sweep's cost in redis-py.
        Where Redis refuses a multi-key script (a Redis Cluster: the keys live in different
        slots), each key is read with its own call in one pipeline.
        """
        result: dict[bytes, _Read] = {}
        if not intent_keys:
            return result
        limits = self.limits
        args = [limits.max_topics_per_client, limits.max_topic_length, limits.invalid_examples]
        replies: list[Any]
        if self._many_keys:
            try:
                replies = list(await self._read_many(keys=intent_keys, args=args))
            except ResponseError as exc:
                if "CROSSSLOT" not in str(exc) and "slot" not in str(exc).lower():
                    raise
                self._many_keys = False
                log.info(
                    "Redis refuses multi-key scripts (%s); reading intent keys one by one", exc
                )
                return await self._read(intent_keys)
        else:
            replies = await self._read_replies(intent_keys, args)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # A cluster pipeline does not load scripts by itself (a plain one does): load
                # it (on every primary) and read again.
                await self._redis.script_load(_READ_SCRIPT)
                replies = await self._read_replies(intent_keys, args)
        for key, reply in zip(intent_keys, replies, strict=True):
            if not key.startswith(self._prefix):
                continue
            raw_id = key[len(self._prefix) :]
            if isinstance(reply, BaseException):
                if isinstance(reply, ResponseError):
                    continue  # refused by Redis for this key alone; the next sweep retries
                raise reply
            assert isinstance(reply, list)
            kind = _text(reply[0])
            if kind == "none":
                result[raw_id] = _Read("none")
                continue
            members = frozenset(_text(member) for member in reply[3])
            result[raw_id] = _Read(kind, int(reply[1]), int(reply[2]), members)
        return result

    async def _read_replies(self, intent_keys: list[bytes], args: list[int]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in intent_keys:
                await self._script(keys=[key], args=args, client=pipe)
            return list(await pipe.execute(raise_on_error=False))

    # -- notifications --------------------------------------------------------------------------
    async def enable_notifications(self) -> bool:
        """Merge the needed flags into ``notify-keyspace-events``; False when not allowed.

        In a Redis Cluster every primary is asked (notifications are node-local)."""
        nodes = await cluster_primaries(self._redis)
        if nodes is None:
            return await self._enable_on(self._redis)
        enabled = True
        for host, port in nodes:
            node = node_client(self._redis, host, port)
            try:
                enabled = await self._enable_on(node) and enabled
            finally:
                await node.aclose()
        self.notifications = enabled
        return enabled

    async def _enable_on(self, redis: Redis) -> bool:
        try:
            reply = await redis.config_get("notify-keyspace-events")
            current = ""
            for name, value in dict(reply).items():
                if name is not None and _text(name) == "notify-keyspace-events":
                    current = _text(value or "")
            merged = merge_notify_flags(current)
            if merged != current:
                await redis.config_set("notify-keyspace-events", merged)
                log.info("enabled keyspace notifications (notify-keyspace-events %r)", merged)
            self.notifications = True
            return True
        except ResponseError as exc:
            self.notifications = False
            if not self._config_refused_logged:
                self._config_refused_logged = True
                log.warning(
                    "cannot enable keyspace notifications (%s); intent changes made without a "
                    "P:control message are seen by the sweep, every %.1f s. Start Redis with "
                    "--notify-keyspace-events %s to be faster",
                    exc,
                    self.sweep_interval,
                    NEEDED_FLAGS,
                )
            return False

    async def notifications_lost(self) -> bool:
        """True when a node's ``notify-keyspace-events`` lacks a flag the tracker needs: someone
        turned notifications off since they were enabled (a light pass would then miss changes;
        one CONFIG GET per primary and pass). False when CONFIG is not allowed."""
        cluster = cluster_of(self._redis)
        try:
            if cluster is None:
                replies = [await self._redis.config_get("notify-keyspace-events")]
            else:
                replies = [
                    await cluster.config_get("notify-keyspace-events", target_nodes=node)
                    for node in cluster.get_primaries()
                ]
        except ResponseError:
            return False
        for reply in replies:
            current = ""
            for name, value in dict(reply).items():
                if name is not None and _text(name) == "notify-keyspace-events":
                    current = _text(value or "")
            if merge_notify_flags(current) != current:
                return True
        return False

    async def _subscribe(self) -> PubSub | NodesPubSub:
        db = self.db
        channels = [self._keys.keyevent_channel(db, event) for event in WATCHED_EVENTS]
        self._event_channels = frozenset(_raw(channel) for channel in channels)
        nodes = await cluster_primaries(self._redis)
        if nodes is not None:
            return await NodesPubSub.open(
                self._redis,
                nodes,
                control=self._keys.control,
                channels=channels,
                key_prefix=self._prefix,
            )
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._keys.control, *channels)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            raise
        return pubsub

    def _client_of(self, message: Mapping[str, object]) -> str | None:
        if message.get("type") != "message":
            return None
        channel = message.get("channel", b"")
        data = message.get("data", b"")
        if not isinstance(channel, str | bytes) or not isinstance(data, str | bytes):
            return None
        if _raw(channel) in self._event_channels:
            # A keyevent: the payload is the key. Every key of the database reaches here for
            # the watched events; only ours count.
            key = _raw(data)
            if not key.startswith(self._prefix):
                return None
            self.notified += 1
            return _text(key[len(self._prefix) :]) or None
        if _text(channel) == self._keys.control:
            return _text(data)
        return None

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Listen, refresh and sweep until cancelled; Redis failures are retried forever."""
        loop = asyncio.get_running_loop()
        pubsub: PubSub | NodesPubSub | None = None
        delays = backoff(*self._retry)
        next_sweep = loop.time()
        try:
            while True:
                try:
                    if pubsub is None:
                        await self.enable_notifications()
                        pubsub = await self._subscribe()
                        next_sweep = loop.time()  # notifications were missed: sweep now
                        self._passes_since_full = self.full_sweep_every  # a full one
                    if loop.time() >= next_sweep:
                        if isinstance(pubsub, NodesPubSub):
                            # A cluster: follow failovers and reshardings. New primaries get
                            # their own subscription (and the sweep covers them at once).
                            await refresh_slots(self._redis)
                            if pubsub.nodes != primaries(self._redis):
                                log.info("the cluster's primaries changed; resubscribing")
                                await _close_quietly(pubsub)
                                pubsub = None
                                continue
                        self._listening = pubsub  # its passes serve what arrives meanwhile
                        try:
                            await self._pass()
                        finally:
                            self._listening = None
                        next_sweep = loop.time() + self.sweep_interval
                    self._health.succeeded("intent tracker")
                    delays = backoff(*self._retry)
                    dirty = await self._collect(pubsub, max(0.0, next_sweep - loop.time()))
                    if dirty:
                        await self.refresh(dirty)
                except REDIS_FAILURES as exc:
                    self._health.failed("intent tracker", exc)
                    if pubsub is not None:
                        await _close_quietly(pubsub)
                        pubsub = None
                    await asyncio.sleep(next(delays))
        finally:
            if pubsub is not None:
                await _close_quietly(pubsub)

    async def _pass(self) -> None:
        """One pass over the keys: full when due, else light; full too when the notification
        flags were turned off meanwhile (they are turned on again first)."""
        if self._full_due():
            await self.sweep()
        elif await self.notifications_lost():
            self._lost_notifications += 1
            if self._lost_notifications in (1, 10) or not self._lost_notifications % 100:
                log.warning(
                    "keyspace notifications were turned off on Redis (%d times so far); "
                    "turning them on again and sweeping every key",
                    self._lost_notifications,
                )
            await self.enable_notifications()
            await self.sweep()
        else:
            await self.light_sweep()

    def _full_due(self) -> bool:
        """A full sweep: before the first one, without notifications, after a reconnect, and
        every ``full_sweep_every`` passes (the safety net for whatever notifications miss)."""
        return (
            not self.loaded
            or not self.notifications
            or self._passes_since_full + 1 >= self.full_sweep_every
        )

    async def _collect(self, pubsub: PubSub | NodesPubSub, within: float) -> set[str]:
        """Wait up to ``within`` s for a relevant message, then take every one already there."""
        dirty: set[str] = set()
        deadline = time.monotonic() + within
        while not dirty:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is not None:
                client_id = self._client_of(message)
                if client_id is not None:
                    dirty.add(client_id)
        if dirty:
            dirty |= await self._waiting(pubsub)
        return dirty

    async def _waiting(self, pubsub: PubSub | NodesPubSub) -> set[str]:
        """The clients named by the messages already received (none waited for), at most
        10,000 messages: a flood cannot starve the pass."""
        dirty: set[str] = set()
        for _ in range(10_000):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
            if message is None:
                break
            client_id = self._client_of(message)
            if client_id is not None:
                dirty.add(client_id)
        return dirty

    async def _serve_waiting(self) -> None:
        """Between two chunks of a pass: re-read the clients whose change was announced
        meanwhile, so that a new intent never waits for a pass over 10,000 keys (a full sweep,
        or a light pass when many leases ran out at once). Not before the first sweep ended
        (the first plan is made from the whole view)."""
        pubsub = self._listening
        if pubsub is None or not self.loaded:
            return
        dirty = await self._waiting(pubsub)
        if dirty:
            await self.refresh(dirty)


async def _close_quietly(pubsub: PubSub | NodesPubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]


class NodesPubSub:
    """Keyevent notifications from every primary of a Redis Cluster, and ``P:control``.

    Keyevent notifications are node-local: each primary gets its own plain connection
    subscribed to the watched event channels. ``P:control`` is a classic channel, which a
    cluster delivers to subscribers on every node, so it is subscribed on one node only (else
    every message would come once per node). One reader task per node feeds one bounded queue
    (10,000 messages; keyevents about keys other than intent keys are not queued; when it is
    full, messages are dropped: the periodic sweep still finds every change).
    ``get_message`` raises what a reader met (a lost node), so the tracker resubscribes.
    """

    QUEUE_SIZE = 10_000

    def __init__(self, nodes: list[tuple[str, int]]) -> None:
        self.nodes = nodes
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue(self.QUEUE_SIZE)
        self._clients: list[Redis] = []
        self._pubsubs: list[PubSub] = []
        self._readers: list[asyncio.Task[None]] = []
        self._control = b""
        self._key_prefix = b""
        self.dropped = 0

    @classmethod
    async def open(
        cls,
        redis: Redis,
        nodes: list[tuple[str, int]],
        *,
        control: str,
        channels: list[str],
        key_prefix: bytes = b"",
    ) -> NodesPubSub:
        """``key_prefix``: keyevents about other keys are dropped by the readers, so that they
        never take a place in the queue."""
        self = cls(nodes)
        self._control = _raw(control)
        self._key_prefix = key_prefix
        try:
            for index, (host, port) in enumerate(nodes):
                client = node_client(redis, host, port)
                self._clients.append(client)
                pubsub = client.pubsub()
                self._pubsubs.append(pubsub)
                await pubsub.subscribe(*([control] if index == 0 else []), *channels)
            for pubsub in self._pubsubs:
                self._readers.append(asyncio.create_task(self._read(pubsub)))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or self._foreign(message):
                    continue
                try:
                    self._queue.put_nowait(message)
                except asyncio.QueueFull:
                    self.dropped += 1
        except REDIS_FAILURES as exc:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(exc)

    def _foreign(self, message: Mapping[str, object]) -> bool:
        """A keyevent about a key that is not an intent key."""
        channel, data = message.get("channel"), message.get("data")
        if not isinstance(channel, str | bytes) or not isinstance(data, str | bytes):
            return False
        return _raw(channel) != self._control and not _raw(data).startswith(self._key_prefix)

    async def get_message(
        self,
        ignore_subscribe_messages: bool = True,
        timeout: float = 0.0,  # noqa: ASYNC109 - PubSub.get_message's signature
    ) -> dict[str, Any] | None:
        try:
            if timeout <= 0:
                item = self._queue.get_nowait()
            else:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
        except (asyncio.QueueEmpty, TimeoutError):
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        await stop_tasks(self._readers, within=_STOP_WITHIN)
        for task in self._readers:  # a reader that died of a Redis error: nothing more to say
            if task.done() and not task.cancelled():
                task.exception()
        for pubsub in self._pubsubs:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        for client in self._clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
        self._readers.clear()
        self._pubsubs.clear()
        self._clients.clear()
