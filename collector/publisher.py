"""Redis publisher: one round trip per batch of :class:`~collector.routing.Outgoing` items.

For every item, in order: ``PUBLISH P:{topic} payload``; the last-value key
``SET P:last:{topic} payload`` (within a batch only the last payload of each topic is written);
private items also ``XADD P:stream:{type} MAXLEN ~ N * payload <bytes> topic <topic> source
<ws|rest|gap>`` (docs/contract.md, "Keys and channels"), but only when the item's identity is new to
``P:stream:{type}:seen`` (checked in the same script: docs/contract.md, "Private streams").
Items with ``publish=False`` go to the stream only (no PUBLISH, no last value); items with
``last=False`` are published but leave the last value alone (back-filled trades). Key names come
from :class:`subscriptions.keys.Keys`.

Two ways to send a batch, both one round trip:

``lua`` (default, the faster)
    The whole batch is packed with msgpack (C code) into ONE argument of one ``EVALSHA`` of a
    small Lua script that unpacks it (Redis ships ``cmsgpack`` to Lua) and runs the PUBLISH, SET
    and XADD calls inside Redis. redis-py's command packing and reply parsing are pure Python
    per command and per argument, so this keeps the collector's cost per event at a few hundred
    nanoseconds. The script is loaded on first use and again after ``NOSCRIPT`` (a Redis
    restart). It names keys inside its argument; on a Redis Cluster the batch is split by node
    and each node runs :data:`CLUSTER_PUBLISH_SCRIPT` (``SPUBLISH``, only that node's keys,
    checking that node's fence copy ``P:fence:{N}``: docs/contract.md, "Redis Cluster").
    Outside a Cluster the ``EVALSHA`` goes over the publisher's own link
    (:mod:`collector.publink`: a connection of the pool whose replies a protocol parses with
    hiredis, a round trip for less than half the CPU of redis-py's command path), or through
    redis-py when the connection cannot be taken over.
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
``GET``, ``MULTI``/``EXEC`` (:func:`subscriptions.transactions.transaction`; an EXEC aborted
because the key changed is a ``LeaseLost`` too; the identities it had marked as seen for that
batch are then removed again, best effort).

Failures. Redis errors propagate as :class:`redis.exceptions.RedisError` (the caller counts them
and keeps going). A failed batch may have been PARTIALLY applied: the connection can drop after
Redis ran part or all of it, and a Lua script that fails half-way keeps the writes it made (Redis
scripts do not roll back). Re-sending a failed batch can therefore publish some events twice;
dropping it can lose some. Either way consumers see a gap notice from the collector.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError, ResponseError

from upbit_fanout.collector._log import log
from upbit_fanout.collector.publink import NotTakeable, PublishLink, open_link
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.subscriptions.clock import now_ms
from upbit_fanout.subscriptions.connection import REDIS_FAILURES, cluster_of, refresh_slots
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import LeaseLost, parse_leader
from upbit_fanout.subscriptions.transactions import transaction

__all__ = ["PUBLISH_SCRIPT", "PublishMode", "Publisher"]

PublishMode = Literal["lua", "pipeline"]


PUBLISH_SCRIPT: Final = """\
-- upbit-fanout publisher: ARGV[1] is msgpack [maxlen, publish, last, stream, seen_cap, seen_ttl,
-- now] where publish = [channel, payload, ...] (an empty channel: no PUBLISH, the payload is
-- there for a stream entry only), last = [key, i, ...] (SET key to the i-th payload of publish,
-- so no payload travels twice), stream = entries of [key, seen_key, identity, n, field, value,
-- ... (n pairs)]: XADD key field value ...; a numeric value is the i-th payload of publish. An
-- entry with an identity is appended only if ZADD NX of the identity into seen_key adds it
-- (after the batch each touched set is cut to its newest seen_cap members and expires after
-- seen_ttl ms).
-- Fencing: with KEYS[1] (P:leader) given, nothing is written unless it holds ARGV[2], the
-- value this collector wrote when it took the lease; then it returns {'fenced', holder}.
-- Returns {PUBLISH calls, entries appended, duplicates refused}.
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
local cap = batch[5]
local ttl = batch[6]
local now = batch[7]
local n = 0
for i = 1, #publish, 2 do
  if publish[i] ~= '' then
    redis.call('PUBLISH', publish[i], publish[i + 1])
    n = n + 1
  end
