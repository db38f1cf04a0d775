"""One upstream connection's life: connect, send the subscription, read, reconnect. Forever.

:class:`Upstream` is deliberately thin; its decisions are pure helpers tested from tables
(:class:`collector.sendplan.SendPlanner`: what to send, check, park or close, and when;
:func:`classify_connect_error`, :func:`is_rate_limit_error`, :class:`collector.budget.RateBudget`,
:func:`subscriptions.backoff.backoff`). The send loop asks the planner with the time and performs
its answer.

Life of a connection
    Nothing wanted -> no socket (state ``idle``). Something wanted -> wait for the shared connect
    budget (5 new connections per second, docs/upbit-protocol.md §6), connect (through the
    chosen :mod:`collector.transport`: websockets by default, or picows) with protocol pings
    (``ping_interval``/``ping_timeout``: a missed pong closes the socket; a quiet market never
    does, there is no "no data for N s" timer), no Origin header (§6), a ``max_size`` large enough
    for big frames, and ``read_coalesce`` (a busy socket's reading rests that long after a read,
    :mod:`subscriptions.coalesce`; 0: off). Then a reader task decodes and routes every frame
    into the bounded outbox while the sender keeps the socket's subscription equal to the desired
    one:

    - a change never sends at once: after ``coalesce`` seconds, and only when the per-connection
      budget allows (5/s and 100/min, sliding windows), ONE message carrying the LATEST desired
      state is sent; there is never more than one pending send, and nothing is sent when the
      desired state equals what the socket already carries;
    - each message asks for snapshots only for the streams new to the socket: codes it already
      streams go in an ``is_only_realtime`` object
      (:func:`subscriptions.reconcile.request_entries`); after a reconnect all is new again;
    - after a send, once ``verify_delay`` passed with nothing else to send and the budget keeps a
      message free for a real subscribe, a LIST_SUBSCRIPTIONS request (in the socket's own
      format) checks what Upbit applied (docs/upbit-protocol.md §2.7). A difference is counted
      (``subscription_mismatches``), published as a ``subscription_mismatch`` notice, logged
      (rate-limited WARNING), and the subscription is re-sent, the missing streams with their
      snapshot; repeated differences wait longer each time (1, 2, 4 ... s, at most
      :data:`MAX_RESEND_WAIT`) so that a code Upbit keeps refusing cannot eat the budget;
    - when the desired state becomes empty the socket is kept open ``warm_seconds`` (a warm
      socket: the next subscribe costs no handshake), its subscription replaced by the
      cheapest one (:func:`subscriptions.reconcile.parking_message`: one ticker snapshot, then
      silence; Upbit has no unsubscribe, §3), then closed; the connection is ``idle``
      meanwhile, and until something is wanted again.

Failures
    A lost socket, a refused or failed handshake (HTTP 429/401/503, connection refused, timeout):
    retry forever after a capped, fully jittered exponential backoff, which restarts once a
    connection stayed up :data:`STABLE_AFTER` seconds. Ordinary failures (refused, reset, 503,
    timeouts, a lost socket) are capped at ``backoff_fast_max`` (2 s), so the connection is back
    within a couple of seconds of the upstream; rate limiting (HTTP 429/418, or a socket lost
    right after a rate-limit error frame) backs off up to ``backoff_max`` (:func:`retry_class`).
    HTTP 401/403 (the keys are refused) is logged at ERROR once per streak and retried at the
    slow end of the backoff. After a reconnect
    the whole subscription is re-sent (the router is told ``fresh_connection=True``) and a ``gap``
    notice says events may have been missed. An error frame from Upbit is logged, counted and
    published as an ``error`` notice; a rate-limit error halves the send budget for a while.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Literal

import orjson
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from upbit_fanout.collector._log import log
from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.decode import InvalidEvent, decode_frame_report
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.routing import Outgoing, Router
from upbit_fanout.collector.sendplan import (
    MAX_RESEND_WAIT,
    Close,
    Park,
    Retopic,
    Reuse,
    Send,
    SendPlanner,
    Verify,
    Wait,
    Warm,
)
from upbit_fanout.collector.status import LogLimiter, State, Status, now_ms
from upbit_fanout.collector.transport import (
    ConnectOptions,
    HandshakeError,
    Transport,
    UpstreamSocket,
    load_transport,
)
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.errors import FrameError, UpstreamError
from upbit_fanout.subscriptions.reconcile import (
    StreamKey,
    Subscription,
    list_message,
    listed_streams,
    parking_message,
)
from upbit_fanout.subscriptions.tasks import stop_tasks
from upbit_fanout.subscriptions.topics import Topic

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_RESEND_WAIT",
    "STABLE_AFTER",
    "ConnectFailure",
    "RetryClass",
    "Upstream",
    "classify_connect_error",
    "is_rate_limit_error",
    "retry_class",
]


MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Largest frame accepted (a LIST_SUBSCRIPTIONS reply for 855 codes is ~10 kB; generous)."""

