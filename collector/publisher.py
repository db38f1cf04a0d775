"""Redis publisher: one round trip per batch of :class:`~collector.routing.Outgoing` items.

For every item, in order: ``PUBLISH P:{topic} payload``; the last-value key
``SET P:last:{topic} payload`` (within a batch only the last payload of each topic is written);
private items also ``XADD P:stream:{type} MAXLEN ~ N * payload <bytes> topic <topic>``
(docs/contract.md, "Keys and channels"). Key names come from :class:`subscriptions.keys.Keys`.

Two ways to send a batch, both one round trip:

``lua`` (default, the faster)
    The whole batch is packed with msgpack (C code) into ONE argument of one ``EVALSHA`` of a
    small Lua script that unpacks it (Redis ships ``cmsgpack`` to Lua) and runs the PUBLISH, SET
    and XADD calls inside Redis. redis-py's command packing and reply parsing are pure Python
    per command and per argument, so this keeps the collector's cost per event at a few hundred
    nanoseconds. The script is loaded on first use and again after ``NOSCRIPT`` (a Redis
    restart). It names keys inside its argument, so it is not Redis Cluster safe (the cluster
    design uses sharded pub/sub anyway, docs/contract.md "Where it grows").
``pipeline``
    A non-transactional pipeline: N ``PUBLISH`` + one ``MSET`` + one ``XADD`` per private item.
    Kept for comparison (``bench/collector_throughput.py`` measures both) and for servers where
    scripting is refused: on ``unknown command`` / ``NOPERM`` for ``EVALSHA`` the publisher
    switches to it for good (WARNING, once).

Fencing. With :attr:`Publisher.fence` set (the service sets it while it holds the leader lease,
``subscriptions.lease``), the batch is written only if ``P:leader`` still holds exactly this
collector's value (fencing token and id): the script checks it before its first write and
otherwise writes NOTHING (no PUBLISH, no SET, no XADD) and :meth:`Publisher.publish` raises
:class:`subscriptions.lease.LeaseLost`. The pipeline mode does the same with ``WATCH P:leader``,
``GET``, ``MULTI``/``EXEC`` (an EXEC aborted because the key changed is a ``LeaseLost`` too).

Failures. Redis errors propagate as :class:`redis.exceptions.RedisError` (the caller counts them
and keeps going). A failed batch may have been PARTIALLY applied: the connection can drop after
Redis ran part or all of it, and a Lua script that fails half-way keeps the writes it made (Redis
scripts do not roll back). Re-sending a failed batch can therefore publish some events twice;
dropping it can lose some. Either way consumers see a gap notice from the collector.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Final, Literal

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError, WatchError

from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import LeaseLost

__all__ = ["PUBLISH_SCRIPT", "PublishMode", "Publisher"]

PublishMode = Literal["lua", "pipeline"]

log = logging.getLogger(__name__)

PUBLISH_SCRIPT: Final = """\
-- upbit-fanout publisher: ARGV[1] is msgpack [maxlen, publish, last, stream] where
-- publish = [channel, payload, ...], last = [key, i, ...] (SET key to the i-th payload of
-- publish, so no payload travels twice), stream = [key, i, topic, ...] (XADD the i-th payload).
-- Fencing: with KEYS[1] (P:leader) given, nothing is written unless it holds ARGV[2], the
-- value this collector wrote when it took the lease; then it returns {'fenced', holder}.
-- Returns the number of PUBLISH calls.
if #KEYS > 0 then
  local holder = redis.call('GET', KEYS[1])
  if holder ~= ARGV[2] then
    return {'fenced', holder or ''}
  end
end
local batch = cmsgpack.unpack(ARGV[1])
local maxlen = batch[1]
local publish = batch[2]
local last = batch[3]
local stream = batch[4]
local n = 0
for i = 1, #publish, 2 do
  redis.call('PUBLISH', publish[i], publish[i + 1])
  n = n + 1
end
for i = 1, #last, 2 do
  redis.call('SET', last[i], publish[2 * last[i + 1]])
end
for i = 1, #stream, 3 do
  redis.call('XADD', stream[i], 'MAXLEN', '~', maxlen, '*',
    'payload', publish[2 * stream[i + 1]], 'topic', stream[i + 2])
