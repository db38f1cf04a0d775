"""The private side's bookkeeping: gaps in the streams and their reconciliation over REST.

:class:`PrivateRecorder` runs (as the collector's ``recorder`` task) while this collector is the
leader and always-on recording is on. It watches the private upstream's state
(:meth:`PrivateRecorder.observe`, called by the service on every change) and:

- while the private socket is subscribed, writes ``P:private:mark`` (epoch ms) every
  ``mark_interval`` seconds: how far a later leader knows the streams are complete;
- when the socket comes back after being down in this term, puts a **gap entry** ``{from, to}``
  into both streams at once (through the outbox and the publisher, so it is fenced and deduped
  like any entry), and when a term starts (start, takeover) it does the same with ``from`` =
  the later of ``P:private:mark`` and the newest stream entry (nothing if both are missing);
- after each gap, asks the REST exchange API (collector/exchange.py) for the orders of the
  window, each order the stream still shows open that the lists did not return
  (``/v1/order?uuid=``, at most 100), and the balances, and appends what the streams lack as
  ``source=rest`` entries (collector/private_sync.py decides what is missing). The
  publisher's identity check refuses anything the socket delivered meanwhile.

Status fields (``P:status``): ``private_recording``, ``private_down_since`` (epoch ms, empty
while subscribed), ``private_gaps``, ``private_last_gap``, ``private_last_reconcile_at``,
``private_last_reconcile``. A REST refusal is logged once per kind (WARNING) and shown in
``private_last_reconcile``; the next gap tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from redis.asyncio import Redis

from upbit_fanout.collector._log import log
from upbit_fanout.collector.exchange import ExchangeClient, ExchangeError
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.private_sync import (
    STREAM_TYPES,
    asset_event,
    asset_identity,
    changed_currencies,
    closed_windows,
    gap_event,
    gap_identity,
    missing_order_events,
    parse_rest_time,
    unfinished_orders,
)
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.collector.status import Status
from upbit_fanout.subscriptions.clock import now_ms
from upbit_fanout.subscriptions.codec import decode_event, encode_event
from upbit_fanout.subscriptions.connection import REDIS_FAILURES
from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.keys import Keys

__all__ = ["PrivateRecorder"]


_CLOSED_PAGE = 1000
_OPEN_PAGE = 100
_MAX_PAGES = 50  # per window: 50,000 closed orders at most, then the result says "truncated"
_ASSET_SCAN = 1000  # myAsset entries read back to learn the stream's last balances
_ORDER_SCAN = 2000  # myOrder entries read back to find orders the stream still shows open
_MAX_SINGLE = 100  # at most this many per-uuid GET /v1/order per reconciliation


class PrivateRecorder:
    """Gap entries and REST reconciliation for the private streams (one per leadership term)."""

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        outbox: Outbox[Outgoing],
        status: Status,
        exchange: ExchangeClient | None,
        codec: Literal["json", "msgpack"] = "json",
        mark_interval: float = 2.0,
        start_wait: float = 5.0,
        lookback: float = 3600.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._outbox = outbox
        self._status = status
        self._exchange = exchange
        self._codec: Literal["json", "msgpack"] = codec
        self.mark_interval = mark_interval
        self.start_wait = start_wait
        self.lookback_ms = round(lookback * 1000)
        self._clock = clock
        self._up = False
        self._down_since: int | None = None
        self._windows: list[tuple[int, int]] = []
        self._wake = asyncio.Event()
        self._became_up = asyncio.Event()
        self._reported: set[str] = set()
        self.gaps = 0
        self.reconciliations = 0
        self.appended = 0
        self.last_result = ""

    # -- called by the service -----------------------------------------------------------------
    def observe(self, subscribed: bool) -> None:
        """The private upstream is (not) subscribed now. Cheap; never blocks."""
        if subscribed == self._up:
            return
        now = self._clock()
        self._up = subscribed
        if not subscribed:
            self._down_since = now
            self._status.set(private_down_since=now)
            return
        self._status.set(private_down_since="")
        self._became_up.set()
        if self._down_since is not None:
            # a hole inside this term: known exactly here, so written before any new event
            self._gap(self._down_since, now, "private socket reconnected")
            self._down_since = None

    def begin_term(self) -> None:
        """A leadership term starts (before the upstreams): forget the last term's socket."""
        self._up = False
        self._down_since = None
        self._windows = []
        self._became_up.clear()
        self._status.set(private_down_since=self._clock())

    # -- the task ------------------------------------------------------------------------------
    async def run(self) -> None:
        """One leadership term: the start gap, then marks and reconciliations until cancelled."""
        self._status.set(private_recording="on")
        await self._start_of_term()
        while True:
            while self._windows:
                start, end = self._windows.pop(0)
                await self.reconcile(start, end)
            if self._up:
                await self._mark()
            self._wake.clear()
            if self._windows:
                continue
            try:
                async with asyncio.timeout(self.mark_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _start_of_term(self) -> None:
        began = self._clock()
        try:
            async with asyncio.timeout(self.start_wait):
                await self._became_up.wait()
        except TimeoutError:
            pass
        try:
            since = await self._recorded_until()
        except REDIS_FAILURES as exc:
            log.warning("cannot read the private streams' last position (%s)", exc)
            since = None
        now = self._clock()
        if since is None:
            self._windows.append((began - self.lookback_ms, now))  # first run ever: no gap
        else:
            self._gap(min(since, began), now, "collector started or took over")
        if not self._up:
            self._down_since = now  # the socket's own hole starts where this gap ends

    async def _recorded_until(self) -> int | None:
        """The later of ``P:private:mark`` and the newest entry of either stream (epoch ms)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.private_mark)
        for type_name in STREAM_TYPES:
            pipe.xrevrange(self._keys.stream(type_name), count=1)
        mark, *lasts = await pipe.execute()
        candidates: list[int] = []
        if mark is not None:
            with contextlib.suppress(ValueError):
                candidates.append(int(mark))
        for entries in lasts:
            if entries:
                entry_id = entries[0][0]
                text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                candidates.append(int(text.split("-", 1)[0]))
        return max(candidates) if candidates else None

    async def _mark(self) -> None:
        try:
            await self._redis.set(self._keys.private_mark, str(self._clock()))
        except REDIS_FAILURES as exc:
            log.debug("could not write the private mark (%s)", exc)

    def _gap(self, start: int, end: int, reason: str) -> None:
        """Gap entries into both streams now; reconciliation of the window later."""
        items = []
        for type_name in STREAM_TYPES:
            payload = encode_event(gap_event(start, end, reason), self._codec)
            items.append(
                Outgoing(
                    "",
                    payload,
                    type_name,
                    private=True,
                    publish=False,
                    identity=gap_identity(type_name, start, end),
                    source="gap",
                )
            )
        self._outbox.put_many(items)
        self.gaps += 1
        log.warning("private streams: gap from %d to %d ms (%s)", start, end, reason)
        self._status.notice("gap", connection="private", reason=reason, start=start, end=end)
        self._status.set(private_gaps=self.gaps, private_last_gap=f"{start}-{end}")
        self._windows.append((start, end))
        self._wake.set()

    # -- reconciliation ------------------------------------------------------------------------
    async def reconcile(self, start: int, end: int) -> None:
        """Append what REST knows about ``[start, end]`` and the streams lack (never raises,
        except CancelledError). ``reconciliations`` counts the finished ones."""
        when = self._clock()
        if self._exchange is None:
            result = "skipped: no REST URL"
        else:
            try:
                result = await self._reconcile(start, end)
            except ExchangeError as exc:
                result = f"refused: {exc.name} (HTTP {exc.status})" if exc.status else str(exc)
                if exc.name not in self._reported:
                    self._reported.add(exc.name)
                    log.warning("private reconciliation over REST failed: %s", exc)
            except REDIS_FAILURES as exc:
                result = f"failed: Redis {type(exc).__name__}"
                log.warning("private reconciliation could not read Redis (%s)", exc)
        self.last_result = result
        self.reconciliations += 1
        self._status.set(private_last_reconcile_at=when, private_last_reconcile=result)

    async def _reconcile(self, start: int, end: int) -> str:
        assert self._exchange is not None
        exchange = self._exchange
        orders: list[Mapping[str, Any]] = []
        truncated = False
        for first, high in closed_windows(start, end + 1000, lookback_ms=self.lookback_ms):
            low = first
            for _ in range(_MAX_PAGES):
                params = [
                    ("states[]", "done"),
                    ("states[]", "cancel"),
                    ("start_time", str(low)),
                    ("end_time", str(high)),
                    ("limit", str(_CLOSED_PAGE)),
                    ("order_by", "asc"),
                ]
                page = await exchange.get("/v1/orders/closed", params)
                rows = [row for row in page or [] if isinstance(row, dict)]
                orders.extend(rows)
                if len(rows) < _CLOSED_PAGE:
                    break
                # next page: from the last creation time (overlap is removed by identity)
                newest = parse_rest_time(rows[-1].get("created_at"))
                if newest is None or newest <= low:
                    truncated = True
                    break
                low = newest
            else:
                truncated = True
        for number in range(1, _MAX_PAGES + 1):
            params = [("limit", str(_OPEN_PAGE)), ("page", str(number)), ("order_by", "asc")]
            page = await exchange.get("/v1/orders/open", params)
            rows = [row for row in page or [] if isinstance(row, dict)]
            orders.extend(rows)
            if len(rows) < _OPEN_PAGE:
                break
        # Orders the stream still shows open that neither list returned (created before the
        # lookback and finished since): ask for each one (bounded).
        listed = {row.get("uuid") for row in orders}
        missing = [u for u in await self._stream_open_orders() if u not in listed]
        for uuid_text in missing[:_MAX_SINGLE]:
            try:
                one = await exchange.get("/v1/order", [("uuid", uuid_text)])
            except ExchangeError as exc:
                if exc.status != 404:
                    raise
                continue
            if isinstance(one, dict):
                orders.append(one)
        truncated = truncated or len(missing) > _MAX_SINGLE
        accounts = [
            row for row in await exchange.get("/v1/accounts") or [] if isinstance(row, dict)
        ]

        now = self._clock()
        seen = await self._redis.zrange(self._keys.stream_seen("myOrder"), 0, -1)
        known_ids = {s.decode() if isinstance(s, bytes) else str(s) for s in seen}
        items: list[Outgoing] = []
        for ident, event in missing_order_events(orders, known_ids, now_ms=now):
            items.append(
                Outgoing(
                    f"myOrder:{event['code']}",
                    encode_event(event, self._codec),
                    "myOrder",
                    private=True,
                    publish=False,
                    identity=ident,
                    source="rest",
                )
            )
        changed = changed_currencies(accounts, await self._stream_balances())
        if changed:
            event = asset_event(accounts, now_ms=now, currencies=changed)
            items.append(
                Outgoing(
                    "myAsset",
                    encode_event(event, self._codec),
                    "myAsset",
                    private=True,
                    publish=False,
                    identity=asset_identity(event),
                    source="rest",
                )
            )
        self._outbox.put_many(items)
        self.appended += len(items)
        text = f"ok: {len(orders)} orders, {len(accounts)} balances, {len(items)} appended"
        if truncated:
            text += " (truncated: more closed orders than one reconciliation reads)"
        log.info("private reconciliation of %d-%d ms: %s", start, end, text)
        return text

    async def _stream_open_orders(self) -> list[str]:
        """uuids the newest myOrder entries (at most ``_ORDER_SCAN``) still show open."""
        entries: Any = await self._redis.xrevrange(self._keys.stream("myOrder"), count=_ORDER_SCAN)
        events: list[Mapping[str, Any]] = []
        for _, fields in reversed(entries or []):
            raw = fields.get(b"payload") if isinstance(fields, dict) else None
            if not isinstance(raw, bytes) or fields.get(b"source") == b"gap":
                continue
            try:
                event = decode_event(raw)
            except CodecError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return unfinished_orders(events)

    async def _stream_balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """currency -> (balance, locked) as the newest myAsset entries say."""
        entries: Any = await self._redis.xrevrange(self._keys.stream("myAsset"), count=_ASSET_SCAN)
        known: dict[str, tuple[Decimal, Decimal]] = {}
        for _, fields in entries or []:
            raw = fields.get(b"payload") if isinstance(fields, dict) else None
            if not isinstance(raw, bytes) or fields.get(b"source") == b"gap":
                continue
            try:
                event = decode_event(raw)
            except CodecError:
                continue
            for asset in event.get("assets") or [] if isinstance(event, dict) else []:
                currency = asset.get("currency") if isinstance(asset, dict) else None
                if not isinstance(currency, str) or currency in known:
                    continue
                try:
                    known[currency] = (
                        Decimal(str(asset.get("balance"))),
                        Decimal(str(asset.get("locked"))),
                    )
                except InvalidOperation:
                    continue
        return known
