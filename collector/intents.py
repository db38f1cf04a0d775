"""Intent tracking: the live view of every ``P:intents:{client_id}`` SET, kept current three ways.

1. ``P:control`` messages (payload: a client id): that client's key is re-read at once;
2. keyspace notifications for ``P:intents:*`` (``PSUBSCRIBE keys.keyspace_pattern(db)``): set
   changes, deletions and expiries re-read just the key concerned. The tracker enables them with
   ``CONFIG SET notify-keyspace-events``, merging the flags it needs (``K g s x``) into the current
   value, never removing anyone else's; when CONFIG is not allowed it says so ONCE and relies on
   the sweep. ``expire``/``pexpire``/``persist`` events are ignored: every heartbeat causes one
   and none of them changes a set's members;
3. a periodic sweep (``SCAN MATCH P:intents:*`` + ``SMEMBERS``, every ``sweep_interval`` s) that
   re-reads everything, so correctness never depends on notifications (Redis sends them
   fire-and-forget, and an expiry only when it actually deletes the key; SCAN and SMEMBERS make
   it do so).

When Redis is unreachable the last known intents are KEPT (the collector must not drop the
upstream subscription because it cannot read), and the tracker retries with backoff. After a
reconnect it sweeps at once, since notifications were missed.

The pure helpers (:func:`merge_notify_flags`, :func:`changes_members`, :func:`plan`,
:func:`newly_invalid`) hold the decisions; :class:`IntentTracker` only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError

from upbit_fanout.collector.status import RedisHealth
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.reconcile import Subscription, desired_state, subscription_for
from upbit_fanout.subscriptions.topics import Topic, parse_topic

__all__ = [
    "IGNORED_EVENTS",
    "NEEDED_FLAGS",
    "NO_KEYS_REASON",
    "RECORDED_TOPICS",
    "IntentTracker",
    "Plan",
    "changes_members",
    "merge_notify_flags",
    "newly_invalid",
    "plan",
]

log = logging.getLogger(__name__)

NEEDED_FLAGS = "Kgsx"
"""K: keyspace channels; g: DEL/RENAME...; s: SADD/SREM...; x: expired."""

_A_CLASS = set("g$lshzxetd")  # what Redis's alias "A" stands for (Redis 7)

IGNORED_EVENTS = frozenset({"expire", "pexpire", "persist"})
"""Keyspace events that never change a set's members (every heartbeat causes ``expire``)."""

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


def changes_members(event: str) -> bool:
    """True for a keyspace event that may change an intent set (not a mere TTL refresh)."""
    return event not in IGNORED_EVENTS


@dataclass(frozen=True, slots=True)
class Plan:
    """What each upstream connection should carry, and which intents are refused."""

    public: Subscription = field(default_factory=Subscription)
    public_topics: frozenset[Topic] = frozenset()
    private: Subscription = field(default_factory=Subscription)
    private_topics: frozenset[Topic] = frozenset()
    invalid: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """``(client_id, topic text) -> reason``."""


RECORDED_TOPICS: frozenset[Topic] = frozenset({parse_topic("myOrder:*"), parse_topic("myAsset")})
"""What always-on recording keeps subscribed on the private connection (every market)."""


def plan(
    intents: Mapping[str, Iterable[str]], *, private_allowed: bool, record_private: bool = False
) -> Plan:
    """The union of every client's intents, split per connection; refused intents reported.

    Without API keys (``private_allowed=False``) private topics are refused with
    :data:`NO_KEYS_REASON`, like invalid ones, and never sent. With keys and ``record_private``
    the private subscription always carries :data:`RECORDED_TOPICS` (myOrder of every market and
    myAsset, for the streams), while ``private_topics``, the channels served, stay what intents
    ask for.
    """
    materialized = {client: tuple(texts) for client, texts in intents.items()}
    desired = desired_state(materialized)
    invalid = dict(desired.invalid)
    if private_allowed:
        private = desired.private
        if record_private:
            private = subscription_for(desired.private_topics | RECORDED_TOPICS)
        return Plan(desired.public, desired.public_topics, private, desired.private_topics, invalid)
    if desired.private_topics:
        for client, texts in materialized.items():
            for text in texts:
                if (client, text) not in invalid and parse_topic(text).is_private:
                    invalid[(client, text)] = NO_KEYS_REASON
    return Plan(desired.public, desired.public_topics, invalid=invalid)