end
return n
"""
_SCRIPT_SHA: Final = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()
# use_bin_type=False: the cmsgpack bundled with Redis 7.0 predates msgpack's bin types; bytes
# are then packed as the (binary-safe) raw type, which Lua reads as a string.
_PACK: Final = msgpack.Packer(use_bin_type=False).pack


class Publisher:
    """Publishes routed items to Redis, one round trip per batch.

    Counters: ``events_published`` items published, ``batches`` batches sent, ``last_batch_size``,
    ``last_values`` last-value keys written, ``stream_entries`` XADDs, ``failed_batches`` batches
    whose round trip raised, ``fenced_batches`` batches refused because the lease was lost.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        stream_maxlen: int = 10_000,
        mode: PublishMode = "lua",
    ) -> None:
        if stream_maxlen < 1:
            raise ValueError("stream_maxlen must be at least 1")
        if mode not in ("lua", "pipeline"):
            raise ValueError(f"mode must be 'lua' or 'pipeline', not {mode!r}")
        self._redis = redis
        self._keys = keys
        self.stream_maxlen = stream_maxlen
        self.mode: PublishMode = mode
        self._names: dict[str, tuple[bytes, bytes]] = {}  # topic -> (channel, last-value key)
        self._streams: dict[str, bytes] = {}  # type -> stream key
        self.events_published = 0
        self.batches = 0
        self.last_batch_size = 0
        self.last_values = 0
        self.stream_entries = 0
        self.failed_batches = 0
        self.fenced_batches = 0
        self.fence: tuple[bytes, bytes] | None = None
        """``(P:leader key, expected value)``: write only while the lease holds that value."""

    def counters(self) -> dict[str, int]:
        return {
            "events_published": self.events_published,
            "batches": self.batches,
            "last_batch_size": self.last_batch_size,
            "last_values": self.last_values,
            "stream_entries": self.stream_entries,
            "failed_batches": self.failed_batches,
            "fenced_batches": self.fenced_batches,
        }

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        """Publish a batch in one round trip; ``RedisError`` if it failed (maybe partly applied)."""
        if not batch:
            return
        publish: list[bytes] = []
        last: dict[bytes, int] = {}  # last-value key -> 1-based index of its payload in batch
        stream: list[bytes | str | int] = []  # [stream key, payload index, topic, ...]
        names = self._names
        append = publish.append
        for index, item in enumerate(batch, 1):
            found = names.get(item.topic)
            if found is None:
                found = self._name(item.topic)
            append(found[0])
            append(item.payload)
            last[found[1]] = index
            if item.private and item.stream:
                stream.append(self._stream_key(item.type))
                stream.append(index)
                stream.append(item.topic)
        try:
            if self.mode == "lua":
                await self._run_script(publish, last, stream)
            else:
                await self._run_pipeline(publish, last, stream)
        except LeaseLost:
            self.fenced_batches += 1
            raise
        except Exception:  # RedisError, mostly; cancellation is not a failed batch
            self.failed_batches += 1
            raise
        self.batches += 1
        self.last_batch_size = len(batch)
        self.events_published += len(batch)
        self.last_values += len(last)
        self.stream_entries += len(stream) // 3

    def _name(self, topic: str) -> tuple[bytes, bytes]:
        found = (self._keys.channel(topic).encode(), self._keys.last(topic).encode())
        if len(self._names) >= 100_000:  # bounded: topics are few, but never grow without end
            self._names.clear()
        self._names[topic] = found
        return found

    def _stream_key(self, type_name: str) -> bytes:
        key = self._streams.get(type_name)
        if key is None:
            key = self._streams[type_name] = self._keys.stream(type_name).encode()
        return key

    async def _run_script(
        self, publish: list[bytes], last: dict[bytes, int], stream: list[bytes | str | int]
    ) -> None:
        flat_last: list[bytes | int] = []
        for key, index in last.items():
            flat_last.append(key)
            flat_last.append(index)
        blob = _PACK([self.stream_maxlen, publish, flat_last, stream])
        redis = self._redis
        fence = self.fence
        args: list[bytes] = [blob] if fence is None else [fence[0], blob, fence[1]]
        keys = 0 if fence is None else 1
        try:
            reply = await redis.evalsha(_SCRIPT_SHA, keys, *args)
        except NoScriptError:  # not loaded yet, or Redis restarted: nothing ran, so retry once
            await redis.script_load(PUBLISH_SCRIPT)
            reply = await redis.evalsha(_SCRIPT_SHA, keys, *args)
        except ResponseError as exc:
            text = str(exc).lower()
            if "unknown command" not in text and "noperm" not in text:
                raise
            # No scripting here (ACL, a managed Redis, fakeredis): nothing ran, so the batch
            # goes by pipeline, and so does every later one.
            log.warning("Redis refuses Lua scripts (%s); publishing with pipelines instead", exc)
            self.mode = "pipeline"
            await self._run_pipeline(publish, last, stream)
            return
        if type(reply) is list:  # {'fenced', holder}: nothing was written
            raise LeaseLost(reply[1] or None if len(reply) > 1 else None)

    async def _run_pipeline(
        self, publish: list[bytes], last: dict[bytes, int], stream: list[bytes | str | int]
    ) -> None:
        fence = self.fence
        async with self._redis.pipeline(transaction=fence is not None) as pipe:
            if fence is not None:
                await pipe.watch(fence[0])
                holder = await pipe.get(fence[0])
                if holder != fence[1]:
                    raise LeaseLost(holder if isinstance(holder, bytes) else None)
                pipe.multi()  # type: ignore[no-untyped-call]
            execute = pipe.execute_command
            for i in range(0, len(publish), 2):
                execute("PUBLISH", publish[i], publish[i + 1])
            mset: list[bytes] = []
            for key, index in last.items():
                mset.append(key)
                mset.append(publish[2 * index - 1])
            execute("MSET", *mset)
            for i in range(0, len(stream), 3):
                execute(
                    "XADD",
                    stream[i],
                    "MAXLEN",
                    "~",
                    self.stream_maxlen,
                    "*",
                    "payload",
                    publish[2 * int(stream[i + 1]) - 1],
                    "topic",
                    stream[i + 2],
                )
            try:
                await pipe.execute()
            except WatchError:  # P:leader changed since the GET: nothing was written
                raise LeaseLost() from None
