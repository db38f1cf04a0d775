"""Durable reading of the private streams ``P:stream:myOrder`` / ``P:stream:myAsset``.

Two readers (docs/client.md, "Private streams"):

:class:`PrivateStream`
    Plain ``XREAD``: from now (``"$"``), from the beginning of what Redis holds (``"0"``), or
    resumed after an entry id you kept (e.g. ``stream.last_id`` saved before a restart).
:class:`StreamGroup`
    A Redis consumer group (``XREADGROUP``/``XACK``/``XAUTOCLAIM``): every entry goes to one
    consumer of the group; an entry stays pending until :meth:`StreamGroup.ack`. A consumer that
    restarts under the same name first gets its own pending entries again; entries left pending
    by a consumer that never came back are claimed by another after ``claim_idle`` seconds.

Both yield :class:`StreamEvent` (an :class:`Event` with ``entry_id`` and ``source``: ``ws`` as
received live, ``rest`` as reconciled after a gap) and :class:`Gap` (``entry_id`` set: the private
socket was down from ``started_at`` to ``ended_at``; what REST could recover follows it).

Delivery, precisely: a group delivers every entry at least once to some consumer of the group,
in stream order for each consumer; an entry is delivered again only if it was not acknowledged
(the consumer crashed, or never called ack). Processing is exactly once when the effect is
idempotent or is recorded together with the acknowledgement: :meth:`StreamGroup.ack_in` adds the
``XACK`` to your own MULTI transaction on the same Redis, so the effect and the ack commit
together. Where it stops: an effect outside Redis cannot commit with the ack, so a crash between
the effect and the ack repeats the entry (make such effects idempotent, keyed by ``entry_id`` or
the order ``uuid``); and an entry the stream's cap (``MAXLEN ~``) trimmed before anyone read it
is gone (the collector's ``private_stream_maxlen``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from upbit_fanout.client._items import Event, Gap
from upbit_fanout.client._log import log
from upbit_fanout.subscriptions.codec import decode_event
from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.topics import Topic, parse_topic

__all__ = ["PrivateStream", "StreamEvent", "StreamGroup", "StreamItem"]

_TYPES = ("myOrder", "myAsset")


class StreamEvent(Event):
    """One entry of a private stream: a myOrder / myAsset :class:`Event` (``typed`` gives
    :class:`MyOrder` / :class:`MyAsset`) plus ``entry_id`` (the stream entry's id, e.g.
    ``"1764590400123-0"``), ``source`` (``"ws"``: received live; ``"rest"``: appended by the
    collector's reconciliation after a gap, with REST's fields) and ``stream`` (its type)."""

    __slots__ = ("entry_id", "source", "stream")

    def __init__(
        self, topic: str, info: Topic, payload: bytes, *, entry_id: str, source: str, stream: str
    ) -> None:
        super().__init__(topic, info, payload)
        self.entry_id = entry_id
        self.source = source
        self.stream = stream

    def __repr__(self) -> str:
        return (
            f"<StreamEvent {self.stream} {self.entry_id} {self.source} ({len(self.payload)} bytes)>"
        )


StreamItem: TypeAlias = StreamEvent | Gap
"""What a stream reader yields."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _item(type_name: str, entry_id: Any, fields: Mapping[Any, Any]) -> StreamItem | None:
    """One stream entry as an item; None (logged) for an entry that is not ours."""
    ident = _text(entry_id)
    get = {_text(k): v for k, v in fields.items()}
    payload = get.get("payload")
    if not isinstance(payload, bytes):
        log.warning("stream entry %s of %s has no payload; skipped", ident, type_name)
        return None
    source = _text(get.get("source", b"ws"))
    if source == "gap":
        try:
            gap = decode_event(payload)
            started, ended = int(gap["from"]) / 1000, int(gap["to"]) / 1000
            reason = str(gap.get("reason", "private socket down"))
        except (CodecError, KeyError, TypeError, ValueError):
            log.warning("gap entry %s of %s is malformed; skipped", ident, type_name)
            return None
        return Gap(reason, started, ended, (type_name,), source="stream", entry_id=ident)
    topic = _text(get.get("topic", type_name)) or type_name
    try:
        info = parse_topic(topic)
    except ValueError:
        info = parse_topic("myAsset" if type_name == "myAsset" else "myOrder:*")
    return StreamEvent(topic, info, payload, entry_id=ident, source=source, stream=type_name)


def _check_type(type_name: str) -> str:
    if type_name not in _TYPES:
        raise ValueError(f"a private stream is myOrder or myAsset, not {type_name!r}")
    return type_name


def _as_redis(redis: Redis | str) -> tuple[Redis, bool]:
    if isinstance(redis, str):
        return Redis.from_url(redis), True
    return redis, False