def newly_invalid(
    before: Mapping[tuple[str, str], str], after: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """The refused intents in ``after`` that were not refused in ``before`` (log these once)."""
    return {item: reason for item, reason in after.items() if item not in before}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# -- the I/O part --------------------------------------------------------------------------------
class IntentTracker:
    """Keeps :attr:`intents` (client id -> topic texts) in step with Redis.

    ``on_change()`` is called (synchronously) whenever :attr:`intents` changed.
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
    ) -> None:
        if sweep_interval <= 0:
            raise ValueError("sweep_interval must be > 0")
        self._redis = redis
        self._keys = keys
        self._health = health
        self._on_change = on_change
        self.sweep_interval = sweep_interval
        self._retry = (retry_initial, retry_max)
        self._scan_count = scan_count
        self.intents: dict[str, frozenset[str]] = {}
        self.loaded = False
        """True once a first sweep succeeded (until then the view is empty, not known)."""
        self.notifications = False
        """True when keyspace notifications are known to be on."""
        self._config_refused_logged = False
        self._wrongtype_logged: set[str] = set()
        self.sweeps = 0

    @property
    def db(self) -> int:
        return int(self._redis.connection_pool.connection_kwargs.get("db", 0) or 0)

    # -- reading --------------------------------------------------------------------------------
    async def sweep(self) -> bool:
        """Re-read every intent key; return True when the view changed. Raises RedisError."""
        found: list[str] = []
        async for key in self._redis.scan_iter(
            match=self._keys.intents_pattern, count=self._scan_count, _type="set"
        ):
            found.append(_text(key))
        fresh = await self._read(found)
        self.sweeps += 1
        if not self.loaded:
            self.loaded = True
            self.intents = fresh
            self._on_change()
            return True
        return self._replace(fresh)

    async def refresh(self, client_ids: Iterable[str]) -> bool:
        """Re-read the keys of ``client_ids``; return True when the view changed."""
        wanted: dict[str, str] = {}
        for client_id in client_ids:
            try:
                wanted[self._keys.intents(client_id)] = client_id
            except ValueError:
                continue  # not a valid client id: nobody can hold such a key
        if not wanted:
            return False
        fresh = await self._read(list(wanted))
        changed = False
        for client_id in wanted.values():
            members = fresh.get(client_id)
            if members:
                if self.intents.get(client_id) != members:
                    self.intents[client_id] = members
                    changed = True
            elif client_id in self.intents:
                del self.intents[client_id]
                changed = True
        if changed:
            self._on_change()
        return changed

    async def _read(self, intent_keys: list[str]) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        if not intent_keys:
            return result
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in intent_keys:
                pipe.smembers(key)
            replies = await pipe.execute(raise_on_error=False)
        for key, reply in zip(intent_keys, replies, strict=True):
            client_id = self._keys.client_id_of(key)
            if client_id is None:
                continue
            if isinstance(reply, ResponseError):
                if key not in self._wrongtype_logged:
                    self._wrongtype_logged.add(key)
                    log.warning("ignoring %s: not a SET of topics (%s)", key, reply)
                continue
            if isinstance(reply, BaseException):
                raise reply
            members = frozenset(_text(member) for member in reply)
            if members:
                result[client_id] = members
        return result

    def _replace(self, fresh: dict[str, frozenset[str]]) -> bool:
        if fresh == self.intents:
            return False
        self.intents = fresh
        self._on_change()
        return True

    # -- notifications --------------------------------------------------------------------------
    async def enable_notifications(self) -> bool:
        """Merge the needed flags into ``notify-keyspace-events``; False when not allowed."""
        try:
            reply = await self._redis.config_get("notify-keyspace-events")
            current = ""
            for name, value in dict(reply).items():
                if name is not None and _text(name) == "notify-keyspace-events":
                    current = _text(value or "")
            merged = merge_notify_flags(current)
            if merged != current:
                await self._redis.config_set("notify-keyspace-events", merged)
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

    async def _subscribe(self) -> PubSub:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._keys.control)
            await pubsub.psubscribe(self._keys.keyspace_pattern(self.db))
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return pubsub

    def _client_of(self, message: Mapping[str, object]) -> str | None:
        kind = message.get("type")
        channel = _text(message.get("channel", b""))  # type: ignore[arg-type]
        data = message.get("data", b"")
        if kind == "message" and channel == self._keys.control:
            return _text(data) if isinstance(data, str | bytes) else None
        if kind == "pmessage":
            event = _text(data) if isinstance(data, str | bytes) else ""
            if not changes_members(event):
                return None
            key = self._keys.keyspace_key(channel)
            return self._keys.client_id_of(key) if key else None
        return None

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Listen, refresh and sweep until cancelled; Redis failures are retried forever."""
        loop = asyncio.get_running_loop()
        pubsub: PubSub | None = None
        delays = backoff(*self._retry)
        next_sweep = loop.time()
        try:
            while True:
                try:
                    if pubsub is None:
                        await self.enable_notifications()
                        pubsub = await self._subscribe()
                        next_sweep = loop.time()  # notifications were missed: sweep now
                    if loop.time() >= next_sweep:
                        await self.sweep()
                        next_sweep = loop.time() + self.sweep_interval
                    self._health.succeeded()
                    delays = backoff(*self._retry)
                    dirty = await self._collect(pubsub, max(0.0, next_sweep - loop.time()))
                    if dirty:
                        await self.refresh(dirty)
                except (RedisError, OSError) as exc:
                    self._health.failed("intent tracker", exc)
                    if pubsub is not None:
                        await _close_quietly(pubsub)
                        pubsub = None
                    await asyncio.sleep(next(delays))
        finally:
            if pubsub is not None:
                await _close_quietly(pubsub)

    async def _collect(self, pubsub: PubSub, within: float) -> set[str]:
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
            for _ in range(10_000):  # drain a burst, bounded so a flood cannot starve the sweep
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
                if message is None:
                    break
                client_id = self._client_of(message)
                if client_id is not None:
                    dirty.add(client_id)
        return dirty


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
