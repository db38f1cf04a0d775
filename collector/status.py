"""What the collector tells the world: the ``P:status`` hash, ``P:notices``, ``P:union``,
``P:invalid``, all written by one task (:meth:`Status.run`).

Everything is first recorded in memory (cheap, synchronous, callable from any task) and written
to Redis by the writer task:

- ``P:status`` (HASH): at most once a second while counters move, and at once on a state change;
- ``P:notices`` (channel, JSON ``{"event": ..., "at": <ms>, ...}``): as soon as possible, in
  order; at most :data:`MAX_PENDING_NOTICES` wait while Redis is away (the oldest are dropped);
- ``P:union`` (SET): replaced atomically (MULTI/DEL/SADD) whenever a subscription was sent;
- ``P:invalid`` (HASH, per client a summary and a few ``"client_id topic" -> reason``
  examples): replaced whenever the refused intents change.
- ``P:standby:{collector_id}`` (STRING, TTL three heartbeats): instead of all of the above
  while this collector stands by (:attr:`Status.active` False).

Besides the hash fields it keeps what the metrics read (:mod:`collector.metrics`): latency
:class:`Histogram` s, events received and items published per type, the time of the last write.

All of one flush goes in a single MULTI/EXEC (:func:`subscriptions.transactions.transaction`);
with :attr:`Status.fence` set (a leader), it is preceded by ``WATCH P:leader`` and a check of its
value, so a collector that lost its lease writes nothing (not even a status claiming it leads):
:class:`subscriptions.lease.LeaseLost`.
When Redis is unreachable nothing is lost but the oldest notices: the dirty flags stay set and
the writer retries. No field or notice ever holds a
secret: callers pass descriptions, never keys or tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from upbit_fanout.collector._log import log
from upbit_fanout.subscriptions.clock import now_ms
from upbit_fanout.subscriptions.connection import REDIS_FAILURES, cluster_of
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import LeaseLost
from upbit_fanout.subscriptions.redis_errors import describe_redis_error, is_auth_error
from upbit_fanout.subscriptions.transactions import transaction

__all__ = [
    "COUNTERS",
    "COUNTER_SPECS",
    "LATENCY_BUCKETS",
    "MAX_PENDING_NOTICES",
    "CounterSpec",
    "Histogram",
    "LogLimiter",
    "RedisHealth",
    "State",
    "Status",
    "now_ms",
]


MAX_PENDING_NOTICES = 1000
_RETRY_INITIAL = 0.2
_RETRY_MAX = 2.0


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One counter of ``P:status``: its field there and, when it is a plain Prometheus counter,
    its metric name (without the ``upbit_fanout_`` prefix and ``_total``) and help text."""

    field: str
    help: str
    metric: str | None = None
    """None: not exported as a plain counter (the docstring of the entry says where instead)."""