class PrivateStream:
    """Read ``P:stream:{type}`` with ``XREAD``, in order, from ``start``.

    ``start``: ``"$"`` (only entries added from now on), ``"0"`` (everything Redis still holds),
    or an entry id (the entries after it: resume where you stopped). :attr:`last_id` is the id
    of the last entry returned; keep it to resume. ``block``: seconds one read waits for new
    entries (``events()`` reads again and again; ``read()`` returns an empty list after it).
    """

    def __init__(
        self,
        redis: Redis | str,
        type_name: str = "myOrder",
        *,
        key_prefix: str = "upbit",
        start: str = "$",
        block: float = 1.0,
        count: int = 100,
    ) -> None:
        self._redis, self._owns = _as_redis(redis)
        self.type = _check_type(type_name)
        self.key = Keys(key_prefix).stream(type_name)
        self.last_id = start
        self._block_ms = max(1, round(block * 1000))
        self._count = count

    async def aclose(self) -> None:
        """Close the Redis client if this reader made it from a URL."""
        if self._owns:
            await self._redis.aclose()

    async def read(self, count: int | None = None) -> list[StreamItem]:
        """The next entries after :attr:`last_id` (waiting up to ``block`` s for some)."""
        if self.last_id == "$":
            # "$" is resolved once, or every read would start from the then-newest entry
            newest = await self._redis.xrevrange(self.key, count=1)
            self.last_id = _text(newest[0][0]) if newest else "0-0"
        reply: Any = await self._redis.xread(
            {self.key: self.last_id}, count=count or self._count, block=self._block_ms
        )
        items: list[StreamItem] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = _text(entry_id)
                item = _item(self.type, entry_id, fields)
                if item is not None:
                    items.append(item)
        return items

    async def events(self) -> AsyncIterator[StreamItem]:
        """Every entry from ``start`` on, for ever (break out of the loop to stop)."""
        while True:
            for item in await self.read():
                yield item

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self.events()


class StreamGroup:
    """Consume ``P:stream:{type}`` as ``consumer`` of the consumer group ``group``.

    The group is created on first use (``XGROUP CREATE ... MKSTREAM``) at ``start`` (``"0"``:
    everything Redis holds; ``"$"``: from now). Each :meth:`read` returns, in this order: this
    consumer's own pending entries (after a restart: the ones it had not acknowledged), entries
    other consumers left pending for more than ``claim_idle`` seconds (``XAUTOCLAIM``), then new
    ones (waiting up to ``block`` s). Acknowledge each item after processing it: :meth:`ack`,
    or :meth:`ack_in` inside your own transaction.
    """

    def __init__(
        self,
        redis: Redis | str,
        type_name: str = "myOrder",
        *,
        group: str,
        consumer: str,
        key_prefix: str = "upbit",
        start: str = "0",
        claim_idle: float = 30.0,
        block: float = 1.0,
        count: int = 100,
    ) -> None:
        if not group or not consumer:
            raise ValueError("a consumer group needs a group name and a consumer name")
        self._redis, self._owns = _as_redis(redis)
        self.type = _check_type(type_name)
        self.key = Keys(key_prefix).stream(type_name)
        self.group = group
        self.consumer = consumer
        self._start = start
        self._claim_ms = max(1, round(claim_idle * 1000))
        self._block_ms = max(1, round(block * 1000))
        self._count = count
        self._created = False
        self._own_pending = True  # first: what this consumer name had not acknowledged
        self._claim_cursor = "0-0"
        self.claimed = 0
        """Entries taken over from other consumers (XAUTOCLAIM)."""

    async def aclose(self) -> None:
        if self._owns:
            await self._redis.aclose()

    async def ensure_group(self) -> None:
        """Create the group if it does not exist (idempotent)."""
        try:
            await self._redis.xgroup_create(self.key, self.group, id=self._start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._created = True

    async def read(self, count: int | None = None) -> list[StreamItem]:
        """The next items for this consumer (see the class docs for the order)."""
        if not self._created:
            await self.ensure_group()
        n = count or self._count
        if self._own_pending:
            items = await self._group_read("0", n, block=None)
            if items:
                return items
            self._own_pending = False
        claimed = await self._claim(n)
        if claimed:
            return claimed
        return await self._group_read(">", n, block=self._block_ms)

    async def _group_read(self, last: str, count: int, *, block: int | None) -> list[StreamItem]:
        reply: Any = await self._redis.xreadgroup(
            self.group, self.consumer, {self.key: last}, count=count, block=block
        )
        items: list[StreamItem] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                if not fields:  # pending, but trimmed from the stream meanwhile
                    await self._redis.xack(self.key, self.group, entry_id)
                    continue
                item = _item(self.type, entry_id, fields)
                if item is None:
                    await self._redis.xack(self.key, self.group, entry_id)
                    continue
                items.append(item)
        return items

    async def _claim(self, count: int) -> list[StreamItem]:
        reply = await self._redis.xautoclaim(
            self.key,
            self.group,
            self.consumer,
            min_idle_time=self._claim_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = _text(cursor)
        items: list[StreamItem] = []
        for entry_id, fields in entries:
            item = _item(self.type, entry_id, fields or {})
            if item is None:
                await self._redis.xack(self.key, self.group, entry_id)
                continue
            items.append(item)
        self.claimed += len(items)
        return items

    async def ack(self, *items: StreamItem | str) -> int:
        """Acknowledge processed items (or entry ids); returns how many were pending."""
        ids = _ids(items)
        if not ids:
            return 0
        return int(await self._redis.xack(self.key, self.group, *ids))

    def ack_in(self, pipe: Pipeline, *items: StreamItem | str) -> None:
        """Queue the ``XACK`` of ``items`` on your pipeline (``redis.pipeline(transaction=True)``)
        so the acknowledgement commits together with the effect you queued on it."""
        ids = _ids(items)
        if ids:
            pipe.xack(self.key, self.group, *ids)

    async def pending(self) -> int:
        """How many entries of the group are delivered but not acknowledged."""
        info = await self._redis.xpending(self.key, self.group)
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0

    async def events(self) -> AsyncIterator[StreamItem]:
        """Every item for this consumer, for ever; acknowledge each one yourself."""
        while True:
            for item in await self.read():
                yield item

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self.events()


def _ids(items: Sequence[StreamItem | str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif item.entry_id is not None:
            out.append(item.entry_id)
    return out