end
for i = 1, #last, 2 do
  redis.call('SET', last[i], publish[2 * last[i + 1]])
end
local added, dups = 0, 0
local touched = {}
local j = 1
while j <= #stream do
  local key, seen, ident, nf = stream[j], stream[j + 1], stream[j + 2], stream[j + 3]
  local fresh = true
  if ident ~= '' then
    fresh = redis.call('ZADD', seen, 'NX', now, ident) == 1
    if fresh then touched[seen] = true end
  end
  if fresh then
    local args = {'XADD', key, 'MAXLEN', '~', maxlen, '*'}
    for k = 1, nf do
      local v = stream[j + 3 + 2 * k]
      if type(v) == 'number' then v = publish[2 * v] end
      args[#args + 1] = stream[j + 2 + 2 * k]
      args[#args + 1] = v
    end
    redis.call(unpack(args))
    added = added + 1
  else
    dups = dups + 1
  end
  j = j + 4 + 2 * nf
end
for seen in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', seen, 0, -(cap + 1))
  redis.call('PEXPIRE', seen, ttl)
end
return {n, added, dups}
"""
_SCRIPT_SHA: Final = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()

CLUSTER_PUBLISH_SCRIPT: Final = (
    "#!lua flags=allow-cross-slot-keys\n"
    "-- The Redis Cluster variant: run on ONE node with the keys of that node only; KEYS[1] is\n"
    "-- the node's fence copy (P:fence:{tag}), checked when ARGV[2] is not empty; SPUBLISH.\n"
    + PUBLISH_SCRIPT.replace("if #KEYS > 0 then", "if ARGV[2] ~= '' then").replace(
        "redis.call('PUBLISH',", "redis.call('SPUBLISH',"
    )
)
"""The publish script for one cluster node (docs/contract.md, "Redis Cluster")."""
_CLUSTER_SHA: Final = hashlib.sha1(CLUSTER_PUBLISH_SCRIPT.encode()).hexdigest()

FENCE_SCRIPT: Final = """\
-- KEYS[1] a node's fence copy; ARGV[1] the leader value "{token} {id}", ARGV[2] its token.
-- Sets the copy unless it already holds a LATER token (a newer leader's): returns 1, else
-- {0, what it holds}.
local current = redis.call('GET', KEYS[1])
if current then
  local token = tonumber(string.match(current, '^(%d+) '))
  if token and token > tonumber(ARGV[2]) then return {0, current} end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
"""Install the leader's fencing value on one cluster node, never over a newer leader's."""
# use_bin_type=False: the cmsgpack bundled with Redis 7.0 predates msgpack's bin types; bytes
# are then packed as the (binary-safe) raw type, which Lua reads as a string.
_PACK: Final = msgpack.Packer(use_bin_type=False).pack


def _unpacked(blob: bytes) -> memoryview:
    """The batch's blob as redis-py should send it: a memoryview is written as it is, after its
    RESP header, where hiredis' command packer copies a bytes argument into a new buffer at
    about 1 ns per byte (1.5 ms for a 1.5 MB batch: a twentieth of the collector's time in
    bursts, ``bench/collector_throughput.py``)."""
    return memoryview(blob)


class Publisher:
    """Publishes routed items to Redis, one round trip per batch.

    Counters: ``events_published`` items published, ``batches`` batches sent, ``last_batch_size``,
    ``last_values`` last-value keys written, ``stream_entries`` XADDs, ``stream_duplicates``
    stream entries refused because their identity was recently appended, ``failed_batches``
    batches whose round trip raised, ``fenced_batches`` batches refused because the lease was
    lost.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        stream_maxlen: int = 10_000,
        mode: PublishMode = "lua",
        seen_cap: int | None = None,
        seen_ttl: float = 7 * 24 * 3600.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if stream_maxlen < 1:
            raise ValueError("stream_maxlen must be at least 1")
        if mode not in ("lua", "pipeline"):
            raise ValueError(f"mode must be 'lua' or 'pipeline', not {mode!r}")
        self._redis = redis
        self._keys = keys
        self.stream_maxlen = stream_maxlen
        self.seen_cap = seen_cap if seen_cap is not None else max(2 * stream_maxlen, 1000)
        if self.seen_cap < 1:
            raise ValueError("seen_cap must be at least 1")
        self.seen_ttl_ms = max(1000, round(seen_ttl * 1000))
        self._clock = clock or now_ms
        self.mode: PublishMode = mode
        self._names: dict[str, tuple[bytes, bytes]] = {}  # topic -> (channel, last-value key)
        self._streams: dict[str, tuple[bytes, bytes]] = {}  # type -> (stream key, seen key)
        self.events_published = 0
        self.batches = 0
        self.last_batch_size = 0
        self.last_values = 0
        self.stream_entries = 0
        self.stream_duplicates = 0
        self.failed_batches = 0
        self.fenced_batches = 0
        self.fence: tuple[bytes, bytes] | None = None
        """``(P:leader key, expected value)``: write only while the lease holds that value."""
        self._cluster = cluster_of(redis)
        self._fence_tags: dict[str, str] = {}  # cluster node name -> tag of its fence copy
        self._fenced_with: bytes | None = None  # the value installed on every node's copy
        self._owner: dict[bytes, str] = {}  # channel or stream key -> its node, as last seen
        self.fence_installs = 0
        self._link: PublishLink | None = None
        self._linking = asyncio.Lock()
        self.lean = self._cluster is None
        """True while batches go over the lean link (collector/publink.py); False on a Redis
        Cluster, and for good once a connection could not be taken over (redis-py's way)."""

    def counters(self) -> dict[str, int]:
        return {
            "events_published": self.events_published,
            "batches": self.batches,
            "last_batch_size": self.last_batch_size,
            "last_values": self.last_values,
            "stream_entries": self.stream_entries,
            "stream_duplicates": self.stream_duplicates,
            "failed_batches": self.failed_batches,
            "fenced_batches": self.fenced_batches,
        }

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        """Publish a batch in one round trip (one per node on a Redis Cluster); ``RedisError``
        if it failed (maybe partly applied)."""
        if not batch:
            return
        try:
            if self._cluster is not None:
                added, dups, last_values = await self._run_cluster(batch)
            else:
                added, dups, last_values = await self._run_single(batch)
        except LeaseLost:
            self.fenced_batches += 1
            raise
        except Exception:  # RedisError, mostly; cancellation is not a failed batch
            self.failed_batches += 1
            raise
        self.batches += 1
        self.last_batch_size = len(batch)
        self.events_published += len(batch)
        self.last_values += last_values
        self.stream_entries += added
        self.stream_duplicates += dups

    async def _run_single(self, batch: Sequence[Outgoing]) -> tuple[int, int, int]:
        publish: list[bytes] = []
        last: dict[bytes, int] = {}  # last-value key -> 1-based index of its payload in batch
        stream: list[bytes | str | int] = []  # entries, see PUBLISH_SCRIPT
        names = self._names
        append = publish.append
        for index, item in enumerate(batch, 1):
            if item.publish:
                found = names.get(item.topic)
                if found is None:
                    found = self._name(item.topic)
                append(found[0])
                if item.last:
                    last[found[1]] = index
            else:
                append(b"")
            append(item.payload)
            if item.private and item.stream:
                key, seen = self._stream_key(item.type)
                ident = item.identity
                stream += [key, seen if ident else b"", ident or b"", 3]
                stream += [b"payload", index, b"topic", item.topic, b"source", item.source]
        if self.mode == "lua":
            added, dups = await self._run_script(publish, last, stream)
        else:
            added, dups = await self._run_pipeline(publish, last, stream)
        return added, dups, len(last)

    def _name(self, topic: str) -> tuple[bytes, bytes]:
        found = (self._keys.channel(topic).encode(), self._keys.last(topic).encode())
        if len(self._names) >= 100_000:  # bounded: topics are few, but never grow without end
            self._names.clear()
        self._names[topic] = found
        return found

    def _stream_key(self, type_name: str) -> tuple[bytes, bytes]:
        key = self._streams.get(type_name)
        if key is None:
            key = self._streams[type_name] = (
                self._keys.stream(type_name).encode(),
                self._keys.stream_seen(type_name).encode(),
            )
        return key

    async def _evalsha(self, sha: str, keys: int, *args: bytes | memoryview) -> Any:
        """``EVALSHA`` over the lean link (opened on first use and after it failed), or through
        redis-py where the link cannot be used."""
        if not self.lean:
            return await self._redis.evalsha(sha, keys, *args)  # type: ignore[no-untyped-call, unused-ignore]
        link = self._link
        if link is None or link.closed:
            link = await self._relink()
            if link is None:
                return await self._redis.evalsha(sha, keys, *args)  # type: ignore[no-untyped-call, unused-ignore]
        return await link.execute("EVALSHA", sha, keys, *args)

    async def _relink(self) -> PublishLink | None:
        """A working link: the current one, or a new one in place of a failed one; None (and
        :attr:`lean` False) when the pool's connections cannot be taken over."""
        async with self._linking:
            link = self._link
            if link is not None and not link.closed:
                return link
            self._link = None
            if link is not None:
                await link.aclose()  # gives the connection back to the pool
            try:
                self._link = await open_link(self._redis)
            except NotTakeable as exc:
                self.lean = False
                log.info("publishing through redis-py: the lean link cannot read %s", exc)
                return None
            return self._link

    async def aclose(self) -> None:
        """Close the lean link, if one is open (the collector is stopping)."""
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()

    async def _run_script(
        self, publish: list[bytes], last: dict[bytes, int], stream: list[bytes | str | int]
    ) -> tuple[int, int]:
        flat_last: list[bytes | int] = []
        for key, index in last.items():
            flat_last.append(key)
            flat_last.append(index)
        blob = _PACK(
            [
                self.stream_maxlen,
                publish,
                flat_last,
                stream,
                self.seen_cap,
                self.seen_ttl_ms,
                self._clock(),
            ]
        )
        redis = self._redis
        fence = self.fence
        view = _unpacked(blob)
        args: list[bytes | memoryview] = [view] if fence is None else [fence[0], view, fence[1]]
        keys = 0 if fence is None else 1
        try:
            reply = await self._evalsha(_SCRIPT_SHA, keys, *args)
        except NoScriptError:  # not loaded yet, or Redis restarted: nothing ran, so retry once
            await redis.script_load(PUBLISH_SCRIPT)
            reply = await self._evalsha(_SCRIPT_SHA, keys, *args)
        except ResponseError as exc:
            text = str(exc).lower()
            if "unknown command" not in text and "noperm" not in text:
                raise
            # No scripting here (ACL, a managed Redis, fakeredis): nothing ran, so the batch
            # goes by pipeline, and so does every later one.
            log.warning("Redis refuses Lua scripts (%s); publishing with pipelines instead", exc)
            self.mode = "pipeline"
            return await self._run_pipeline(publish, last, stream)
        if reply and reply[0] in (b"fenced", "fenced"):  # nothing was written
            raise LeaseLost(reply[1] or None if len(reply) > 1 else None)
        return int(reply[1]), int(reply[2])

    # -- Redis Cluster ----------------------------------------------------------------------------
    async def _run_cluster(self, batch: Sequence[Outgoing]) -> tuple[int, int, int]:
        """One script per node that owns part of the batch, all at once.

        Every item's channel and last value share a slot (docs/contract.md, "Redis Cluster"), so
        an item's publish goes to one node; a private item's stream entry goes to the node of
        its stream (with the payload again when that is another node). Each node's script checks
        that node's fence copy first. A batch whose slots moved under it fails (``RedisError``;
        the slot map is refreshed first) and may be partly applied, like any failed batch.
        """
        cluster = self._cluster
        assert cluster is not None
        fence = self.fence
        if fence is not None and self._fenced_with != fence[1]:
            await self.install_fence()
        groups: dict[str, _NodeBatch] = {}
        nodes = cluster.nodes_manager
        owner = self._owner  # channel / stream key -> node name; cleared when the map changes
        if len(owner) >= 100_000:  # bounded, like the name cache
            owner.clear()
        for item in batch:
            if item.publish:
                channel, last_key = self._names.get(item.topic) or self._name(item.topic)
                node = owner.get(channel)
                if node is None:
                    node = owner[channel] = nodes.get_node_from_slot(key_slot(channel)).name
                group = groups.get(node) or groups.setdefault(node, _NodeBatch())
                group.publish += (channel, item.payload)
                if item.last:
                    group.last[last_key] = len(group.publish) // 2
            if item.private and item.stream:
                key, seen = self._stream_key(item.type)
                node = nodes.get_node_from_slot(key_slot(key)).name
                group = groups.get(node) or groups.setdefault(node, _NodeBatch())
                group.publish += (b"", item.payload)
                index = len(group.publish) // 2
                ident = item.identity
                group.stream += [key, seen if ident else b"", ident or b"", 3]
                group.stream += [b"payload", index, b"topic", item.topic, b"source", item.source]
        try:
            results = await asyncio.gather(
                *(self._run_node(name, group) for name, group in groups.items())
            )
        except ResponseError as exc:
            text = str(exc)
            if "non local key" in text or "MOVED" in text or "ASK" in text:
                await refresh_slots(self._redis)
                self._fence_tags.clear()
                self._owner.clear()
            raise
        last_values = sum(len(group.last) for group in groups.values())
        return sum(r[0] for r in results), sum(r[1] for r in results), last_values

    async def _run_node(self, node: str, group: _NodeBatch) -> tuple[int, int]:
        flat_last: list[bytes | int] = []
        for key, index in group.last.items():
            flat_last += (key, index)
        blob = _PACK(
            [
                self.stream_maxlen,
                group.publish,
                flat_last,
                group.stream,
                self.seen_cap,
                self.seen_ttl_ms,
                self._clock(),
            ]
        )
        redis = self._redis
        for attempt in (1, 2):
            fence = self.fence
            fence_key = self._keys.fence(self._fence_tag(node))
            expected = fence[1] if fence is not None else b""
            try:
                reply = await redis.evalsha(_CLUSTER_SHA, 1, fence_key, _unpacked(blob), expected)
            except NoScriptError:  # not loaded on that node yet: EVAL loads it
                reply = await redis.eval(
                    CLUSTER_PUBLISH_SCRIPT, 1, fence_key, _unpacked(blob), expected
                )
            if reply and reply[0] in (b"fenced", "fenced"):  # nothing was written
                if fence is None or attempt == 2:
                    break
                # The copy is missing (the node restarted, or took over slots) or holds another
                # value: install it again, which is refused unless P:leader still names this
                # collector and no copy holds a newer leader's token.
                self._fenced_with = None
                await self.install_fence()
                continue
            return int(reply[1]), int(reply[2])
        raise LeaseLost(None)

    def _fence_tag(self, node: str) -> str:
        """The smallest number whose hash slot the node owns: ``P:fence:{N}`` lives there."""
        tag = self._fence_tags.get(node)
        if tag is None:
            assert self._cluster is not None
            nodes = self._cluster.nodes_manager
            for number in range(100_000):
                if nodes.get_node_from_slot(key_slot(str(number).encode())).name == node:
                    tag = self._fence_tags[node] = str(number)
                    break
            else:  # a node owning almost no slots: its fence is looked up by scanning
                raise RedisError(f"no fence key found for cluster node {node}")
        return tag

    async def install_fence(self) -> None:
        """Write the leader's value into every node's fence copy before anything is published
        (docs/contract.md, "Redis Cluster"): the canonical copy of each primary and every copy
        found by ``SCAN`` (a copy that moved with its slot keeps an old value). Refused
        (``LeaseLost``) when ``P:leader`` no longer holds this collector's value, or a copy
        already holds a newer leader's token."""
        cluster, fence = self._cluster, self.fence
        if cluster is None or fence is None:
            return
        leader_key, value = fence
        holder = await self._redis.get(leader_key)
        if holder != value:
            raise LeaseLost(holder if isinstance(holder, bytes) else None)
        token = parse_leader(value)[0]
        if token is None:
            raise LeaseLost(None)
        found = {
            key if isinstance(key, bytes) else str(key).encode()
            async for key in self._redis.scan_iter(match=self._keys.fence_pattern, count=1000)
        }
        await refresh_slots(self._redis)
        self._fence_tags.clear()
        self._owner.clear()
        for node in cluster.get_primaries():
            found.add(self._keys.fence(self._fence_tag(node.name)).encode())
        for key in sorted(found):
            reply = await self._redis.eval(FENCE_SCRIPT, 1, key, value, token)
            if isinstance(reply, list):
                holder = await self._redis.get(leader_key)
                if holder != value:  # a newer leader installed its copy: this one lost
                    raise LeaseLost(holder if isinstance(holder, bytes) else None)
                # The lease is still this collector's, yet a copy holds a later token: written
                # by hand or by a foreign process. Refused (not a lost lease, which would be
                # retried at once): the batch is dropped and reported, the next one tries again.
                raise RedisError(
                    f"fence copy {key.decode(errors='replace')} holds a later token than this "
                    "collector's lease; it is written only by collectors (DEL it if nothing "
                    "else leads)"
                )
        self._fenced_with = value
        self.fence_installs += 1
        log.info("fencing value installed on %d cluster fence keys", len(found))

    async def _run_pipeline(
        self, publish: list[bytes], last: dict[bytes, int], stream: list[bytes | str | int]
    ) -> tuple[int, int]:
        """The same writes without Lua. Dedupe then takes its own commands (ZADD NX of every
        identity) before the writes and is not atomic with the XADDs: a crash between them loses
        those entries. With a fence the writes are one fenced transaction
        (:func:`subscriptions.transactions.transaction`: ``WATCH P:leader``, checked before the
        identities are marked, and an ``EXEC`` that Redis aborts if the lease changed)."""
        entries = _entries(stream)
        fresh = [True] * len(entries)
        now = self._clock()
        checked = [i for i, entry in enumerate(entries) if entry[2]]
        marked: list[tuple[bytes | str | int, bytes | str | int]] = []
        added = 0

        async def queue(pipe: Pipeline) -> None:
            nonlocal added
            if checked:
                check = self._redis.pipeline(transaction=False)
                for i in checked:
                    check.execute_command("ZADD", entries[i][1], "NX", now, entries[i][2])
                async with check:
                    results = await check.execute()
                for i, result in zip(checked, results, strict=True):
                    fresh[i] = int(result) == 1
                    if fresh[i]:
                        marked.append((entries[i][1], entries[i][2]))
            execute = pipe.execute_command
            for i in range(0, len(publish), 2):
                if publish[i]:
                    execute("PUBLISH", publish[i], publish[i + 1])
            mset: list[bytes] = []
            for key, index in last.items():
                mset.append(key)
                mset.append(publish[2 * index - 1])
            if mset:
                execute("MSET", *mset)
            trimmed: set[bytes | str | int] = set()
            for (stream_key, seen, _ident, fields), ok in zip(entries, fresh, strict=True):
                if not ok:
                    continue
                added += 1
                values = [publish[2 * v - 1] if isinstance(v, int) else v for v in fields]
                execute("XADD", stream_key, "MAXLEN", "~", self.stream_maxlen, "*", *values)
                if seen and seen not in trimmed:
                    trimmed.add(seen)
                    execute("ZREMRANGEBYRANK", seen, 0, -(self.seen_cap + 1))
                    execute("PEXPIRE", seen, self.seen_ttl_ms)

        fence = self.fence
        if fence is None:
            async with self._redis.pipeline(transaction=False) as pipe:
                await queue(pipe)
                await pipe.execute()
        else:
            try:
                await transaction(self._redis, queue, fence=fence)
            except LeaseLost:  # nothing was written: forget the identities marked for it
                await self._unmark(marked)
                raise
        return added, len(entries) - added

    async def _unmark(self, marked: list[tuple[bytes | str | int, bytes | str | int]]) -> None:
        """Forget identities marked as seen for a batch that was then not written, so that the
        new leader (or a retry) can still append them. Best effort: Redis errors are ignored."""
        if not marked:
            return
        undo = self._redis.pipeline(transaction=False)
        for seen, ident in marked:
            undo.execute_command("ZREM", seen, ident)
        try:
            async with undo:
                await undo.execute()
        except REDIS_FAILURES as exc:
            log.warning(
                "could not forget %d stream identities of a fenced batch (%s)", len(marked), exc
            )


class _NodeBatch:
    """The part of a batch for one cluster node (the script's publish / last / stream lists)."""

    __slots__ = ("last", "publish", "stream")

    def __init__(self) -> None:
        self.publish: list[bytes] = []
        self.last: dict[bytes, int] = {}
        self.stream: list[bytes | str | int] = []


def _entries(
    stream: list[bytes | str | int],
) -> list[tuple[bytes | str | int, bytes | str | int, bytes | str | int, list[bytes | str | int]]]:
    """The script's flat stream list as (key, seen_key, identity, [field, value, ...])."""
    out = []
    j = 0
    while j < len(stream):
        key, seen, ident, count = stream[j], stream[j + 1], stream[j + 2], int(stream[j + 3])
        out.append((key, seen, ident, stream[j + 4 : j + 4 + 2 * count]))
        j += 4 + 2 * count
    return out