STABLE_AFTER: Final = 5.0
"""A connection that stayed up this long resets the backoff."""

UPSTREAM_FORMATS: Final = ("DEFAULT", "SIMPLE")
"""Formats the collector can ask Upbit for (docs/upbit-protocol.md §2.5); republished payloads
carry DEFAULT names either way."""

_SHOWN_STREAMS: Final = 10  # streams named in a mismatch notice
_READER_STOP: Final = 5.0  # seconds a stopping reader (or waiter) task is given

ConnectFailure = Literal[
    "auth", "rate_limited", "unavailable", "unreachable", "timeout", "protocol"
]


# -- pure decisions ------------------------------------------------------------------------------
def classify_connect_error(exc: BaseException) -> tuple[ConnectFailure, str]:
    """What a failed connection attempt means, and a description with no secret in it."""
    if isinstance(exc, InvalidStatus):  # websockets' refusal
        return _refused(exc.response.status_code)
    if isinstance(exc, HandshakeError):  # another transport's
        return _refused(exc.status) if exc.status is not None else ("protocol", str(exc))
    if isinstance(exc, TimeoutError):
        return "timeout", "the WebSocket handshake timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "unreachable", "connection refused"
    if isinstance(exc, OSError):
        return "unreachable", f"{type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, InvalidHandshake):
        return "protocol", f"{type(exc).__name__}: {exc}"
    return "protocol", type(exc).__name__


def _refused(code: int) -> tuple[ConnectFailure, str]:
    """What an HTTP status refusing the WebSocket handshake means."""
    if code in (401, 403):
        return "auth", f"HTTP {code}: the Upbit API keys were refused"
    if code in (418, 429):
        return "rate_limited", f"HTTP {code}: too many connections"
    return "unavailable", f"HTTP {code} on the WebSocket handshake"


RetryClass = Literal["fast", "limited", "auth"]


def retry_class(
    kind: ConnectFailure | Literal["lost"], *, rate_limited: bool = False
) -> RetryClass:
    """Which backoff a failure uses: ``fast`` (capped low: the upstream is down or restarting,
    and it should be used again as soon as it is back), ``limited`` (HTTP 429/418, or a loss
    right after a rate-limit error: long waits, or Upbit blocks longer), ``auth`` (keys refused:
    the slow end at once)."""
    if kind == "auth":
        return "auth"
    if kind == "rate_limited" or rate_limited:
        return "limited"
    return "fast"


def is_rate_limit_error(name: str) -> bool:
    """Whether an Upbit error name means "slow down" (``TOO_MANY_REQUESTS``, ``Too Many
    Requests``, ``I'm a teapot``: §6, §7)."""
    normalized = name.upper().replace(" ", "_").replace("'", "")
    return "TOO_MANY" in normalized or "TEAPOT" in normalized or "RATE_LIMIT" in normalized


def new_ticket() -> str:
    """One ticket per connection (a UUID, as the docs suggest, §2.1)."""
    return f"upbit-fanout-{uuid.uuid4()}"


