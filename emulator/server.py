"""The emulator's asyncio server: sockets, tasks and lifecycle around the pure core.

Decisions are made elsewhere: what a client message means and which error it earns
(:mod:`emulator.protocol`), whether a private handshake is allowed (:mod:`emulator.auth`), which
connection is sent which frame (:mod:`emulator.fanout`), how fast the generators run
(:mod:`emulator.pacing`), what a recorded frame looks like in each format
(:mod:`emulator.replay`), what the market and the account do (:mod:`emulator.simulation`,
:mod:`emulator.account`); a connection's queue lives in :mod:`emulator.connection` and the
admin HTTP answers in :mod:`emulator.admin`. This module wires them to ``websockets``:

- one :class:`Emulator` owns the websockets server and three to four background tasks (market
  generator, ``{"status":"UP"}`` ticker, idle reaper, optional private activity), and one replay
  task per subscribed connection in replay mode; :meth:`Emulator.aclose` cancels and awaits them;
- the handshake (routing of plain HTTP paths, refusals, connect rate limit, private auth), the
  request loop of each connection (message rate limit, errors and their close, subscribe, list)
  and the faults a test injects;
- the fan-out queues frames on the connections; this module writes them, flushed once per
  batch (one ``transport.write`` per connection per batch). That buffer is the connection's
  outgoing queue. Policy: in paced mode a connection whose buffer exceeds ``max_buffer`` bytes is
  dropped abruptly (counted as ``slow_consumer_drops``), like an exchange drops a slow reader; in
  firehose mode (``rate=0``) the generator waits for the buffer to drain instead, and drops the
  connection only when it stays full for ``slow_timeout`` seconds.

Logging policy: INFO for start/stop, WARNING for dropped slow consumers, DEBUG per connection;
never a token or a key.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response

from upbit_fanout.emulator._log import log
from upbit_fanout.emulator.account import Account, PrivateEvent
from upbit_fanout.emulator.admin import admin_response, json_response
from upbit_fanout.emulator.auth import AuthError, NonceMemory, verify_authorization
from upbit_fanout.emulator.connection import EmulatorConnection, Socket
from upbit_fanout.emulator.fanout import Fanout, snapshot_frames
from upbit_fanout.emulator.markets import Market, default_markets
from upbit_fanout.emulator.pacing import Pacer
from upbit_fanout.emulator.protocol import (
    STATUS_UP,
    ConnectionSubscription,
    ConnectLimiter,
    ListRequest,
    Ping,
    RequestError,
    SlidingWindow,
    Stream,
    SubscribeRequest,
    compile_subscription,
    error_frame,
    parse_request,
    render_list_subscriptions,
    without_code,
)
from upbit_fanout.emulator.quotation import QUOTATION_PER_SECOND, QuotationApi
from upbit_fanout.emulator.replay import ReplayFrame, load_replay, replay_codes
from upbit_fanout.emulator.rest import RestApi
from upbit_fanout.emulator.routes import (
    MARKET_ALL_PATH,  # noqa: F401 - importable from here too
    HttpRoutes,
)
from upbit_fanout.emulator.simulation import (
    TRADE_ROW,
    MarketSimulator,
    RowEvent,
)
from upbit_fanout.emulator.tls import TestCertificates, make_certificates
from upbit_fanout.subscriptions.clock import now_ms
from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.jsontext import dumps_exact
from upbit_fanout.subscriptions.redact import redacting_logger
from upbit_fanout.subscriptions.tasks import TaskOwner, stop_tasks

__all__ = ["DEFAULT_RATE", "Emulator", "EmulatorConnection", "EmulatorCrashError", "Received"]


DEFAULT_RATE: Final = 1000.0
"""Simulated market events per second across all subscribed markets (rate=0: firehose)."""

PUBLIC_PATH: Final = "/websocket/v1"
PRIVATE_PATH: Final = "/websocket/v1/private"
ADMIN_PREFIX: Final = "/_emulator/"

_DEFLATE: Final = ServerPerMessageDeflateFactory(
    server_max_window_bits=12,
    client_max_window_bits=12,
    compress_settings={"memLevel": 5, "level": 1},
)


@dataclass(frozen=True, slots=True)
class Received:
    """One message a client sent, as the emulator saw it (``Emulator.received``)."""

    connection_id: int
    monotonic: float
    wall: float
    raw: str | bytes
    request: SubscribeRequest | ListRequest | Ping | None
    """The parsed request; None when it earned an error."""
    error: str | None
    """The error name sent back (``NO_TICKET``, ``TOO_MANY_REQUESTS``, ...), else None."""


class EmulatorCrashError(UpbitFanoutError, RuntimeError):
    """A background task of the emulator crashed; raised by :meth:`Emulator.aclose`."""


class Emulator:
    """A local Upbit: ``/websocket/v1``, ``/websocket/v1/private``, ``GET /v1/market/all``.

    Use it as an async context manager (``async with Emulator(port=0, seed=1) as emu:``); it
    listens on a free loopback port when ``port=0``. See docs/emulator.md for every behaviour and
    every choice made where Upbit's behaviour is unknown.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        rate: float = DEFAULT_RATE,
        replay: str | Path | None = None,
        replay_loop: bool = False,
        access_key: str | None = None,
        secret_key: str | None = None,
        idle_timeout: float = 120.0,
        status_interval: float = 10.0,
        connect_limit_per_s: int = 5,
        messages_per_s: int = 5,
        messages_per_min: int = 100,
        markets: Sequence[Market] | None = None,
        error_close_delay: float = 0.15,
        private_activity: float = 0.0,
        max_buffer: int = 16 * 2**20,
        write_limit: int = 2**20,
        slow_timeout: float = 10.0,
        compression: str | None = "deflate",
        admin: bool = True,
        received_limit: int = 10_000,
        nonce_memory: int = 100_000,
        tls: bool = False,
        rest_per_second: int = 30,
        quotation_per_second: int = QUOTATION_PER_SECOND,
        trading: Sequence[str] = (),
        trading_tape: int = 10_000,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0 (0 means as fast as possible)")
        if compression not in ("deflate", None):
            raise ValueError("compression must be 'deflate' or None")
        self.host = host
        self.port = port
        self.seed = seed
        self.rate = rate
        self.replay_loop = replay_loop
        self.idle_timeout = idle_timeout
        self.status_interval = status_interval
        self.messages_per_s = messages_per_s
        self.messages_per_min = messages_per_min
        self.error_close_delay = error_close_delay
        self.private_activity = private_activity
        self.max_buffer = max_buffer
        self.write_limit = write_limit
        self.slow_timeout = slow_timeout
        self.compression = compression
        self.admin = admin
        self._access_key = access_key
        self._secret_key = secret_key
        self._nonces = NonceMemory(nonce_memory)
        self.rest_per_second = rest_per_second
        self._routes: HttpRoutes | None = None
        self._quotation = QuotationApi(lambda: self.simulator, per_second=quotation_per_second)
        self._trading: frozenset[str] = frozenset(trading)
        """Markets that trade whether or not anyone watches (as Upbit's do); their last
        ``trading_tape`` trades are remembered for ``GET /v1/trades/ticks`` (other markets:
        only the last one)."""
        self._trading_tape = trading_tape
        self._connect_limiter = ConnectLimiter(connect_limit_per_s)

        self.markets: tuple[Market, ...] = tuple(markets) if markets else default_markets()
        self._replay_frames: list[ReplayFrame] | None = None
        known = {market.code for market in self.markets}
        if replay is not None:
            self._replay_frames = load_replay(replay)
            known |= replay_codes(self._replay_frames)
        self._known: frozenset[str] = frozenset(known)
        unknown = sorted(self._trading - {market.code for market in self.markets})
        if unknown:
            raise ValueError(f"trading names markets the emulator does not list: {unknown}")

        self.received: deque[Received] = deque(maxlen=received_limit)
        """Every client message (the last ``received_limit`` of them), oldest first."""
        self.received_total = 0
        self.counters: Counter[str] = Counter()
        """Lifetime counters: connections, frames, errors by name, limits hit, drops..."""

        self._clients: dict[int, EmulatorConnection] = {}
        self._ids = itertools.count(1)
        self._fanout: Fanout[EmulatorConnection] = Fanout(book_at=self._book_at)
        self._order_codes: set[str] = set()
        self._orders_placed = False
        self._sim: MarketSimulator | None = None
        self._account: Account | None = None
        self._server: Server | None = None
        self._tasks = TaskOwner("emulator", on_crash=self._crashed)
        self._crash: tuple[str, BaseException] | None = None
        self._running = asyncio.Event()
        self._running.set()
        self._codes_changed = asyncio.Event()
        self._rx_event = asyncio.Event()
        self._conn_event = asyncio.Event()
        self._resume_handle: asyncio.TimerHandle | None = None
        self._refuse_until = 0.0
        self._drop_codes: deque[str | None] = deque()
        self._seed = seed
        self.certificates: TestCertificates | None = make_certificates() if tls else None
        """With ``tls=True``: the server's context and the authority's PEM (``write_ca``)."""

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Listen, create the market and the account, start the background tasks."""
        if self._server is not None:
            raise RuntimeError("the emulator is already started")
        self._sim = MarketSimulator(self.markets, seed=self._seed, now_ms=now_ms())
        for code in self._trading:
            self._sim.keep_trades(code, self._trading_tape)
        self._account = Account(seed=self._seed)
        rest = RestApi(
            self._account,
            access_key=self._access_key,
            secret_key=self._secret_key,
            nonces=self._nonces,
            per_second=self.rest_per_second,
        )
        self._routes = HttpRoutes(
            markets=self.markets,
            known=self._known,
            rest=rest,
            quotation=self._quotation,
            counters=self.counters,
        )
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=Socket,
            # websockets' default deflate settings, at zlib level 1: ~20% less CPU per frame
            extensions=[_DEFLATE] if self.compression == "deflate" else None,
            compression=None,
            ping_interval=None,  # Upbit sends no pings (docs/upbit-protocol.md §5)
            write_limit=(self.write_limit, self.write_limit // 4),
            max_size=2**20,
            logger=redacting_logger("emulator.websockets"),
            ssl=self.certificates.server_context if self.certificates else None,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if self._trading:
            self._rebuild_index()  # those markets trade from the start
        self._spawn(self._status_loop(), "status")
        self._spawn(self._idle_loop(), "idle")
        if self._replay_frames is None:
            self._spawn(self._market_loop(), "market")
        if self.private_activity > 0:
            self._spawn(self._activity_loop(), "activity")
        mode = "replay" if self._replay_frames is not None else "simulated"
        log.info("emulator listening on %s (%s, rate %s/s)", self.base_url, mode, self.rate)

    async def aclose(self, *, within: float = 10.0) -> None:
        """Stop: cancel and await every task, close every connection (1001), at most ``within``
        seconds in all.

        Raises :class:`EmulatorCrashError` (from the first crash, traceback included) when a
        background task crashed while the emulator ran: a test then fails with the crash, not
        with a time-out somewhere else.
        """
        if self._server is None:
            return
        self.resume()
        self._refuse_until = 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        await self._tasks.close(within=within / 2)
        self._server.close()
        try:
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                await self._server.wait_closed()
        except TimeoutError:
            log.error("emulator connections did not close within %.1f s", within)
        self._server = None
        log.info("emulator stopped")
        crash, self._crash = self._crash, None
        if crash is not None:
            name, exc = crash
            raise EmulatorCrashError(f"emulator task {name} crashed: {exc!r}") from exc

    def _book_at(self, stream: Stream, stamp: int) -> Mapping[str, Any]:
        """The fan-out's orderbooks at a price level: cut from the simulated book."""
        return self.simulator.orderbook(
            stream.code, now_ms=stamp, depth=stream.depth, level=stream.level
        )

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(name, coro)

    def _crashed(self, name: str, exc: BaseException) -> None:
        log.error("emulator task %s crashed", name, exc_info=exc)
        if self._crash is None:
            self._crash = (name, exc)

    # --- addresses and introspection -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``ws://127.0.0.1:PORT``, or ``wss://`` with TLS (what the CLI prints first)."""
        scheme = "wss" if self.certificates else "ws"
        return f"{scheme}://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def public_url(self) -> str:
        return self.base_url + PUBLIC_PATH

    @property
    def private_url(self) -> str:
        return self.base_url + PRIVATE_PATH

    @property
    def http_url(self) -> str:
        scheme = "https" if self.certificates else "http"
        return f"{scheme}://{self._url_host}:{self.port}"

    @property
    def frames_sent(self) -> int:
        """Frames written to clients since start (all connections, all kinds)."""
        return self._fanout.frames_sent

    @property
    def connections(self) -> tuple[EmulatorConnection, ...]:
        """Open connections, oldest first."""
        return tuple(self._clients.values())

    def subscriptions(self) -> dict[int, ConnectionSubscription | None]:
        """The current subscription of each open connection, by connection id."""
        return {cid: client.subscription for cid, client in self._clients.items()}

    @property
    def simulator(self) -> MarketSimulator:
        if self._sim is None:
            raise RuntimeError("the emulator is not started")
        return self._sim

    @property
    def account(self) -> Account:
        if self._account is None:
            raise RuntimeError("the emulator is not started")
        return self._account

    @property
    def known_codes(self) -> frozenset[str]:
        """Markets served (the default universe, plus the replay file's codes in replay mode)."""
        return self._known

    async def wait_received(self, count: int, *, within: float = 5.0) -> list[Received]:
        """Wait until ``count`` client messages were received in total; return the records."""
        async with asyncio.timeout(within):
            while self.received_total < count:
                self._rx_event.clear()
                await self._rx_event.wait()
        return list(self.received)

    async def wait_connections(self, count: int, *, within: float = 5.0) -> None:
        """Wait until exactly ``count`` connections are open."""
        async with asyncio.timeout(within):
            while len(self._clients) != count:
                self._conn_event.clear()
                await self._conn_event.wait()

    def state(self) -> dict[str, Any]:
        """What ``GET /_emulator/state`` answers: connections, subscriptions and counters."""
        return {
            "base_url": self.base_url,
            "mode": "replay" if self._replay_frames is not None else "simulated",
            "rate": self.rate,
            "stalled": not self._running.is_set(),
            "refusing": self._refusing(),
            "received_total": self.received_total,
            "frames_sent": self.frames_sent,
            "connections": [
                {
                    "id": c.id,
                    "private": c.private,
                    "remote": c.remote,
                    "format": c.format.value,
                    "ticket": c.subscription.ticket if c.subscription else None,
                    "subscription": list(c.subscription.listing) if c.subscription else None,
                    "status_up": c.status_up,
                    "frames_sent": c.frames_sent,
                    "snapshots_sent": c.snapshots_sent,
                    "replay_lines": c.replay_lines,
                    "replay_done": c.replay_done.is_set(),
                }
                for c in self._clients.values()
            ],
            "counters": dict(sorted(self.counters.items())),
        }

    # --- fault injection -----------------------------------------------------------------------

    async def drop_all(self) -> int:
        """Abort every connection: no close frame, the client sees 1006. Returns how many."""
        clients = list(self._clients.values())
        for client in clients:
            self._abort(client, "drops")
        await asyncio.sleep(0)
        return len(clients)

    def stall(self, seconds: float | None = None) -> None:
        """Freeze: sockets stay open but nothing is sent or read (pings go unanswered) and new
        handshakes wait, until :meth:`resume` (or after ``seconds``)."""
        self.counters["stalls"] += 1
        self._running.clear()
        for client in self._clients.values():
            client.pause_reading()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        if seconds is not None:
            self._resume_handle = asyncio.get_running_loop().call_later(seconds, self.resume)

    def resume(self) -> None:
        """End a :meth:`stall`."""
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        if self._running.is_set():
            return
        self._running.set()
        for client in self._clients.values():
            client.resume_reading()

    @property
    def stalled(self) -> bool:
        return not self._running.is_set()

    async def send_malformed(self, data: bytes = b'\x00{"type":"tick') -> int:
        """Send one binary frame of garbage (not JSON) to every connection; returns how many."""
        count = 0
        for client in list(self._clients.values()):
            if self._fanout.push(client, data):
                count += 1
        self._flush()
        self.counters["malformed_sent"] += count
        await asyncio.sleep(0)
        return count

    def refuse_connections(self, seconds: float) -> None:
        """Refuse new WebSocket handshakes with HTTP 503 for ``seconds`` (0 ends it)."""
        self._refuse_until = asyncio.get_running_loop().time() + max(0.0, seconds)

    def drop_code(self, code: str | None = None) -> None:
        """Apply the next subscribe request (of any connection) without one of its codes: not
        served, not snapshotted, not in LIST_SUBSCRIPTIONS, as if Upbit had applied the request
        in part. ``code`` names it (without a depth suffix); without one, the last code of the
        request's first type object with codes. Each call arms one more request."""
        self._drop_codes.append(code)

    def _refusing(self) -> bool:
        return self._refuse_until > asyncio.get_running_loop().time()

    # --- driving the market and the account ----------------------------------------------------

    async def inject(self, payload: Mapping[str, Any] | Sequence[Any] | bytes | str) -> int:
        """Deliver one frame payload to the connections whose subscription matches it.

        A dict or list is written with exact numbers (Decimal and RawNumber verbatim). Matching
        and format conversion are those of replay mode. A payload that is not a data frame
        (error, status, anything without a type and code, or not JSON) is sent as it is to
        every connection. Returns how many connections got it.
        """
        if isinstance(payload, (bytes, bytearray)):
            raw = bytes(payload)
        elif isinstance(payload, str):
            raw = payload.encode("utf-8")
        else:
            raw = dumps_exact(payload)
        await self._running.wait()
        try:
            frame = ReplayFrame.parse(raw)
        except ValueError:
            frame = None
        count = 0
        for client in list(self._clients.values()):
            if frame is None:
                count += self._fanout.push(client, raw)
                continue
            if self._fanout.offer(frame, client):
                count += 1
        self._flush()
        self.counters["injected"] += 1
        return count

    def place_order(
        self,
        *,
        code: str,
        side: str,
        ord_type: str,
        price: Decimal | str | None = None,
        volume: Decimal | str | None = None,
        identifier: str | None = None,
        time_in_force: str | None = None,
    ) -> str:
        """Place an order on the emulated account; its myOrder/myAsset events go to private
        subscribers at once, and resting limit orders fill as the simulated market trades.
        Raises :class:`emulator.account.OrderRejected`. Returns the order's uuid."""
        sim, account = self.simulator, self.account
        uuid, events = account.place_order(
            code=code,
            side=side,
            ord_type=ord_type,
            now_ms=now_ms(),
            market_price=sim.last_price(code),
            price=None if price is None else Decimal(price),
            volume=None if volume is None else Decimal(volume),
            identifier=identifier,
            time_in_force=time_in_force,
        )
        self._orders_placed = True
        self._dispatch_private(events)
        self._flush()
        return uuid

    def cancel_order(self, uuid: str) -> None:
        """Cancel an open order; its events go to private subscribers."""
        self._dispatch_private(self.account.cancel_order(uuid, now_ms=now_ms()))
        self._flush()

    # --- HTTP side of the handshake ------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        path = path.rstrip("/") or "/"
        if self.admin and path.startswith(ADMIN_PREFIX.rstrip("/")):
            self.counters["admin_requests"] += 1
            return await admin_response(
                self, path[len(ADMIN_PREFIX) :], parse_qs(query), request.method
            )
        remote = ws.remote_address
        address = str(remote[0]) if remote else "?"
        loop = asyncio.get_running_loop()
        if self._routes is not None:
            answer = self._routes.answer(
                path,
                query,
                authorization=request.headers.get("Authorization"),
                address=address,
                now=loop.time(),
                now_ms=now_ms(),
            )
            if answer is not None:
                return answer
        if path not in (PUBLIC_PATH, PRIVATE_PATH):
            return json_response(http.HTTPStatus.NOT_FOUND, error_frame("NOT_FOUND", "Not Found"))
        if self._refusing():
            self.counters["refused_connections"] += 1
            return json_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                error_frame("SERVICE_UNAVAILABLE", "Service Unavailable"),
            )
        if not self._connect_limiter.try_acquire(address, loop.time()):
            self.counters["rate_limited_connects"] += 1
            return json_response(
                http.HTTPStatus.TOO_MANY_REQUESTS, error_frame("TOO_MANY_REQUESTS")
            )
        if path == PRIVATE_PATH:
            try:
                verify_authorization(
                    request.headers.get("Authorization"),
                    access_key=self._access_key,
                    secret_key=self._secret_key,
                    nonces=self._nonces,
                )
            except AuthError as exc:
                self.counters["auth_failures"] += 1
                log.info("refused a private connection from %s: %s", address, exc.reason)
                return json_response(http.HTTPStatus.UNAUTHORIZED, error_frame("INVALID_AUTH"))
            assert isinstance(ws, Socket)
            ws.private = True
        await self._running.wait()
        return None

    def trade_record(self, code: str) -> list[dict[str, Any]]:
        """The emulator's own record of ``code``'s trades, oldest first (the latest 10,000 of a
        ``trading`` market, the last one of any other): ``sequential_id``, ``timestamp``, price
        and volume text."""
        return [
            {"sequential_id": row[11], "timestamp": row[4], "price": row[5], "volume": row[6]}
            for row in self.simulator.trades(code)
        ]

    def _process_response(
        self, ws: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
            remote = ws.remote_address
            address = str(remote[0]) if remote else "?"
            left = self._connect_limiter.remaining(address, asyncio.get_running_loop().time())
            # As observed on Upbit's 101 (§6); ``min`` is deprecated there, we mirror its value.
            response.headers["Remaining-Req"] = f"group=websocket; min=300; sec={left}"
        return None

    # --- connections ---------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, Socket)
        window = SlidingWindow([(self.messages_per_s, 1.0), (self.messages_per_min, 60.0)])
        client = EmulatorConnection(next(self._ids), ws, messages=window)
        self._clients[client.id] = client
        self._conn_event.set()
        self.counters["connections"] += 1
        if client.private:
            self.counters["private_connections"] += 1
        if not self._running.is_set():
            client.pause_reading()
        log.debug("connection %d opened from %s", client.id, client.remote)
        try:
            while True:
                try:
                    message = await ws.recv()
                except ConnectionClosed:
                    break
                await self._running.wait()
                if not await self._on_message(client, message):
                    break
        finally:
            await self._forget(client)
            log.debug("connection %d closed", client.id)

    async def _forget(self, client: EmulatorConnection) -> None:
        client.closing = True
        self._clients.pop(client.id, None)
        self._conn_event.set()
        task, client.replay_task = client.replay_task, None
        if task is not None:
            await stop_tasks([task], within=5.0)
        if client.subscription is not None:
            client.subscription = None
            self._rebuild_index()

    async def _on_message(self, client: EmulatorConnection, message: str | bytes) -> bool:
        """Handle one client message; False when the connection must now close."""
        loop = asyncio.get_running_loop()
        try:
            request = parse_request(message, private=client.private)
            if not isinstance(request, Ping) and not client.messages.try_acquire(loop.time()):
                self.counters["rate_limited_messages"] += 1
                raise RequestError("TOO_MANY_REQUESTS")
        except RequestError as exc:
            self._record(client, message, None, exc.name)
            return await self._fail(client, exc)
        self._record(client, message, request, None)
        if isinstance(request, Ping):
            client.status_up = True
        elif isinstance(request, ListRequest):
            if request.format is not None:
                client.format = request.format
            listing = client.subscription.listing if client.subscription else ()
            self._fanout.push(
                client, render_list_subscriptions(listing, request.ticket, client.format)
            )
            self._flush()
        else:
            if self._drop_codes:
                request, taken = without_code(request, self._drop_codes.popleft())
                if taken is not None:
                    self.counters["codes_dropped"] += 1
                    log.debug("connection %d: dropped %s from a request", client.id, taken)
            self._subscribe(client, request)
        return True

    def _record(
        self,
        client: EmulatorConnection,
        raw: str | bytes,
        request: SubscribeRequest | ListRequest | Ping | None,
        error: str | None,
    ) -> None:
        self.received.append(
            Received(client.id, time.monotonic(), time.time(), raw, request, error)
        )
        self.received_total += 1
        self.counters["messages_received"] += 1
        self._rx_event.set()

    async def _fail(self, client: EmulatorConnection, error: RequestError) -> bool:
        """Error frame, nothing else, then close 1000 after ``error_close_delay`` (§7)."""
        self.counters[f"error:{error.name}"] += 1
        self._fanout.push(client, error.frame())
        self._flush()
        client.closing = True
        if client.subscription is not None:
            client.subscription = None
            self._rebuild_index()
        await asyncio.sleep(self.error_close_delay)
        return False  # the handler returns; websockets closes with 1000

    def _subscribe(self, client: EmulatorConnection, request: SubscribeRequest) -> None:
        subscription = compile_subscription(request, is_known=self._known.__contains__)
        client.subscription = subscription
        client.format = subscription.format
        self.counters["subscriptions"] += 1
        self._rebuild_index()
        if self._replay_frames is not None:
            if client.replay_task is None:
                client.replay_task = self._tasks.spawn(
                    f"replay-{client.id}", self._replay_to(client)
                )
            return
        sim = self.simulator
        stamp = now_ms()

        def snapshot(stream: Stream) -> dict[str, Any] | None:
            depth = stream.depth or 30
            return sim.snapshot(
                stream.type, stream.code, now_ms=stamp, depth=depth, level=stream.level
            )

        for data in snapshot_frames(subscription, snapshot):
            if self._fanout.push(client, data):
                client.snapshots_sent += 1
                self.counters["snapshots_sent"] += 1
        self._flush()

    def _rebuild_index(self) -> None:
        always = self._order_codes | self._trading
        if self._fanout.rebuild(self._clients.values(), always=always):
            self._codes_changed.set()

    # --- writing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the fan-out queued (one write per connection); apply the queue policy."""
        for client in self._fanout.take_dirty():
            try:
                buffered = client.flush()
            except Exception:  # the transport failed under us: treat it as lost
                log.debug("write to connection %d failed", client.id, exc_info=True)
                self._abort(client, "write_failures")
                continue
            if self.rate > 0 and buffered > self.max_buffer:
                log.warning(
                    "dropping slow connection %d from %s: more than %d bytes queued",
                    client.id,
                    client.remote,
                    self.max_buffer,
                )
                self._abort(client, "slow_consumer_drops")

    def _abort(self, client: EmulatorConnection, counter: str) -> None:
        """Close abruptly (no close frame: the client sees 1006) and count why."""
        self.counters[counter] += 1
        client.abort()

    async def _drain(self, clients: Iterable[EmulatorConnection]) -> None:
        """Firehose back-pressure: wait until each connection's buffer is below the limit."""
        for client in clients:
            if not client.backlogged:
                continue
            self.counters["firehose_waits"] += 1
            try:
                async with asyncio.timeout(self.slow_timeout):
                    await client.drain()
            except TimeoutError:
                log.warning(
                    "dropping connection %d: no progress for %.0f s", client.id, self.slow_timeout
                )
                self._abort(client, "slow_consumer_drops")
            except (ConnectionError, OSError):
                pass

    # --- market events -------------------------------------------------------------------------

    def _dispatch_private(self, events: Iterable[PrivateEvent]) -> None:
        self._track_open_orders()
        self._fanout.deliver_private(events)

    def _track_open_orders(self) -> None:
        """Markets with resting orders keep trading (so the orders can fill), watched or not."""
        if self._account is None or not self._orders_placed:
            return
        codes = {self._account.order(uuid)["code"] for uuid in self._account.open_orders()}
        if codes != self._order_codes:
            self._order_codes = codes
            self._rebuild_index()

    async def _market_loop(self) -> None:
        """Generate events for the subscribed markets at ``rate`` per second (0: firehose)."""
        loop = asyncio.get_running_loop()
        sim = self.simulator
        pacer = Pacer(self.rate, loop.time())
        firehose = pacer.firehose
        while True:
            await self._running.wait()
            codes = self._fanout.generated_codes
            if not codes:
                self._codes_changed.clear()
                await self._codes_changed.wait()
                pacer.restart(loop.time())
                continue
            if not firehose:
                await asyncio.sleep(pacer.delay(loop.time()))
                if not self._running.is_set():
                    continue
            count = pacer.take(loop.time())
            if count == 0:
                continue
            events = sim.next_rows(
                codes, now_ms=now_ms(), max_events=count, types=self._fanout.generated_types
            )
            self._deliver(events)
            self.counters["events_generated"] += len(events)
            if firehose:
                await self._drain(list(self._clients.values()))
                await asyncio.sleep(0)

    def _deliver(self, events: Sequence[RowEvent]) -> None:
        """A generated batch: to the subscribers, then to the account (fills), then written."""
        account = self._account if self._order_codes else None
        self._fanout.deliver(events)
        if account is not None:
            private: list[PrivateEvent] = []
            for type_, code, payload in events:
                if type_ != "trade":
                    continue
                trade = TRADE_ROW.payload(payload) if isinstance(payload, tuple) else payload
                private.extend(
                    account.on_trade(
                        code,
                        trade["trade_price"],
                        trade["trade_volume"],
                        now_ms=int(trade.get("trade_timestamp") or now_ms()),
                    )
                )
            if private:
                self._dispatch_private(private)
        self._flush()

    async def _activity_loop(self) -> None:
        """``private_activity``: random orders on the account every so many seconds."""
        sim, account = self.simulator, self.account
        while True:
            await asyncio.sleep(self.private_activity)
            await self._running.wait()
            codes = sorted(self._fanout.watched_codes) or ["KRW-BTC"]
            prices = {code: sim.last_price(code) for code in codes}
            events = account.random_activity(codes, prices, now_ms=now_ms())
            if events:
                self._orders_placed = True
                self._dispatch_private(events)
                self._flush()

    # --- replay --------------------------------------------------------------------------------

    async def _replay_to(self, client: EmulatorConnection) -> None:
        """Offer every line of the file, in order, to one connection (from its first subscribe).

        Each line is matched against the connection's subscription *when the line is reached*.
        Paced at ``rate`` lines per second, or as fast as the connection reads (rate=0).
        """
        frames = self._replay_frames or []
        loop = asyncio.get_running_loop()
        pacer = Pacer(self.rate, loop.time())
        firehose = pacer.firehose
        position = 0
        while position < len(frames) or (self.replay_loop and frames):
            if position >= len(frames):
                position = 0
            await self._running.wait()
            count = pacer.take(loop.time())
            if count == 0:
                await asyncio.sleep(pacer.delay(loop.time()))
                continue
            for frame in frames[position : position + count]:
                client.replay_frames += self._fanout.offer(frame, client)
            done = min(len(frames), position + count) - position
            position += done
            client.replay_lines += done
            self._flush()
            if firehose:
                await self._drain([client])
            await asyncio.sleep(0)
        client.replay_done.set()

    # --- timers --------------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        """``{"status":"UP"}`` every ``status_interval`` s to connections that sent ``PING``."""
        while True:
            await asyncio.sleep(self.status_interval)
            await self._running.wait()
            for client in list(self._clients.values()):
                if client.status_up and not client.closing:
                    self._fanout.push(client, STATUS_UP)
            self._flush()

    async def _idle_loop(self) -> None:
        """Abort connections with no traffic either way for ``idle_timeout`` s (§5: 1006)."""
        period = max(0.01, min(1.0, self.idle_timeout / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            if not self._running.is_set():
                continue
            deadline = loop.time() - self.idle_timeout
            for client in list(self._clients.values()):
                if client.ws.last_activity < deadline and not client.closing:
                    log.debug("connection %d idle for %.0f s", client.id, self.idle_timeout)
                    self._abort(client, "idle_closes")
