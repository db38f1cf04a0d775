"""The collector service: intents in Redis -> one Upbit subscription -> events on Redis.

:class:`Collector` wires the parts together and owns every task:

=============  =====================================================================
task           job
=============  =====================================================================
``status``     writes ``P:status`` / ``P:notices`` / ``P:union`` / ``P:invalid``
``intents``    tracks ``P:intents:*`` (control channel, keyevent channels, sweep)
``publisher``  drains the outbox into Redis, one round trip per batch
``public``     the public upstream connection (:class:`collector.upstream.Upstream`)
``private``    the private one (only with API keys and a private URL)
``markets``    Upbit's market list (``GET /v1/market/all``), loaded at start and refreshed
``leader``     ``P:leader`` (only with ``leader_lease``; collector/leadership.py):
               upstreams run only while leader
``primary``    only with a Sentinel URL: follows a failover within a second
``canary``     the delivery probe on ``P:canary`` (:mod:`collector.canary`), while leader
``recorder``   private gaps and REST reconciliation (collector/private.py; with keys and
               ``record_private``), started and stopped with the upstreams
``snapshots``  cold snapshots answered from REST (collector/snapshots.py), while leader
``backfill``   trades missed in an upstream gap, from REST (collector/backfill.py), while
               leader
=============  =====================================================================

Leadership (docs/collector.md, "Leadership") is :class:`collector.leadership.Leadership`: the
fenced lease ``P:leader``, takeover, step-down and the lapsed lease. The service only says what
runs while leading: :meth:`Collector._elected` starts the upstream tasks (``public``,
``private``, ``recorder``, ``canary``, ``snapshots``, ``backfill``) and
:meth:`Collector._stop_upstreams` stops them when the collector steps down.

Every task runs under :meth:`Collector._supervise`: a crash is logged (ERROR, with traceback) in
that one place and the task is restarted after a short backoff; on close every task is cancelled
AND awaited with a time limit. Reconciliation itself is synchronous and pure, run whenever the
tracker's view changes, and incremental: :class:`collector.union.UnionIndex` keeps per-topic
reference counts over the clients that changed and is exactly :func:`collector.intents.plan`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from operator import attrgetter
from types import TracebackType
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from websockets.uri import parse_uri

from upbit_fanout.collector._log import log
from upbit_fanout.collector.auth import Credentials, authorization_header
from upbit_fanout.collector.backfill import Backfiller
from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.canary import CANARY_INTERVAL, Canary
from upbit_fanout.collector.exchange import ExchangeClient
from upbit_fanout.collector.intents import (
    DEFAULT_LIMITS,
    IntentTracker,
    Limits,
    Plan,
    RefusalLog,
)
from upbit_fanout.collector.leadership import Leadership, Takeover
from upbit_fanout.collector.markets import MarketList, market_list_url
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.private import PrivateRecorder
from upbit_fanout.collector.private_sync import rest_base_url
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.quotation import QuotationClient
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.collector.snapshots import SnapshotServer
from upbit_fanout.collector.status import LogLimiter, State, Status, now_ms
from upbit_fanout.collector.union import UnionIndex
from upbit_fanout.collector.upstream import Upstream
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.coalesce import check_interval
from upbit_fanout.subscriptions.connection import (
    REDIS_FAILURES,
    cluster_of,
    follow_primary,
    is_sentinel_managed,
)
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import LeaseLost
from upbit_fanout.subscriptions.tasks import stop_tasks
from upbit_fanout.subscriptions.topics import Topic
from upbit_fanout.subscriptions.version import package_version

__all__ = ["Collector"]


# A batch that met these is kept and retried (Redis away, a Cluster down or resharding); any
# other RedisError is Redis refusing the batch itself, which is dropped and announced.
_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterDownError,
    TryAgainError,
)

_TYPE = attrgetter("type")

SLACK = 0.05
"""Seconds added to every rate window, so network jitter cannot squeeze sends together."""

_STOP_TIMEOUT = 5.0
_PRIMARY_CHECK_INTERVAL = 1.0
"""Seconds between two questions to the Sentinels (only with a Sentinel URL)."""


def default_collector_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


DEFAULT_KEY_PREFIX = "upbit"
"""``P`` of every key name unless ``key_prefix`` says otherwise (the client's default too)."""


def _keys_of(key_prefix: str | None, keys: Keys | None) -> Keys:
    """The :class:`Keys` of ``Collector(key_prefix=...)``, or of the deprecated ``keys=``."""
    if keys is None:
        return Keys(DEFAULT_KEY_PREFIX if key_prefix is None else key_prefix)
    if key_prefix is not None:
        raise TypeError(
            "Collector() takes key_prefix= or the deprecated keys=, not both; pass "
            f"key_prefix={keys.prefix!r} alone"
        )
    warnings.warn(
        "Collector(keys=Keys(prefix)) is deprecated and will be removed in the next release; "
        f"pass key_prefix={keys.prefix!r} (the spelling of FanoutClient)",
        DeprecationWarning,
        stacklevel=3,
    )
    return keys


class Collector:
    """Reconciles every live intent into one Upbit subscription and republishes the events.

    Use it as ``async with Collector(...) as c: await c.run()`` (``run`` returns after
    :meth:`stop`), or ``await c.start()`` ... ``await c.aclose()``.

    ``key_prefix`` (default ``"upbit"``) is ``P`` in every key and channel name, spelled as
    :class:`client.FanoutClient` spells it; on a Redis Cluster the collector picks the Cluster
    names itself (:meth:`subscriptions.keys.Keys.clustered`). ``keys=Keys(prefix)`` is the
    deprecated spelling (a ``DeprecationWarning``; giving both is a ``TypeError``).

    What tests and operators can read: :attr:`state` (a :class:`collector.status.State`),
    :attr:`union` (topic texts last sent upstream, both connections), :attr:`counters`,
    :attr:`connected` (set while the public socket is open), :meth:`wait_subscribed`,
    :attr:`public` / :attr:`private` (the :class:`collector.upstream.Upstream` objects),
    :attr:`collector_id`, :attr:`key_prefix`, :attr:`keys`, :attr:`is_leader`,
    :attr:`leadership` (:class:`collector.leadership.Leadership`), :attr:`canary` (the delivery
    probe, :class:`collector.canary.Canary`), :attr:`status` (counters, histograms, fields).
    """

    def __init__(
        self,
        *,
        redis: Redis,
        key_prefix: str | None = None,
        upstream_url: str,
        private_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        codec: Literal["json", "msgpack"] = "json",
        sweep_interval: float = 2.0,
        ping_interval: float = 15.0,
        ping_timeout: float = 10.0,
        max_per_second: int = 5,
        max_per_minute: int = 100,
        connect_per_second: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_fast_max: float = 2.0,
        queue_size: int = 10_000,
        stream_maxlen: int = 10_000,
        coalesce: float = 0.05,
        rate_limit_recovery: float = 60.0,
        leader_lease: float | None = None,
        collector_id: str | None = None,
        redis_grace: float = 30.0,
        canary_interval: float = CANARY_INTERVAL,
        rng: Callable[[], float] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        validate_markets: bool = True,
        markets_url: str | None = None,
        markets_refresh: float = 600.0,
        record_private: bool = True,
        rest_url: str | None = None,
        reconcile_lookback: float = 3600.0,
        private_mark_interval: float = 2.0,
        private_start_wait: float = 5.0,
        upstream_format: Literal["DEFAULT", "SIMPLE"] = "DEFAULT",
        upstream_transport: str = "websockets",  # or "picows" (collector/transport.py)
        verify_subscriptions: bool = True,
        verify_delay: float = 1.0,
        warm_seconds: float = 60.0,
        rest_snapshots: bool = True,
        backfill_max_trades: int = 2_000,
        snapshot_requests_per_client: int = 10,
        read_coalesce: float = 0.0,  # s a busy upstream socket's reading rests (0: off)
        keys: Keys | None = None,
    ) -> None:
        keys = _keys_of(key_prefix, keys)
        for url in (upstream_url, private_url):
            if url is not None:
                parse_uri(url)  # raises InvalidURI (a ValueError) at once for a bad setting
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both Upbit API keys (access and secret) or neither")
        if leader_lease is not None and leader_lease < 1.0:
            raise ValueError("leader_lease must be at least 1 s")
        if redis_grace < 0:
            raise ValueError("redis_grace must be >= 0")
        read_coalesce = check_interval(read_coalesce)
        self._redis = redis
        if cluster_of(redis) is not None:
            keys = keys.clustered()  # docs/contract.md, "Redis Cluster"
        self.keys = keys
        """The key names: ``Keys(key_prefix)``, with the Cluster names on a Redis Cluster."""
        self.collector_id = collector_id or default_collector_id()
        self.status = Status(redis, keys, collector_id=self.collector_id, version=package_version())
        self.outbox: Outbox[Outgoing] = Outbox(queue_size)
        self.status.gauges["dropped_events"] = self._dropped  # drops happen while Redis is away
        self.status.gauges["fenced_events"] = lambda: self.leadership.fenced_events
        self.status.health.on_down = self._redis_down
        self.status.health.on_up = self._redis_up
        self.publisher = Publisher(redis, keys, stream_maxlen=stream_maxlen)
        self.canary = Canary(
            redis,
            keys,
            status=self.status,
            outbox=self.outbox,
            collector_id=self.collector_id,
            interval=canary_interval,
        )
        self.status.gauges["queue_depth"] = self.outbox.__len__
        self.tracker = IntentTracker(
            redis,
            keys,
            health=self.status.health,
            on_change=self._reconcile,
            sweep_interval=sweep_interval,
            limits=limits,
        )
        self.limits = limits
        self.markets: MarketList | None = None
        """Upbit's market list (``validate_markets``), from ``markets_url`` (default: derived
        from ``upstream_url``); unknown codes are refused once it has loaded."""
        if validate_markets:
            self.markets = MarketList(
                markets_url or market_list_url(upstream_url),
                on_change=self._markets_changed,
                refresh_interval=markets_refresh,
            )
        self._refusal_log = RefusalLog()
        connect_budget = RateBudget([(connect_per_second, 1.0)], slack=SLACK)

        def upstream(
            name: str,
            url: str,
            headers: Callable[[], Mapping[str, str]] | None,
            on_gap: Callable[[int, frozenset[Topic]], None] | None = None,
        ) -> Upstream:
            return Upstream(
                name=name,
                url=url,
                # the duplicate-trade filter remembers at least a whole back-fill's trades
                router=Router(codec=codec, dedupe_window=max(1_000, backfill_max_trades + 1_000)),
                outbox=self.outbox,
                status=self.status,
                budget=RateBudget(
                    [(max_per_second, 1.0), (max_per_minute, 60.0)],
                    slack=SLACK,
                    recovery=rate_limit_recovery,
                ),
                connect_budget=connect_budget,
                headers=headers,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                backoff_initial=backoff_initial,
                backoff_max=backoff_max,
                backoff_fast_max=backoff_fast_max,
                coalesce=coalesce,
                upstream_format=upstream_format,
                transport=upstream_transport,
                verify=verify_subscriptions,
                verify_delay=verify_delay,
                warm_seconds=warm_seconds,
                read_coalesce=read_coalesce,
                rng=rng,
                on_change=self._upstream_changed,
                on_gap=on_gap,
            )

        self.public = upstream("public", upstream_url, None, self._public_gap)
        # Upbit's quotation REST API: cold snapshots and trade back-fill (docs/collector.md,
        # "REST: cold snapshots and back-fill"); both run only while leader.
        self.quotation: QuotationClient | None = None
        self.snapshots: SnapshotServer | None = None
        self.backfiller: Backfiller | None = None
        if rest_snapshots or backfill_max_trades > 0:
            self.quotation = QuotationClient(rest_url or rest_base_url(upstream_url))
        if rest_snapshots and self.quotation is not None:
            self.snapshots = SnapshotServer(
                redis=redis,
                keys=keys,
                client=self.quotation,
                outbox=self.outbox,
                status=self.status,
                codec=codec,
                live=lambda: self._union,
                markets=lambda: self.markets.current if self.markets is not None else None,
                per_client=snapshot_requests_per_client,
            )
        if backfill_max_trades > 0 and self.quotation is not None:
            self.backfiller = Backfiller(
                client=self.quotation,
                router=self.public.router,
                outbox=self.outbox,
                status=self.status,
                codec=codec,
                published=lambda: self.publisher.events_published,
                max_trades=backfill_max_trades,
                redis=redis,
                keys=keys,
            )
        self.private: Upstream | None = None
        self.recorder: PrivateRecorder | None = None
        self._exchange: ExchangeClient | None = None
        if access_key is not None and secret_key is not None and private_url is not None:
            credentials = Credentials(access_key, secret_key)
            self.private = upstream(
                "private", private_url, lambda: authorization_header(credentials)
            )
            if record_private:  # always-on recording, gaps and REST reconciliation
                self.private.router.record = True
                self._exchange = ExchangeClient(rest_url or rest_base_url(private_url), credentials)
                self.recorder = PrivateRecorder(
                    redis=redis,
                    keys=keys,
                    outbox=self.outbox,
                    status=self.status,
                    exchange=self._exchange,
                    codec=codec,
                    mark_interval=private_mark_interval,
                    start_wait=private_start_wait,
                    lookback=reconcile_lookback,
                )
        self.status.gauges["read_rests"] = self._read_rests
        self._private_note = (
            "enabled"
            if self.private is not None
            else "disabled: no API keys"
            if access_key is None
            else "disabled: no private URL"
        )
        self.leader_lease = leader_lease
        self.leadership = Leadership(
            redis=redis,
            keys=keys,
            collector_id=self.collector_id,
            lease=leader_lease,
            reclaim=collector_id is not None,  # a configured id may reclaim its own lease
            status=self.status,
            outbox=self.outbox,
            publisher=self.publisher,
            on_elected=self._elected,
            on_deposed=self._stop_upstreams,
        )
        """The leader lease (:class:`collector.leadership.Leadership`)."""
        self.status.on_lease_lost = self.leadership.check_soon
        self.redis_grace = redis_grace
        self._held_intents: dict[str, frozenset[str]] = {}
        self._grace_timer: asyncio.TimerHandle | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._upstream_tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._started = False
        self._closed = False
        self._plan = Plan()
        self._index = UnionIndex(limits=limits)
        self._index_reset = True  # the next reconciliation starts the index over
        self._planned_loaded = False
        self._union: frozenset[str] = frozenset()
        self._progress = asyncio.Event()
        self._publish_logs = LogLimiter(10.0)
        self._refused_events = 0
        self._down_since: dict[str, int | None] = {}

    # -- public API -------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.status.state

    @property
    def union(self) -> frozenset[str]:
        """Topic texts last sent upstream (what ``P:union`` shows)."""
        return self._union

    @property
    def is_leader(self) -> bool:
        """True while this collector holds the leader lease (always without ``leader_lease``)."""
        return self.leadership.is_leader

    @property
    def key_prefix(self) -> str:
        """``P`` of every key name (as :attr:`client.FanoutClient.key_prefix`)."""
        return self.keys.prefix

    @property
    def connected(self) -> asyncio.Event:
        """Set while the public upstream socket is open."""
        return self.public.connected

    @property
    def counters(self) -> dict[str, int]:
        """The status counters (events_total, sends_total, reconnects, invalid_intents, ...)."""
        return self.status.current_counters()

    @property
    def plan(self) -> Plan:
        """The latest reconciliation (desired subscriptions and refused intents)."""
        return self._plan

    async def wait_subscribed(
        self,
        predicate: Callable[[frozenset[str]], bool] | None = None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline argument reads better in tests
    ) -> frozenset[str]:
        """Wait until a subscription was sent and ``predicate(union)`` holds; return the union.

        Raises :class:`TimeoutError` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                progress = self._progress
                union = self._union
                if predicate(union) if predicate is not None else bool(union):
                    return union
                await progress.wait()

    async def start(self) -> None:
        """Start every task (idempotent)."""
        if self._started:
            return
        self._started = True
        log.info(
            "collector %s starting: upstream %s, private %s, prefix %r",
            self.collector_id,
            self.public.url,
            self._private_note,
            self.keys.prefix,
        )
        self.status.set(
            private_recording="on" if self.recorder is not None else "off",
            upstream=self.public.url,
            private_upstream=self.private.url if self.private else "",
            private=self._private_note,
            ticket="",
            connected_since="",
            last_event_at="",
            upstream_state=State.IDLE.value,
            started_at=self.status.snapshot()["updated_at"],
        )
        if self.private is not None:
            self.status.set(private_upstream_state=State.IDLE.value)
        self.status.set(
            markets=self.markets.note if self.markets else "not checked (disabled)",
            limits=self.limits.describe(),
        )
        self.leadership.show_role()
        if self.is_leader:
            self.status.set_union(())  # forget what a previous run left behind
            self.status.set_invalid({})
        self._spawn("status", self.status.run)
        self._spawn("publisher", self._publish_loop)
        self._spawn("intents", self.tracker.run)
        if is_sentinel_managed(self._redis):
            self._spawn("primary", self._follow_primary_loop)
        if self.markets is not None:
            self._spawn("markets", self.markets.run)
        if self.leader_lease is None:
            self._start_upstreams()
        else:
            self.status.set_state(State.STANDBY)
            self._spawn("leader", self.leadership.run)

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler via ``loop.call_soon``)."""
        self._stop.set()

    async def run(self) -> None:
        """Start if needed, run until :meth:`stop`, then close everything."""
        await self.start()
        await self._stop.wait()
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every task, close the sockets, write the final status (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if not self._started:
            return
        log.info("collector %s stopping", self.collector_id)
        await self._cancel(["primary", "leader", "intents", "markets"], insist=True)
        await self._stop_upstreams()
        await self._cancel(["publisher"], insist=True)
        await self._final_publish()
        await self._close_publisher()
        await self._cancel(["status"], insist=True)
        if self._exchange is not None:
            await self._exchange.aclose()
        if self.quotation is not None:
            await self.quotation.aclose()
        self.status.set_state(State.STOPPED)
        self.status.set(upstream_state=State.STOPPED.value)
        self.status.notice("disconnected", connection="all", reason="collector stopped")
        if self.is_leader:
            self.status.set_union(())
            self.status.set_invalid({})
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        try:
            async with asyncio.timeout(2.0):
                await self.status.flush()
                await self.leadership.release()
        except LeaseLost:
            log.info("collector %s had lost its lease; final status not written", self.collector_id)
        except (*REDIS_FAILURES, TimeoutError) as exc:
            log.warning("could not write the final status to Redis (%s)", exc)
        log.info("collector %s stopped", self.collector_id)

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- reconciliation ---------------------------------------------------------------------------
    def _reconcile(self) -> None:
        """The tracker's view changed: update the union (by the clients that changed, see
        :class:`collector.union.UnionIndex`) and hand a changed plan to the connections.

        Nothing here is O(clients) for an ordinary change: a client's heartbeat, or a client
        asking for topics others already want, costs a few dictionary operations and returns
        at the ``is`` test; only a change of the union rebuilds the subscriptions."""
        tracker = self.tracker
        private_allowed = self.private is not None
        markets = self.markets.current if self.markets is not None else None
        # not before the first sweep: events of topics someone wants must reach their channels
        record_private = self.recorder is not None and tracker.loaded
        changed = tracker.take_changes()
        allowed_was, markets_was, record_was = self._index.settings()
        if (
            changed is None
            or self._index_reset
            or (allowed_was, record_was) != (private_allowed, record_private)
            or markets_was is not markets
        ):
            self._index_reset = False
            self._index.reset(
                self._intents(),
                private_allowed=private_allowed,
                markets=markets,
                record_private=record_private,
                refused_keys=tracker.refused_keys,
                seen=tracker.seen,
            )
        else:
            index = self._index
            for client in changed:
                seen = tracker.seen.get(client, 0.0)
                members = tracker.intents.get(client)
                if members is None:
                    members = self._held_intents.get(client)
                if members is None:
                    index.remove_client(client)
                else:
                    index.set_client(client, members, seen)
                index.set_key_refusal(client, tracker.refused_keys.get(client), seen)
        new = self._index.plan()
        if new is self._plan and self._planned_loaded == tracker.loaded:
            return
        self._planned_loaded = tracker.loaded
        self._refusal_log.report(self._plan, new)
        if (new.refused, new.hidden_count) != (self._plan.refused, self._plan.hidden_count):
            self.status.set_invalid(new.invalid_fields(), new.refused_total)
        self._plan = new
        self.public.want(new.public, new.public_topics)
        if self.private is not None:
            self.private.want(new.private, new.private_topics)
        self._upstream_changed()

    def _markets_changed(self) -> None:
        """The market list loaded, changed or failed: say so and re-plan."""
        if self.markets is not None:
            self.status.set(markets=self.markets.note)
        self._reconcile()

    def _upstream_changed(self) -> None:
        """An upstream changed state or sent a subscription: update state, union, waiters."""
        union = frozenset(str(topic) for topic in self.public.union)
        if self.private is not None:
            union |= frozenset(str(topic) for topic in self.private.union)
        if union != self._union:
            self._union = union
            self.status.set_union(union)
        self._note_upstream(self.public)
        if self.private is not None:
            self._note_upstream(self.private)
        if self.recorder is not None and self.private is not None:
            self.recorder.observe(self.private.state == State.SUBSCRIBED)
        if self.backfiller is not None and self.public.state == State.SUBSCRIBED:
            self.backfiller.subscribed(self.public.union)  # after a takeover: fill its gap
        self.status.set_state(self._overall_state())
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _note_upstream(self, upstream: Upstream) -> None:
        """``[private_]upstream_down_since`` (ms): set while a wanted connection is not up;
        a subscribed connection clears the errors it caused (``Status.recovered``)."""
        prefix = "" if upstream.name == "public" else f"{upstream.name}_"
        state = upstream.state
        down = state in (State.CONNECTING, State.RECONNECTING) and not upstream.desired.is_empty
        since = self._down_since.get(prefix)
        if down and since is None:
            self._down_since[prefix] = now_ms()
            self.status.set(**{f"{prefix}upstream_down_since": self._down_since[prefix]})
        elif not down and since is not None:
            self._down_since[prefix] = None
            self.status.set(**{f"{prefix}upstream_down_since": ""})
        if state == State.SUBSCRIBED:
            self.status.recovered(f"{upstream.name} upstream")

    def _overall_state(self) -> State:
        if self._closed:
            return State.STOPPED
        if not self.is_leader:
            return State.STANDBY
        if not self.tracker.loaded:
            return State.STARTING
        public = self.public.state
        if self.private is not None and public in (State.IDLE, State.STOPPED):
            private = self.private.state
            if private not in (State.IDLE, State.STOPPED):
                return private
        if public == State.STOPPED:
            return State.IDLE
        return public

    # -- publishing -------------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        delays = backoff(0.1, 2.0)
        status = self.status
        while True:
            batch = await self.outbox.get_batch(limit=10_000)
            if not self.is_leader:  # stepped down: nothing queued may be published
                self.leadership.dropped(len(batch))
                continue
            if self.backfiller is not None:  # after a takeover: anchors before last values
                await self.backfiller.before_publish(batch)
            expected = self.leadership.value
            started = time.perf_counter()
            try:
                await self.publisher.publish(batch)
            except LeaseLost as lost:
                # Nothing of the batch was written. It is retried only if the lease turns out
                # to be still ours (a WATCH aborted by this collector's own refresh).
                try:
                    ours = await self.leadership.lost(expected, lost.holder, in_hand=len(batch))
                except REDIS_FAILURES as exc:
                    status.health.failed("publisher", exc)
                    ours = False
                    await asyncio.sleep(next(delays))
                if ours:
                    self.outbox.put_front(batch)
                else:
                    self.leadership.dropped(len(batch))
                continue
            except (*_TRANSIENT, OSError) as exc:
                status.health.failed("publisher", exc)
                self.outbox.put_front(batch)
                await asyncio.sleep(next(delays))
                continue
            except RedisError as exc:
                # Redis answered but refused the batch (a key of the wrong type, say): retrying
                # would refuse it again, so it is dropped and counted.
                self._refused_events += len(batch)
                allowed, held = self._publish_logs.allow("refused")
                if allowed:
                    log.warning(
                        "Redis refused a batch of %d events (%s); dropped (%d similar held back)",
                        len(batch),
                        exc,
                        held,
                    )
                status.notice("gap", reason=f"Redis refused {len(batch)} events: {exc}")
                continue
            status.observe("publish_batch", time.perf_counter() - started)
            status.count_published(Counter(map(_TYPE, batch)))
            status.health.succeeded("publisher")
            delays = backoff(0.1, 2.0)
            self._announce_drops()

    def _announce_drops(self) -> None:
        """After a successful publish: say (once) how many events the full queue dropped."""
        since = self.outbox.dropping_since
        dropped = self.outbox.take_dropped()
        if dropped:
            log.warning("%d events were dropped while Redis was slow or unreachable", dropped)
            self.status.notice(
                "gap",
                reason="events dropped while Redis was slow or unreachable",
                dropped=dropped,
                since=round(since * 1000) if since is not None else None,
            )

    def _read_rests(self) -> int:
        private = self.private
        return self.public.read_rests + (private.read_rests if private is not None else 0)

    def _dropped(self) -> int:
        return self.outbox.dropped_total + self._refused_events + self.leadership.fenced_events

    async def _final_publish(self) -> None:
        if not len(self.outbox):
            return
        batch = await self.outbox.get_batch()
        try:
            async with asyncio.timeout(1.0):
                await self.publisher.publish(batch)
        except LeaseLost:
            self.leadership.dropped(len(batch))
            log.info("the last %d events were not published: the lease was lost", len(batch))
        except (*REDIS_FAILURES, TimeoutError) as exc:
            log.warning("could not publish the last %d events (%s)", len(batch), exc)
        else:
            self._announce_drops()

    async def _close_publisher(self) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self.publisher.aclose()
        except (*REDIS_FAILURES, TimeoutError, OSError) as exc:  # closing; nothing depends on it
            log.debug("closing the publish connection: %s", exc)

    # -- Redis restarts ---------------------------------------------------------------------------
    def _intents(self) -> Mapping[str, frozenset[str]]:
        """The tracker's view, plus, for a grace period after a Redis outage, the intents of
        clients that have not re-asserted theirs yet (a restarted Redis comes back empty)."""
        if not self._held_intents:
            return self.tracker.intents
        return {**self._held_intents, **self.tracker.intents}

    def _redis_down(self) -> None:
        if self._grace_timer is not None:  # a second outage within the grace: keep both views
            self._grace_timer.cancel()
            self._grace_timer = None
        self._held_intents = {**self._held_intents, **self.tracker.intents}

    def _redis_up(self) -> None:
        if not self._held_intents:
            return
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        log.info(
            "Redis is back: keeping the intents of %d clients for %.0f s so they can re-assert",
            len(self._held_intents),
            self.redis_grace,
        )
        self._grace_timer = asyncio.get_running_loop().call_later(
            self.redis_grace, self._grace_over
        )

    def _grace_over(self) -> None:
        self._grace_timer = None
        self._held_intents = {}
        self._index_reset = True
        self._reconcile()

    # -- tasks ------------------------------------------------------------------------------------
    def _elected(self, term: Takeover) -> None:
        """This collector became the leader (:meth:`Leadership.take_over`): write its view over
        the previous leader's, back-fill the failover window, start the leader's tasks."""
        self.status.set_union(self._union)
        self.status.set_invalid(self._plan.invalid_fields(), self._plan.refused_total)
        if self.backfiller is not None and term.backfill_since is not None:
            self.backfiller.takeover(term.backfill_since, term.until)
        self._start_upstreams()
        self._upstream_changed()

    def _start_upstreams(self) -> None:
        if self.recorder is not None:
            self.recorder.begin_term()
            self._upstream_tasks["recorder"] = self._spawn("recorder", self.recorder.run)
        self._upstream_tasks["public"] = self._spawn("public", self.public.run)
        if self.private is not None:
            self._upstream_tasks["private"] = self._spawn("private", self.private.run)
        self._spawn("canary", self.canary.run)
        if self.snapshots is not None:
            self._spawn("snapshots", self.snapshots.run)
        if self.backfiller is not None:
            self._spawn("backfill", self.backfiller.run)
        self._reconcile()

    def _public_gap(self, since: int, topics: frozenset[Topic]) -> None:
        """The public socket is back after a gap: back-fill its trade topics (if enabled)."""
        if self.backfiller is not None and self.is_leader:
            self.backfiller.gap(since, topics)

    async def _follow_primary_loop(self) -> None:
        """With Sentinel: notice a failover within a second and move every connection to the new
        primary (connections open to the old one would keep writing where nobody reads)."""
        while True:
            await asyncio.sleep(_PRIMARY_CHECK_INTERVAL)
            try:
                if await follow_primary(self._redis):
                    log.warning("the Redis primary moved (Sentinel failover); reconnecting to it")
            except REDIS_FAILURES as exc:
                self.status.health.failed("Sentinel", exc)

    async def _stop_upstreams(self) -> None:
        names = list(self._upstream_tasks)
        self._upstream_tasks.clear()
        await self._cancel(["canary", "snapshots", "backfill"], insist=True)
        await self._cancel(names)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._supervise(name, factory), name=f"collector-{name}")
        self._tasks[name] = task
        return task

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()``; log a crash (the one place that does) and restart it."""
        delays = backoff(0.5, 10.0)
        while True:
            started = time.monotonic()
            try:
                await factory()
                log.error("collector task %s returned unexpectedly; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("collector task %s crashed; restarting it", name)
                self.status.set(last_error=f"internal error in {name}: {type(exc).__name__}")
            if time.monotonic() - started > 60:
                delays = backoff(0.5, 10.0)
            await asyncio.sleep(next(delays))

    async def _cancel(self, names: list[str], *, insist: bool = False) -> None:
        """Cancel the named tasks and wait (at most ``_STOP_TIMEOUT``) until they are done.

        :func:`subscriptions.tasks.stop_tasks` semantics: ``insist`` re-sends the cancellation
        every 0.1 s (redis-py can drop one, CPython gh-86296); tasks that close a WebSocket on
        the way out are cancelled once, so their close can finish. A cancellation of the caller
        is never swallowed.
        """
        tasks = [task for name in names if (task := self._tasks.pop(name, None)) is not None]
        if not tasks:
            return
        pending = await stop_tasks(tasks, within=_STOP_TIMEOUT, insist=insist)
        for task in pending:
            log.error(
                "collector task %s did not stop within %.0f s", task.get_name(), _STOP_TIMEOUT
            )
        for task in tasks:
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    log.error("collector task %s failed while stopping: %r", task.get_name(), exc)