COUNTER_SPECS: Final = (
    # exported by event type instead: upbit_fanout_events_received_total{type}
    CounterSpec("events_total", "Event frames received from the upstream connections."),
    CounterSpec("sends_total", "Subscribe messages sent upstream.", "sends"),
    CounterSpec(
        "reconnects", "Upstream reconnections after a loss or a failed attempt.", "reconnects"
    ),
    # set, not counted (the refused intents listed now): not a Prometheus counter
    CounterSpec("invalid_intents", "Intents refused now (bad topic, limits, lease)."),
    CounterSpec(
        "malformed_frames", "Upstream frames that could not be decoded.", "malformed_frames"
    ),
    CounterSpec(
        "dropped_events", "Events dropped (full queue, refused batches).", "dropped_events"
    ),
    CounterSpec("upstream_errors", "Error frames sent by the upstream.", "upstream_errors"),
    CounterSpec("redis_outages", "Times Redis became unreachable and came back.", "redis_outages"),
    CounterSpec("canaries_sent", "Canaries put into the publish path.", "canaries_sent"),
    CounterSpec("canaries_received", "Canaries that came back through Redis.", "canaries_received"),
    CounterSpec("gaps", "Gap notices published (consumers may have missed events).", "gaps"),
    CounterSpec(
        "subscription_checks",
        "LIST_SUBSCRIPTIONS requests sent to confirm what the upstream applied.",
        "subscription_checks",
    ),
    CounterSpec(
        "subscription_mismatches",
        "LIST_SUBSCRIPTIONS answers that differed from what was sent (then re-sent).",
        "subscription_mismatches",
    ),
    CounterSpec(
        "rest_snapshots", "Cold snapshots answered from Upbit's REST API.", "rest_snapshots"
    ),
    CounterSpec(
        "backfilled_trades", "Trades back-filled from REST after a gap.", "backfilled_trades"
    ),
    CounterSpec(
        "incomplete_backfills", "Trade topics whose gap stayed open.", "incomplete_backfills"
    ),
    CounterSpec(
        "read_rests",
        "Times an upstream socket's reading rested to coalesce reads (READ_COALESCE).",
        "read_rests",
    ),
)
"""Every counter of ``P:status``, once: the status hash, ``upbit-fanout status`` and the
Prometheus exporter (collector/metrics.py) all read this table."""
COUNTERS: Final = tuple(spec.field for spec in COUNTER_SPECS)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histograms (publish batches, canaries)."""
RATE_WINDOW = 60.0
"""``events_per_second`` is measured over this many seconds."""


class State(enum.StrEnum):
    """The collector's state as shown in ``P:status`` (field ``state``)."""

    STARTING = "starting"
    STANDBY = "standby"  # another collector holds P:leader
    CONNECTING = "connecting"
    CONNECTED = "connected"  # socket open, nothing sent yet
    SUBSCRIBED = "subscribed"
    IDLE = "idle"  # nothing wanted: no socket
    RECONNECTING = "reconnecting"  # waiting to retry after a failure
    STOPPED = "stopped"


HEARTBEAT_INTERVAL = 5.0
"""Seconds between writes of ``P:status`` when nothing changes (readers judge liveness by it)."""


class LogLimiter:
    """At most one log line per ``key`` every ``interval`` seconds; counts what it held back."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(may log now, how many lines were held back since the last one)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._held.pop(key, 0)


class Histogram:
    """Counts of observations per upper bound (cumulative only when exported), plus sum."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative; beyond the last: count
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
                return

    def cumulative(self) -> list[tuple[float, int]]:
        """[(upper bound, observations <= bound), ..., (inf, count)]."""
        total = 0
        result = []
        for bound, count in zip(self.buckets, self.counts, strict=True):
            total += count
            result.append((bound, total))
        result.append((float("inf"), self.count))
        return result


class RedisHealth:
    """One place that notices Redis going away and coming back (logged once per outage).

    An outage ends when every part that saw it (``who``) has succeeded again: a Redis that
    refuses one command to our ACL user (``NOPERM``) while allowing others is not "reachable
    again" because another part got through. A refusal of our password or ACL user is an ERROR
    (a person must fix it), described by :func:`describe_redis_error`.
    """

    def __init__(self, status: Status, clock: Callable[[], float] = time.monotonic) -> None:
        self._status = status
        self._clock = clock
        self.down_since: float | None = None
        self.recovered_at: float | None = None
        """When Redis last answered again after an outage (this health's clock)."""
        self.on_down: Callable[[], None] = lambda: None
        """Called once when an outage starts (before anything else notices it)."""
        self.on_up: Callable[[], None] = lambda: None
        """Called once when Redis answers again after an outage."""
        self._first_error = ""
        self._failing: set[str] = set()
        self._auth_reported = False

    @property
    def ok(self) -> bool:
        return self.down_since is None

    def failed(self, who: str, exc: BaseException) -> None:
        self._failing.add(who)
        if is_auth_error(exc) and not self._auth_reported:
            self._auth_reported = True
            description = describe_redis_error(exc)
            log.error("%s, seen by %s; retrying until it is fixed", description, who)
            self._status.set(last_error=description)
        if self.down_since is None:
            self.down_since = self._clock()
            self._first_error = f"{type(exc).__name__}: {exc}"
            self.on_down()
            if not self._auth_reported:
                log.warning(
                    "Redis unreachable (%s, seen by %s); keeping the last known intents and the "
                    "upstream subscription, retrying",
                    self._first_error,
                    who,
                )

    def succeeded(self, who: str | None = None) -> None:
        """``who`` got through; None: everything did (ends the outage at once)."""
        if who is None:
            self._failing.clear()
        else:
            self._failing.discard(who)
        if self.down_since is not None and not self._failing:
            self._auth_reported = False
            self.recovered_at = self._clock()
            seconds = self.recovered_at - self.down_since
            self.down_since = None
            log.warning("Redis reachable again after %.1f s", seconds)
            self._status.count("redis_outages")
            self._status.resync()
            self._status.set(
                last_error=f"Redis was unreachable for {seconds:.1f} s ({self._first_error})"
            )
            self._status.recovered("Redis")
            self.on_up()