# -- the connection ------------------------------------------------------------------------------
class Upstream:
    """One upstream endpoint (``name`` is ``public`` or ``private``), reconnected forever.

    The service calls :meth:`want` with the desired subscription; :meth:`run` does the rest.
    Read-only attributes for the service: :attr:`state`, :attr:`union` (topics last sent, kept
    across reconnects, emptied when the socket is closed or parked for lack of topics),
    :attr:`ticket`, :attr:`connected`, :attr:`applied` (the streams the socket carries, as far as
    the last send and LIST_SUBSCRIPTIONS check tell), :attr:`warm` (the socket is kept open with
    nothing wanted), :attr:`socket` (the open socket, None between sockets).
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        router: Router,
        outbox: Outbox[Outgoing],
        status: Status,
        budget: RateBudget,
        connect_budget: RateBudget,
        headers: Callable[[], Mapping[str, str]] | None = None,
        ping_interval: float = 15.0,
        ping_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_fast_max: float = 2.0,
        coalesce: float = 0.05,
        close_timeout: float | None = None,
        open_timeout: float = 10.0,
        upstream_format: str = "DEFAULT",
        verify: bool = True,
        verify_delay: float = 1.0,
        warm_seconds: float = 0.0,
        rng: Callable[[], float] | None = None,
        on_change: Callable[[], None] = lambda: None,
        on_gap: Callable[[int, frozenset[Topic]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: str | Transport = "websockets",
        compression: bool = True,
        read_coalesce: float = 0.0,
    ) -> None:
        self.name = name
        self.transport: Transport = (
            load_transport(transport) if isinstance(transport, str) else transport
        )
        """How sockets are opened (:mod:`collector.transport`: ``websockets``, ``picows``)."""
        self._compression = compression
        self._read_coalesce = read_coalesce
        self.url = url
        self.router = router
        self._outbox = outbox
        self._status = status
        self.budget = budget
        self._connect_budget = connect_budget
        self._headers = headers
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._fast_max = max(backoff_initial, min(backoff_fast_max, backoff_max))
        self._rng = rng
        # A peer that does not answer a ping in ping_timeout will not answer a close either.
        self._close_timeout = min(2.0, ping_timeout) if close_timeout is None else close_timeout
        self._open_timeout = open_timeout
        if upstream_format not in UPSTREAM_FORMATS:
            raise ValueError(f"upstream_format must be DEFAULT or SIMPLE, not {upstream_format!r}")
        self.upstream_format = upstream_format
        self.planner = SendPlanner(
            budget,
            coalesce=coalesce,
            verify=verify,
            verify_delay=verify_delay,
            warm_seconds=warm_seconds,
        )
        """The sender's decisions (what to send, check, park, close, and when)."""
        self._on_change = on_change
        self._on_gap = on_gap
        """Called after a ``gap`` notice: (since, the topics live before and after the gap)."""
        self._clock = clock
        self._prefix = "" if name == "public" else f"{name}_"
        self._logs = LogLimiter(10.0)

        self.state = State.IDLE
        self.ticket = ""
        self.connected = asyncio.Event()
        self.connections = 0
        self.socket: UpstreamSocket | None = None
        """The open socket (None between sockets)."""
        self._rests_closed = 0  # read rests of the sockets closed so far
        self._changed = asyncio.Event()
        self._gap_pending = False
        self._gap_since = 0
        self._recovering = False
        self._auth_failing = False
        self._failing_since: float | None = None
        self._rate_limited = False  # a rate-limit error frame arrived on the current socket

    # -- called by the service ------------------------------------------------------------------
    def want(self, subscription: Subscription, topics: frozenset[Topic]) -> None:
        """Set the desired subscription (the topics it serves, for the router)."""
        if self.planner.want(subscription, topics):
            self._changed.set()

    @property
    def desired(self) -> Subscription:
        return self.planner.desired

    @property
    def desired_topics(self) -> frozenset[Topic]:
        return self.planner.desired_topics

    @property
    def sent(self) -> Subscription | None:
        """What the CURRENT socket carries (None: nothing sent on it)."""
        return self.planner.sent

    @property
    def applied(self) -> frozenset[StreamKey]:
        """Streams the CURRENT socket carries (no snapshot asked again for them)."""
        return self.planner.applied

    @property
    def union(self) -> frozenset[Topic]:
        """The topics last sent (``P:union``)."""
        return self.planner.union

    @property
    def warm(self) -> bool:
        """True while the socket is kept open with nothing wanted (a warm socket)."""
        return self.planner.warm

    # -- state ------------------------------------------------------------------------------------
    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self._status.set(**{f"{self._prefix}upstream_state": state.value})
            self._on_change()

    def _field(self, **fields: object) -> None:
        self._status.set(**{f"{self._prefix}{name}": value for name, value in fields.items()})

    # -- the loop ---------------------------------------------------------------------------------
    def _delays(self, retry: RetryClass = "limited") -> Iterator[float]:
        initial, maximum = self._backoff
        if retry == "auth":  # refused keys: no point hurrying
            initial = maximum
        elif retry == "fast":
            maximum = self._fast_max
        if self._rng is None:
            return backoff(initial, maximum)
        return backoff(initial, maximum, rng=self._rng)

    async def run(self) -> None:
        """Keep the socket in step with :meth:`want` until cancelled (closes it on the way out)."""
        retries: dict[RetryClass, Iterator[float]] = {}

        def next_delay(retry: RetryClass) -> float:
            found = retries.get(retry)
            if found is None:
                found = retries[retry] = self._delays(retry)
            return next(found)

        try:
            while True:
                if self.desired.is_empty:
                    self._set_state(State.IDLE)
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                wait = self._connect_budget.delay(self._clock())
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self._connect_budget.record(self._clock())
                if self.state not in (State.RECONNECTING,):
                    self._set_state(State.CONNECTING)
                try:
                    ws = await self._connect()
                except (OSError, TimeoutError, InvalidHandshake, UpstreamError) as exc:
                    if isinstance(exc, InvalidURI):
                        raise
                    kind = self._connect_failed(exc)
                    delay = next_delay(retry_class(kind))
                    self._set_state(State.RECONNECTING)
                    log.info("%s upstream: reconnecting in %.2f s", self.name, delay)
                    await asyncio.sleep(delay)
                    continue
                opened = self._clock()
                outcome = "lost"
                self.socket = ws
                try:
                    outcome = await self._serve(ws)
                finally:
                    self.socket = None
                    self._rests_closed += ws.read_rests
                    self.connected.clear()
                    self.planner.socket_closed()
                    await self._close(ws)
                if outcome == "idle":
                    retries.clear()
                    continue
                if self._clock() - opened >= STABLE_AFTER:
                    retries.clear()
                rate_limited, self._rate_limited = self._rate_limited, False
                delay = next_delay(retry_class("lost", rate_limited=rate_limited))
                self._lost(ws, delay)
                await asyncio.sleep(delay)
        finally:
            self.connected.clear()
            self._set_state(State.STOPPED)

    async def _connect(self) -> UpstreamSocket:
        options = ConnectOptions(
            headers=dict(self._headers()) if self._headers is not None else None,
            open_timeout=self._open_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self._close_timeout,
            max_size=MAX_FRAME_BYTES,
            compression=self._compression,
            read_coalesce=self._read_coalesce,
        )
        ws = await self.transport.connect(
            self.url,
            options,
            self.handle_many,
            lambda: self._field(upstream_alive_at=now_ms()),
        )
        self.connections += 1
        self._rate_limited = False  # about this socket from now on
        if self._recovering:  # after a loss or a failed attempt (not a reopen after idle)
            self._recovering = False
            self._status.count("reconnects")
        if self._failing_since is not None or self._auth_failing:
            log.info("%s upstream: connected to %s again", self.name, self.url)
        else:
            log.info("%s upstream: connected to %s", self.name, self.url)
        self._failing_since = None
        self._auth_failing = False
        self.ticket = new_ticket()
        self._field(ticket=self.ticket, connected_since=now_ms(), upstream=self.url)
        self._status.notice("connected", connection=self.name, upstream=self.url)
        self.connected.set()
        self._set_state(State.CONNECTED)
        return ws

    def _connect_failed(self, exc: BaseException) -> ConnectFailure:
        kind, text = classify_connect_error(exc)
        self._recovering = True
        self._status.set(last_error=f"{self.name} upstream: {text}")
        if kind == "rate_limited":
            self._connect_budget.penalize(self._clock())
        if kind == "auth":
            if not self._auth_failing:
                self._auth_failing = True
                log.error(
                    "%s upstream %s refused the API keys (%s); check UPBIT_FANOUT_ACCESS_KEY and "
                    "UPBIT_FANOUT_SECRET_KEY. Retrying slowly",
                    self.name,
                    self.url,
                    text,
                )
        elif self._failing_since is None:
            self._failing_since = self._clock()
            log.warning("%s upstream %s: cannot connect (%s)", self.name, self.url, text)
        else:
            log.debug("%s upstream %s: cannot connect (%s)", self.name, self.url, text)
        return kind

    def _lost(self, ws: UpstreamSocket, delay: float) -> None:
        code = ws.close_code
        reason = ws.close_reason
        description = f"connection lost (close code {code}{': ' + reason if reason else ''})"
        self._recovering = True
        if self.union and not self._gap_pending:
            self._gap_pending = True
            self._gap_since = now_ms()
        self._status.set(last_error=f"{self.name} upstream: {description}")
        self._status.notice("disconnected", connection=self.name, reason=description)
        self._set_state(State.RECONNECTING)
        log.warning("%s upstream: %s; reconnecting in %.2f s", self.name, description, delay)

    async def _close(self, ws: UpstreamSocket) -> None:
        await ws.close()

    # -- one open socket ------------------------------------------------------------------------
    async def _serve(self, ws: UpstreamSocket) -> Literal["idle", "lost"]:
        reader = asyncio.create_task(ws.read(), name=f"{self.name}-reader")
        try:
            return await self._send_loop(ws, reader)
        finally:
            ws.detach()  # nothing read after this socket's service is routed
            # stop_tasks, not ``cancel(); with suppress(CancelledError): await reader``: that
            # pattern also swallows a cancellation of THIS task arriving during the await.
            await stop_tasks([reader], within=_READER_STOP)
            crash = reader.exception() if reader.done() and not reader.cancelled() else None
            if crash is not None:  # the reader crashed (a bug): as loud as awaiting it was
                raise crash

    async def _wait(
        self, reader: asyncio.Task[None], within: float | None, *, change: bool
    ) -> None:
        """Wait ``within`` s (None: no limit), or until the reader ends (or a want changes)."""
        waiters: set[asyncio.Future[object]] = {reader}  # type: ignore[arg-type]
        changed: asyncio.Task[bool] | None = None
        if change:
            changed = asyncio.create_task(self._changed.wait())
            waiters.add(changed)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if changed is not None:
                await stop_tasks([changed], within=_READER_STOP)

    async def _send_loop(
        self, ws: UpstreamSocket, reader: asyncio.Task[None]
    ) -> Literal["idle", "lost"]:
        """Perform what the planner decides until the socket is lost or closed for lack of
        topics (the decisions: :mod:`upbit_fanout.collector.sendplan`)."""
        plan = self.planner
        plan.socket_opened()
        while not reader.done():
            action = plan.next(self._clock())
            if isinstance(action, Wait):
                if action.wake_on_change:
                    self._changed.clear()  # the planner just saw the latest wanted state
                within = None if action.until is None else max(0.0, action.until - self._clock())
                await self._wait(reader, within, change=action.wake_on_change)
            elif isinstance(action, Send):
                if not await self._send_subscription(ws, action):
                    return "lost"
            elif isinstance(action, Verify):
                if not await self._send_list(ws):
                    return "lost"
            elif isinstance(action, Retopic):
                # Same upstream request, other topics (orderbook:KRW-BTC.5 next to
                # orderbook:KRW-BTC, myOrder:KRW-BTC next to myOrder:*): the router just feeds
                # the new set.
                self.router.set_topics(action.topics, fresh_connection=False)
                self._on_change()
            elif isinstance(action, Warm):
                self._idle(warm=True)
            elif isinstance(action, Park):
                if not await self._send_park(ws, action.last):
                    self._idle()
                    return "idle"
            elif isinstance(action, Reuse):
                log.info("%s upstream: reusing the warm socket", self.name)
            else:
                assert isinstance(action, Close)
                self._idle()
                return "idle"
        if plan.warm:  # lost while kept warm: nothing is wanted, nothing to reconnect for
            self._idle()
            return "idle"
        return "lost"

    async def _send_subscription(self, ws: UpstreamSocket, action: Send) -> bool:
        """Send the desired subscription; False when the socket is gone."""
        subscription, topics, fresh = action.subscription, action.topics, action.fresh
        message = subscription.request(self.ticket, self.upstream_format, action.realtime)
        self.router.set_topics(topics, fresh_connection=fresh)
        if not await ws.send(orjson.dumps(message).decode()):
            return False
        before = self.union
        self.planner.subscribed(action, self._clock())
        self._status.count("sends_total")
        self._status.notice("subscribed", connection=self.name, union_size=len(topics))
        if fresh:
            log.info("%s upstream: subscribed to %d topics", self.name, len(topics))
        elif action.resend:
            log.info("%s upstream: re-sent the subscription (%d topics)", self.name, len(topics))
        else:
            log.debug("%s upstream: resubscribed, %d topics", self.name, len(topics))
        if self._gap_pending:
            self._gap_pending = False
            self._status.notice(
                "gap",
                connection=self.name,
                reason="reconnected to Upbit: events between the disconnect and the new "
                "subscription are missing",
                since=self._gap_since,
            )
            if self._on_gap is not None:
                self._on_gap(self._gap_since, before & topics)
        self._set_state(State.SUBSCRIBED)
        self._on_change()  # the union changed even when the state did not
        return True

    # -- verification (LIST_SUBSCRIPTIONS) ---------------------------------------------------------
    async def _send_list(self, ws: UpstreamSocket) -> bool:
        """Ask which streams the socket carries; False when the socket is gone."""
        request = orjson.dumps(list_message(self.ticket, self.upstream_format)).decode()
        if not await ws.send(request):
            return False
        self.planner.listing_sent(self._clock())
        self._status.count("subscription_checks")
        return True

    def _listed(self, obj: Mapping[str, object] | None) -> None:
        """A LIST_SUBSCRIPTIONS answer arrived: compare it with what it was asked about."""
        streams = None if obj is None else listed_streams(obj.get("result"))
        check = self.planner.listed(streams, self._clock())
        if check is None:
            return  # unasked, or about a subscription replaced since (its own check follows)
        if check.ok:
            self._field(subscription_verified_at=now_ms())
            return
        self._status.count("subscription_mismatches")
        missing = sorted(_stream_text(key) for key in check.missing)
        extra = sorted(_stream_text(key) for key in check.extra)
        self._status.notice(
            "subscription_mismatch",
            connection=self.name,
            missing=missing[:_SHOWN_STREAMS],
            missing_count=len(missing),
            extra=extra[:_SHOWN_STREAMS],
            extra_count=len(extra),
        )
        self._log_limited(
            "mismatch",
            "%s upstream: Upbit applied the subscription in part (%d stream(s) missing, e.g. "
            "%s; %d unexpected); re-sending it",
            self.name,
            len(missing),
            ", ".join(missing[:3]) or "none",
            len(extra),
        )
        self._changed.set()  # the planner scheduled the resend: wake the sender

    # -- the warm socket --------------------------------------------------------------------------
    async def _send_park(self, ws: UpstreamSocket, last: Subscription) -> bool:
        """Replace ``last`` with the cheapest subscription; False when the socket is gone."""
        park = parking_message(last, self.ticket, self.upstream_format)
        if park is not None and not await ws.send(orjson.dumps(park).decode()):
            return False
        self.planner.parked(self._clock())
        return True

    def _idle(self, *, warm: bool = False) -> None:
        if warm:
            log.info(
                "%s upstream: nothing subscribed any more; keeping the socket warm for %g s",
                self.name,
                self.planner.warm_seconds,
            )
        else:
            log.info("%s upstream: nothing subscribed any more; closing the socket", self.name)
        if self.union or not warm:
            self.planner.union = frozenset()
            self.router.set_topics((), fresh_connection=False)
        if warm:
            self._status.notice(
                "idle",
                connection=self.name,
                reason="nothing subscribed",
                warm=self.planner.warm_seconds,
            )
        else:
            self._field(ticket="", connected_since="")
            self._status.notice("disconnected", connection=self.name, reason="nothing subscribed")
        self._set_state(State.IDLE)
        self._on_change()

    # -- reading ----------------------------------------------------------------------------------
    @property
    def read_rests(self) -> int:
        """Times this connection's reading rested to coalesce reads (``read_coalesce``), over
        every socket so far."""
        socket = self.socket
        return self._rests_closed + (socket.read_rests if socket is not None else 0)

    def handle(self, data: str | bytes) -> None:
        """Decode, route and queue one WebSocket message (never raises for bad input)."""
        self.handle_many((data,))

    def handle_many(self, batch: Iterable[str | bytes]) -> None:
        """Decode, route and queue the messages of one socket read, in order (never raises for
        bad input): the per-read bookkeeping (counters, ``last_event_at``, one outbox put) is
        done once for the whole batch."""
        events = 0
        out: list[Outgoing] = []
        received = self._status.received_by_type
        route = self.router.route
        for data in batch:
            try:
                frames, errors = decode_frame_report(data)
            except FrameError as exc:
                self._malformed(exc)
                continue
            for error in errors:  # bad elements of a list frame whose other elements are good
                self._malformed(error)
            for frame in frames:
                if frame.kind == "event":
                    events += 1
                    kind = frame.type or "?"
                    received[kind] = received.get(kind, 0) + 1
                    try:
                        out += route(frame)
                    except Exception as exc:  # one bad event must not cost the connection
                        self._status.count("malformed_frames")
                        self._log_limited(
                            "route", "%s upstream: cannot route a %s event (%r)", self.name,
                            frame.type, exc,
                        )  # fmt: skip
                elif frame.kind == "error":
                    self._error_frame(frame.error or ("UNKNOWN", ""))
                elif frame.kind == "list_subscriptions":  # never an event, never published
                    self._listed(frame.obj)
        if events:
            self._status.count("events_total", events)
            stamp = now_ms()
            self._status.set(last_event_at=stamp)
            if self._prefix:  # the private connection: its own last event too
                self._field(last_event_at=stamp)
        if out:
            self._outbox.put_many(out)

    def _malformed(self, exc: FrameError) -> None:
        """Count a frame (or list element) that is not a valid event; log once per kind."""
        self._status.count("malformed_frames")
        if isinstance(exc, InvalidEvent):
            self._log_limited(
                f"invalid:{exc.kind}",
                "%s upstream: %s (%s); not published",
                self.name,
                exc,
                exc.kind,
            )
        else:
            self._log_limited("malformed", "%s upstream: malformed frame (%s)", self.name, exc)

    def _error_frame(self, error: tuple[str, str]) -> None:
        name, message = error
        self._status.count("upstream_errors")
        self._status.set(last_error=f"{self.name} upstream: {name}: {message}")
        self._status.notice("error", connection=self.name, name=name, message=message)
        self._log_limited(
            f"error:{name}", "%s upstream sent an error: %s: %s", self.name, name, message
        )
        if is_rate_limit_error(name):
            self._rate_limited = True
            self.budget.penalize(self._clock())
            limits = self.budget.limits(self._clock())
            log.warning(
                "%s upstream: rate limited; sending at most %s for a while",
                self.name,
                ", ".join(f"{count}/{seconds:g}s" for count, seconds in limits),
            )

    def _log_limited(self, key: str, msg: str, *args: object) -> None:
        allowed, held = self._logs.allow(key)
        if allowed:
            if held:
                msg += " (%d similar messages suppressed)"
                args = (*args, held)
            log.warning(msg, *args)


def _stream_text(key: StreamKey) -> str:
    """A stream as a notice names it: ``ticker:KRW-BTC``, ``orderbook:KRW-BTC.15@10000``."""
    type_name, code, level = key
    text = type_name if code is None else f"{type_name}:{code}"
    return text if level is None else f"{text}@{level}"
