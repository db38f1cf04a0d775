"""The collector service: intents in Redis -> one Upbit subscription -> events on Redis.

:class:`Collector` wires the parts together and owns every task:

=============  =====================================================================
task           job
=============  =====================================================================
``status``     writes ``P:status`` / ``P:notices`` / ``P:union`` / ``P:invalid``
``intents``    tracks ``P:intents:*`` (control channel, keyspace events, sweep)
``publisher``  drains the outbox into Redis, one round trip per batch
``public``     the public upstream connection (:class:`collector.upstream.Upstream`)
``private``    the private one (only with API keys and a private URL)
``leader``     ``P:leader`` (only with ``leader_lease``): upstreams run only while leader
``recorder``   private gaps and REST reconciliation (collector/private.py; with keys and
               ``record_private``), started and stopped with the upstreams
=============  =====================================================================

Every task runs under :meth:`Collector._supervise`: a crash is logged (ERROR, with traceback) in
that one place and the task is restarted after a short backoff; on close every task is cancelled
AND awaited with a time limit. Reconciliation itself is synchronous and pure
(:func:`collector.intents.plan`), run whenever the tracker's view changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from websockets.uri import parse_uri

from upbit_fanout import __version__
from upbit_fanout.collector.auth import Credentials, authorization_header
from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.exchange import ExchangeClient
from upbit_fanout.collector.intents import IntentTracker, Plan, newly_invalid, plan
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.private import PrivateRecorder
from upbit_fanout.collector.private_sync import rest_base_url
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.collector.status import LogLimiter, State, Status
from upbit_fanout.collector.upstream import Upstream
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.keys import Keys

__all__ = ["Collector"]

log = logging.getLogger(__name__)

SLACK = 0.05
"""Seconds added to every rate window, so network jitter cannot squeeze sends together."""

_STOP_TIMEOUT = 5.0
_RELEASE_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_REFRESH_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


def default_collector_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Collector:
    """Reconciles every live intent into one Upbit subscription and republishes the events.

    Use it as ``async with Collector(...) as c: await c.run()`` (``run`` returns after
    :meth:`stop`), or ``await c.start()`` ... ``await c.aclose()``.

    What tests and operators can read: :attr:`state` (a :class:`collector.status.State`),
    :attr:`union` (topic texts last sent upstream, both connections), :attr:`counters`,
    :attr:`connected` (set while the public socket is open), :meth:`wait_subscribed`,
    :attr:`public` / :attr:`private` (the :class:`collector.upstream.Upstream` objects),
    :attr:`collector_id`, :attr:`is_leader`.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
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
        queue_size: int = 10_000,
        stream_maxlen: int = 10_000,
        coalesce: float = 0.05,
        rate_limit_recovery: float = 60.0,
        leader_lease: float | None = None,
        collector_id: str | None = None,
        rng: Callable[[], float] | None = None,
        record_private: bool = True,
        rest_url: str | None = None,
        reconcile_lookback: float = 3600.0,
        private_mark_interval: float = 2.0,
        private_start_wait: float = 5.0,
    ) -> None:
        for url in (upstream_url, private_url):
            if url is not None:
                parse_uri(url)  # raises InvalidURI (a ValueError) at once for a bad setting
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both Upbit API keys (access and secret) or neither")
        if leader_lease is not None and leader_lease < 1.0:
            raise ValueError("leader_lease must be at least 1 s")
        self._redis = redis
        self.keys = keys
        self.collector_id = collector_id or default_collector_id()
        self.status = Status(redis, keys, collector_id=self.collector_id, version=__version__)
        self.outbox: Outbox[Outgoing] = Outbox(queue_size)
        self.status.gauges["dropped_events"] = self._dropped  # drops happen while Redis is away
        self.publisher = Publisher(redis, keys, stream_maxlen=stream_maxlen)
        self.tracker = IntentTracker(
            redis,
            keys,
            health=self.status.health,
            on_change=self._reconcile,
            sweep_interval=sweep_interval,
        )
        connect_budget = RateBudget([(connect_per_second, 1.0)], slack=SLACK)

        def upstream(
            name: str, url: str, headers: Callable[[], Mapping[str, str]] | None
        ) -> Upstream:
            return Upstream(
                name=name,
                url=url,
                router=Router(codec=codec),
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
                coalesce=coalesce,
                rng=rng,
                on_change=self._upstream_changed,
            )

        self.public = upstream("public", upstream_url, None)
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
        self._private_note = (
            "enabled"
            if self.private is not None
            else "disabled: no API keys"
            if access_key is None
            else "disabled: no private URL"
        )
        self.leader_lease = leader_lease
        self.is_leader = leader_lease is None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._upstream_tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._started = False
        self._closed = False
        self._plan = Plan()
        self._union: frozenset[str] = frozenset()
        self._progress = asyncio.Event()
        self._publish_logs = LogLimiter(10.0)
        self._refused_events = 0

    # -- public API -------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.status.state

    @property
    def union(self) -> frozenset[str]:
        """Topic texts last sent upstream (what ``P:union`` shows)."""
        return self._union

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
        self.status.active = self.is_leader
        if self.is_leader:
            self.status.set_union(())  # forget what a previous run left behind
            self.status.set_invalid({})
        self._spawn("status", self.status.run)
        self._spawn("publisher", self._publish_loop)
        self._spawn("intents", self.tracker.run)
        if self.leader_lease is None:
            self._start_upstreams()
        else:
            self.status.set_state(State.STANDBY)
            self._spawn("leader", self._leader_loop)

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
        await self._cancel(["leader", "intents"], insist=True)
        await self._stop_upstreams()
        await self._cancel(["publisher"], insist=True)
        await self._final_publish()
        await self._cancel(["status"], insist=True)
        if self._exchange is not None:
            await self._exchange.aclose()
        self.status.set_state(State.STOPPED)
        self.status.set(upstream_state=State.STOPPED.value)
        self.status.notice("disconnected", connection="all", reason="collector stopped")
        if self.is_leader:
            self.status.set_union(())
            self.status.set_invalid({})
        try:
            async with asyncio.timeout(2.0):
                await self.status.flush()
                if self.is_leader and self.leader_lease is not None:
                    await self._redis.eval(_RELEASE_SCRIPT, 1, self.keys.leader, self.collector_id)
        except (RedisError, OSError, TimeoutError) as exc:
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
        """The tracker's view changed: compute the plan and hand it to the connections."""
        new = plan(
            self.tracker.intents,
            private_allowed=self.private is not None,
            # not before the first sweep: events of topics someone wants must reach their channels
            record_private=self.recorder is not None and self.tracker.loaded,
        )
        for (client_id, topic), reason in newly_invalid(self._plan.invalid, new.invalid).items():
            log.warning("refusing intent %r of client %r: %s", topic, client_id, reason)
        if new.invalid != self._plan.invalid:
            self.status.set_invalid(new.invalid)
        self._plan = new
        self.public.want(new.public, new.public_topics)
        if self.private is not None:
            self.private.want(new.private, new.private_topics)
        self._upstream_changed()

    def _upstream_changed(self) -> None:
        """An upstream changed state or sent a subscription: update state, union, waiters."""
        union = frozenset(str(topic) for topic in self.public.union)
        if self.private is not None:
            union |= frozenset(str(topic) for topic in self.private.union)
        if union != self._union:
            self._union = union
            self.status.set_union(union)
        if self.recorder is not None and self.private is not None:
            self.recorder.observe(self.private.state == State.SUBSCRIBED)
        self.status.set_state(self._overall_state())
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

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
            try:
                await self.publisher.publish(batch)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
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
            status.health.succeeded()
            delays = backoff(0.1, 2.0)
            self._announce_drops()

    def _announce_drops(self) -> None:
        """After a successful publish: say (once) how many events the full queue dropped."""
        dropped = self.outbox.take_dropped()
        if dropped:
            log.warning("%d events were dropped while Redis was slow or unreachable", dropped)
            self.status.notice(
                "gap", reason="events dropped while Redis was slow or unreachable", dropped=dropped
            )

    def _dropped(self) -> int:
        return self.outbox.dropped_total + self._refused_events

    async def _final_publish(self) -> None:
        if not len(self.outbox):
            return
        batch = await self.outbox.get_batch()
        try:
            async with asyncio.timeout(1.0):
                await self.publisher.publish(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not publish the last %d events (%s)", len(batch), exc)
        else:
            self._announce_drops()

    # -- leadership -------------------------------------------------------------------------------
    async def _leader_loop(self) -> None:
        assert self.leader_lease is not None
        lease_ms = round(self.leader_lease * 1000)
        interval = self.leader_lease / 3
        key = self.keys.leader
        while True:
            try:
                if self.is_leader:
                    kept = await self._redis.eval(
                        _REFRESH_SCRIPT, 1, key, self.collector_id, lease_ms
                    )
                    if not kept:
                        # Lost the key (Redis restarted, or we were away too long): take it
                        # back if free, else step down.
                        kept = await self._redis.set(key, self.collector_id, nx=True, px=lease_ms)
                    if not kept:
                        await self._step_down()
                else:
                    won = await self._redis.set(key, self.collector_id, nx=True, px=lease_ms)
                    if won:
                        self._take_over()
                self.status.health.succeeded()
            except (RedisError, OSError) as exc:
                # Keep the current role: without Redis nobody else can take over either.
                self.status.health.failed("leader", exc)
            await asyncio.sleep(interval)

    def _take_over(self) -> None:
        log.info("collector %s is now the leader (%s)", self.collector_id, self.keys.leader)
        self.is_leader = True
        self.status.active = True
        self.status.set_union(self._union)
        self.status.set_invalid(self._plan.invalid)
        self.status.notice("leader", collector_id=self.collector_id)
        self._start_upstreams()
        self._upstream_changed()

    async def _step_down(self) -> None:
        log.warning(
            "collector %s lost %s to another collector; standing by", self.collector_id,
            self.keys.leader,
        )  # fmt: skip
        self.is_leader = False
        await self._stop_upstreams()
        self.status.set_state(State.STANDBY)
        self.status.active = False

    # -- tasks ------------------------------------------------------------------------------------
    def _start_upstreams(self) -> None:
        if self.recorder is not None:
            self.recorder.begin_term()
            self._upstream_tasks["recorder"] = self._spawn("recorder", self.recorder.run)
        self._upstream_tasks["public"] = self._spawn("public", self.public.run)
        if self.private is not None:
            self._upstream_tasks["private"] = self._spawn("private", self.private.run)
        self._reconcile()

    async def _stop_upstreams(self) -> None:
        names = list(self._upstream_tasks)
        self._upstream_tasks.clear()
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

        ``insist`` re-sends the cancellation every 0.1 s: redis-py awaits ``asyncio.wait_for``
        internally, and on Python 3.11 that drops a cancellation arriving just as a reply does
        (CPython gh-86296), so one ``cancel()`` may not stop a task that talks to Redis. Tasks
        that close a WebSocket on the way out are cancelled once, so their close can finish.
        """
        tasks = [task for name in names if (task := self._tasks.pop(name, None)) is not None]
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_TIMEOUT
        pending: set[asyncio.Task[None]] = set(tasks)
        for task in pending:
            task.cancel()
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(
                pending, timeout=min(0.1, remaining) if insist else remaining
            )
            if insist:
                for task in pending:
                    task.cancel()
        for task in pending:
            log.error(
                "collector task %s did not stop within %.0f s", task.get_name(), _STOP_TIMEOUT
            )
        for task in tasks:
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    log.error("collector task %s failed while stopping: %r", task.get_name(), exc)