_CLUSTER_FLUSH_SCRIPT = """\
-- KEYS[1] {P}:status; ARGV[1] msgpack list of commands (all on keys of the {P} slot, or
-- PUBLISH), ARGV[2] the fencing value to check ('' : none), ARGV[3] {P}:leader.
if ARGV[2] ~= '' then
  local holder = redis.call('GET', ARGV[3])
  if holder ~= ARGV[2] then return {'fenced', holder or ''} end
end
for _, command in ipairs(cmsgpack.unpack(ARGV[1])) do
  redis.call(unpack(command))
end
return {'ok'}
"""


def _chunks(command: str, key: str, values: list[str], size: int = 1000) -> list[list[bytes | str]]:
    """``command key v1 v2 ...`` split into commands of at most ``size`` values (even)."""
    return [[command, key, *values[i : i + size]] for i in range(0, len(values), size)]


def _pairs(mapping: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for name, value in mapping.items():
        out += (name, value)
    return out


class Status:
    """In-memory status and the task that writes it to Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        collector_id: str,
        version: str,
        write_interval: float = 1.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.write_interval = write_interval
        self.heartbeat_interval = heartbeat_interval
        """Nothing changed for this long: ``updated_at`` is rewritten anyway, so readers can tell
        a quiet collector from a dead one by the age of the hash."""
        self.health = RedisHealth(self)
        self.state = State.STARTING
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.gauges: dict[str, Callable[[], int]] = {}
        """Counters read live at each write (they change where nobody calls :meth:`count`)."""
        self.histograms: dict[str, Histogram] = {
            "publish_batch": Histogram(),
            "canary_latency": Histogram(),
        }
        self.received_by_type: dict[str, int] = {}
        """Event frames received per type (ticker, trade, ...), before routing."""
        self.published_by_type: dict[str, int] = {}
        """Items published per event type (ticker, trade, ..., canary), after fan-out."""
        self.last_written_at: float | None = None
        """``time.time()`` of the last successful write to Redis (None: never)."""
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._standby_written = False
        self._fields: dict[str, str] = {
            "collector_id": collector_id,
            "version": version,
            "state": self.state.value,
            "last_error": "",
            "last_error_at": "",
            "union_size": "0",
        }
        self._notices: deque[bytes] = deque(maxlen=MAX_PENDING_NOTICES)
        self._union: frozenset[str] | None = None  # pending write
        self._invalid: dict[str, str] | None = None  # pending write
        self._current_union: frozenset[str] = frozenset()
        self._current_invalid: dict[str, str] = {}
        self._dirty = True
        self._wake = asyncio.Event()
        self._urgent = False
        self.active = True
        """False while another collector leads: nothing is written (notices are discarded)."""
        self.fence: tuple[str, bytes] | None = None
        """``(P:leader key, expected value)``: write only while the lease holds that value."""
        self.on_lease_lost: Callable[[], None] = lambda: None
        """Called when a write was refused because the lease holds another value."""

    # -- recording (synchronous, from any task) ------------------------------------------------
    def set(self, **fields: object) -> None:
        """Set plain fields (strings, numbers; None writes an empty string)."""
        for name, value in fields.items():
            self._fields[name] = "" if value is None else str(value)
        if "last_error" in fields:
            self._fields["last_error_at"] = str(now_ms()) if fields["last_error"] else ""
        self._mark_dirty()

    def recovered(self, source: str) -> None:
        """``source`` works again: a ``last_error`` that starts with it becomes
        ``previous_error`` (with ``previous_error_at``) and ``last_error`` is emptied."""
        error = self._fields.get("last_error", "")
        if error and error.startswith(source):
            self._fields["previous_error"] = error
            self._fields["previous_error_at"] = self._fields.get("last_error_at", "")
            self._fields["last_error"] = ""
            self._fields["last_error_at"] = ""
            self._mark_dirty()

    def observe(self, histogram: str, value: float) -> None:
        """Record one observation (seconds) in one of :attr:`histograms`."""
        self.histograms[histogram].observe(value)

    def count_published(self, counts: Mapping[str, int]) -> None:
        by_type = self.published_by_type
        for name, amount in counts.items():
            by_type[name] = by_type.get(name, 0) + amount
        self._mark_dirty()

    def set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self._fields["state"] = state.value
            self._mark_dirty()
            self._poke()

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount
        self._mark_dirty()

    def set_counter(self, name: str, value: int) -> None:
        if self.counters.get(name) != value:
            self.counters[name] = value
            self._mark_dirty()

    def notice(self, event: str, **details: object) -> None:
        """Queue a ``P:notices`` message ``{"event": event, "at": <ms>, **details}``."""
        body: dict[str, Any] = {"event": event, "at": now_ms()}
        body.update(details)
        if event == "gap":
            self.count("gaps")
        self._notices.append(orjson.dumps(body))
        self._poke()

    def set_union(self, topics: Iterable[str]) -> None:
        union = frozenset(topics)
        self._union = self._current_union = union
        self._fields["union_size"] = str(len(union))
        self._mark_dirty()
        self._poke()

    def set_invalid(self, fields: Mapping[str, str], count: int | None = None) -> None:
        """Replace the ``P:invalid`` hash with ``fields`` (see ``collector.intents.Plan``);
        ``count`` refused intents in all (default: one per field)."""
        self._invalid = dict(fields)
        self._current_invalid = self._invalid
        self.set_counter("invalid_intents", len(fields) if count is None else count)
        self._poke()

    def resync(self) -> None:
        """Write everything again (Redis came back, maybe empty after a restart)."""
        self._union = self._current_union
        self._invalid = self._current_invalid
        self._dirty = True
        self._poke()

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._wake.set()

    def _poke(self) -> None:
        self._urgent = True
        self._wake.set()

    def current_counters(self) -> dict[str, int]:
        counters = dict(self.counters)
        for name, gauge in self.gauges.items():
            counters[name] = gauge()
        return counters

    # -- writing --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, str]:
        """The ``P:status`` hash as it would be written now."""
        fields = dict(self._fields)
        counters = self.current_counters()
        for name, value in counters.items():
            fields[name] = str(value)
        now = now_ms()
        fields["updated_at"] = str(now)
        started = fields.get("started_at", "")
        if started.isdigit():
            fields["uptime_seconds"] = str(max(0, (now - int(started)) // 1000))
        rate = events_rate(self._rate_samples, now / 1000, counters.get("events_total", 0))
        fields["events_per_second"] = f"{rate:.2f}"
        fields["published_by_type"] = orjson.dumps(
            self.published_by_type, option=orjson.OPT_SORT_KEYS
        ).decode()
        fields["received_by_type"] = orjson.dumps(
            self.received_by_type, option=orjson.OPT_SORT_KEYS
        ).decode()
        return fields

    async def flush(self) -> None:
        """Write everything pending in one MULTI/EXEC; raises RedisError (nothing is lost)."""
        if not self.active:
            self._notices.clear()
            await self._redis.set(
                self._keys.standby(self._fields["collector_id"]),
                orjson.dumps(
                    {
                        "collector_id": self._fields["collector_id"],
                        "version": self._fields["version"],
                        "state": self.state.value,
                        "started_at": self._fields.get("started_at", ""),
                        "at": now_ms(),
                    }
                ),
                px=round(self.heartbeat_interval * 3000),
            )
            self._standby_written = True
            self.last_written_at = time.time()
            return
        # Take what is pending now; anything recorded during the round trip stays pending.
        notices = list(self._notices)
        self._notices.clear()
        union, self._union = self._union, None
        invalid, self._invalid = self._invalid, None
        fields = self.snapshot() if self._dirty or self._urgent else None
        self._dirty = False
        if fields is None and not notices and union is None and invalid is None:
            return
        fence = self.fence
        try:
            if cluster_of(self._redis) is not None:
                await self._flush_script(fields, union, invalid, notices)
                self._standby_written = False
                self.last_written_at = time.time()
                return

            def queue(pipe: Pipeline) -> None:
                if self._standby_written:  # a standby that took over: not a standby any more
                    pipe.delete(self._keys.standby(self._fields["collector_id"]))
                if fields is not None:
                    pipe.hset(self._keys.status, mapping=fields)  # type: ignore[arg-type]
                if union is not None:
                    pipe.delete(self._keys.union)
                    if union:
                        pipe.sadd(self._keys.union, *sorted(union))
                if invalid is not None:
                    pipe.delete(self._keys.invalid)
                    if invalid:
                        pipe.hset(self._keys.invalid, mapping=invalid)  # type: ignore[arg-type]
                for body in notices:
                    pipe.publish(self._keys.notices, body)

            # P:leader changed (expired, taken, or refreshed by us): LeaseLost, nothing written
            await transaction(self._redis, queue, fence=fence)
            self._standby_written = False
            self.last_written_at = time.time()
        except BaseException:
            # Not written (or not known to be): put it back unless something newer replaced it.
            self._notices.extendleft(reversed(notices))
            if self._union is None:
                self._union = union
            if self._invalid is None:
                self._invalid = invalid
            if fields is not None:
                self._dirty = True
            raise

    async def _flush_script(
        self,
        fields: dict[str, str] | None,
        union: frozenset[str] | None,
        invalid: dict[str, str] | None,
        notices: list[bytes],
    ) -> None:
        """The same writes as the transaction, for a Redis Cluster: one script in the slot of the
        collector's own keys (``{P}``), which checks the fence first. (redis-py's cluster
        transactions refuse a ``PUBLISH``; a classic ``PUBLISH`` from a script reaches
        subscribers on every node.)"""
        keys = self._keys
        commands: list[list[bytes | str]] = []
        if self._standby_written:
            commands.append(["DEL", keys.standby(self._fields["collector_id"])])
        # Lua's unpack() takes a few thousand values at most: long writes go in chunks.
        if fields:
            commands += _chunks("HSET", keys.status, _pairs(fields))
        if union is not None:
            commands.append(["DEL", keys.union])
            commands += _chunks("SADD", keys.union, sorted(union))
        if invalid is not None:
            commands.append(["DEL", keys.invalid])
            commands += _chunks("HSET", keys.invalid, _pairs(invalid))
        commands += [["PUBLISH", keys.notices, body] for body in notices]
        fence = self.fence
        blob = msgpack.packb(commands, use_bin_type=False)
        reply = await self._redis.eval(
            _CLUSTER_FLUSH_SCRIPT, 1, keys.status, blob, fence[1] if fence else b"", keys.leader
        )
        if isinstance(reply, list) and reply and reply[0] in (b"fenced", "fenced"):
            holder = reply[1] if len(reply) > 1 and reply[1] else None
            raise LeaseLost(holder if isinstance(holder, bytes) else None)

    async def run(self) -> None:
        """The writer: flush at once when something urgent happened, else once a second."""
        loop = asyncio.get_running_loop()
        last_write = -1e9
        retry = _RETRY_INITIAL
        while True:
            while not self._urgent:
                if self._dirty:
                    wait = last_write + self.write_interval - loop.time()
                    if wait <= 0:
                        break
                else:
                    wait = last_write + self.heartbeat_interval - loop.time()
                    if wait <= 0:
                        self._dirty = True  # a heartbeat: rewrite the hash and its updated_at
                        break
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event fires, and this task would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._urgent = False
            try:
                await self.flush()
            except LeaseLost:
                # Kept pending: the service re-takes the lease or steps down (then nothing is
                # written and the notices are discarded).
                self._urgent = True
                self.on_lease_lost()
                await asyncio.sleep(retry)
                retry = min(_RETRY_MAX, retry * 2)
                continue
            except REDIS_FAILURES as exc:
                self._urgent = True
                self.health.failed("status writer", exc)
                await asyncio.sleep(retry)
                retry = min(_RETRY_MAX, retry * 2)
                continue
            retry = _RETRY_INITIAL
            self.health.succeeded("status writer")
            last_write = loop.time()


def events_rate(samples: deque[tuple[float, int]], now: float, total: int) -> float:
    """Events per second over the last :data:`RATE_WINDOW` s; appends ``(now, total)`` to
    ``samples`` and forgets the older ones (pure apart from that deque)."""
    samples.append((now, total))
    while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
        samples.popleft()
    first_time, first_total = samples[0]
    span = now - first_time
    if span <= 0:
        return 0.0
    return max(0, total - first_total) / span
