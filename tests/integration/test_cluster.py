"""The Redis contract on a Redis Cluster of three primaries (docs/contract.md, "Redis Cluster").

Everything real: the session's cluster (``redis_cluster`` in tests/conftest.py: three
``redis-server --cluster-enabled yes`` on free loopback ports, ``redis-cli --cluster create``),
the emulator over loopback, a collector given a plain ``redis://`` URL of ONE node (the cluster is
detected), intents written with cluster-aware plain commands (``SADD`` + ``EXPIRE``, routed to the
node owning each key), and listeners that ``SSUBSCRIBE`` on the node owning each channel, as
``redis-cli -c SSUBSCRIBE`` does.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.collector.process_support import COMMAND, CollectorProcess, collector_processes
from tests.collector.service_support import FAST
from tests.deployments import ClusterDeployment
from tests.helpers import scaled, stream_entries, text, text_map, texts, until
from upbit_fanout.client import Event, FanoutClient, Gap
from upbit_fanout.collector import Collector
from upbit_fanout.collector.publisher import Publisher
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.commands.status import gather
from upbit_fanout.emulator import Emulator
from upbit_fanout.subscriptions.connection import (
    channel_node,
    cluster_of,
    node_client,
    open_redis,
    primaries,
)
from upbit_fanout.subscriptions.keys import Keys
from upbit_fanout.subscriptions.lease import TAKE_SCRIPT, LeaseLost, parse_leader

TOPICS_A = ["ticker:KRW-BTC", "trade:KRW-BTC", "ticker:KRW-ETH"]
TOPICS_B = ["ticker:KRW-XRP", "orderbook:KRW-ETH.5", "trade:KRW-XRP"]
CODES = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-TRX"]


@dataclass
class Sharded:
    """SSUBSCRIBEs each channel on the node that owns its slot; keeps every message."""

    redis: aioredis.Redis
    channels: list[str]
    messages: dict[str, list[tuple[float, bytes]]] = field(default_factory=dict)
    _clients: list[aioredis.Redis] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Sharded:
        by_node: dict[tuple[str, int], list[str]] = {}
        for channel in self.channels:
            by_node.setdefault(channel_node(self.redis, channel), []).append(channel)
            self.messages[channel] = []
        for (host, port), channels in by_node.items():
            client = node_client(self.redis, host, port)
            self._clients.append(client)
            pubsub = client.pubsub()
            for channel in channels:  # one SSUBSCRIBE per slot: several would be CROSSSLOT
                await pubsub.ssubscribe(channel)
            self._tasks.append(asyncio.create_task(self._run(pubsub)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
        for client in self._clients:
            await client.aclose()

    async def _run(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "smessage":
                    channel = message["channel"].decode()
                    self.messages[channel].append((time.monotonic(), message["data"]))
                    self._arrived.set()
        finally:
            await pubsub.aclose()

    def on(self, channel: str, since: float = 0.0) -> list[bytes]:
        return [data for at, data in self.messages[channel] if at >= since]

    async def wait_for(self, check: Callable[[], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not check():
                self._arrived.clear()
                await self._arrived.wait()


async def _want(r: aioredis.Redis, keys: Keys, client_id: str, topics: Iterable[str]) -> None:
    """What redis-cli -c does: SADD + EXPIRE, each routed to the node owning the key."""
    await r.sadd(keys.intents(client_id), *topics)
    await r.expire(keys.intents(client_id), 60)


@asynccontextmanager
async def _cluster_client(deployment: ClusterDeployment) -> AsyncIterator[aioredis.Redis]:
    r = await open_redis(deployment.node_url)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.mark.slow
@pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`")
async def test_the_contract_on_a_three_primary_cluster(
    redis_cluster: ClusterDeployment, keys: Keys
) -> None:
    keys = keys.clustered()
    async with _cluster_client(redis_cluster) as r, Emulator(port=0, rate=200, seed=21) as emu:
        assert cluster_of(r) is not None, "a plain redis:// URL of a cluster node is detected"
        keys = _spanning_prefix(r, keys, TOPICS_A + TOPICS_B)
        nodes = {topic: channel_node(r, keys.channel(topic)) for topic in TOPICS_A + TOPICS_B}
        channels = [keys.channel(topic) for topic in TOPICS_A + TOPICS_B]
        collector_redis = await open_redis(redis_cluster.node_url)
        async with (
            Sharded(r, [*channels, keys.canary]) as sharded,
            Collector(
                redis=collector_redis,
                key_prefix=keys.prefix,  # cluster names are chosen by the collector itself
                upstream_url=emu.public_url,
                leader_lease=3.0,
                **FAST,
            ) as collector,
        ):
            assert collector.keys == keys
            await _want(r, keys, "a", TOPICS_A)
            await _want(r, keys, "b", TOPICS_B)
            # Events on every sharded channel, whichever node owns it.
            await sharded.wait_for(lambda: all(sharded.on(ch) for ch in channels), 20)
            await until(
                lambda: _union_is(r, keys, set(TOPICS_A + TOPICS_B)), 10
            )  # P:union, in the collector's own slot

            # Exact payloads: Upbit's DEFAULT bytes are published as they are.
            frame = (
                b'{"type":"ticker","code":"KRW-BTC","opening_price":8450000.00000000,'
                b'"trade_price":1.16539E8,"acc_trade_volume":12312.36058857123456789,'
                b'"timestamp":1700000000000,"stream_type":"REALTIME"}'
            )
            since = time.monotonic()
            assert await emu.inject(frame) == 1
            channel = keys.channel("ticker:KRW-BTC")
            await sharded.wait_for(lambda: frame in sharded.on(channel, since), 10)

            # Last values live in the channel's slot and hold the channel's latest payload.
            for topic in TOPICS_A + TOPICS_B:
                last = await r.get(keys.last(topic))
                assert last is not None, topic
                assert last in sharded.on(keys.channel(topic)), topic
                assert channel_node(r, keys.last(topic)) == nodes[topic]

            # The status hash is readable (and written by the leader, in the {P} slot).
            status = text_map(await r.hgetall(keys.status))
            assert status["collector_id"] == collector.collector_id
            assert status["state"] == "subscribed", status
            assert int(status["union_size"]) == len(TOPICS_A + TOPICS_B)
            # The operator's view (upbit-fanout status / check) reads it all from the cluster.
            report = await gather(redis_cluster.node_url, Keys(keys.prefix))
            assert report["collector"]["state"] == "subscribed"
            assert report["collector_listening"] is True
            assert len(report["redis_cluster_primaries"]) == 3
            assert sorted(c["client_id"] for c in report["clients"]) == ["a", "b"]
            assert report["union"] == sorted(TOPICS_A + TOPICS_B)
            assert report["leader"]["collector_id"] == collector.collector_id
            # The canary is published and received through sharded pub/sub too.
            await sharded.wait_for(lambda: bool(sharded.on(keys.canary)), 15)
            # ... and the collector's own canary listener (SSUBSCRIBEd on its node) got it back.
            await until(lambda: _field(r, keys, "canary_ok_at"), 15)
            check = await asyncio.create_subprocess_exec(
                str(COMMAND), "check", "--redis-url", redis_cluster.url,
                "--key-prefix", keys.prefix, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            verdict, _ = await asyncio.wait_for(check.communicate(), 30)
            assert check.returncode == 0, verdict
            assert verdict.startswith(b"ok: "), verdict

            # Fencing: every primary holds a copy of the leader's value.
            leader = await r.get(keys.leader)
            assert leader is not None
            assert parse_leader(leader)[1] == collector.collector_id
            for host, port in primaries(r):
                node = node_client(r, host, port)
                try:
                    copies = [k async for k in node.scan_iter(match=keys.fence_pattern)]
                    assert copies, f"no fence copy on {host}:{port}"
                    assert {await node.get(k) for k in copies} == {leader}
                finally:
                    await node.aclose()

            # redis-cli users: -c follows the MOVED to the node owning the channel's slot, from
            # any node; and `upbit-fanout tail` (the client library) given one node's URL.
            other = next(p for p in redis_cluster.ports if p != nodes["ticker:KRW-ETH"][1])
            cli = await _lines_of(
                "redis-cli", "-c", "-p", str(other), "SSUBSCRIBE", keys.channel("ticker:KRW-ETH")
            )
            tail = await _lines_of(
                str(COMMAND), "tail", "--redis-url", redis_cluster.node_url,
                "--key-prefix", keys.prefix, "--count", "2", "ticker:KRW-XRP",
            )  # fmt: skip
            assert any(b'"code":"KRW-ETH"' in line for line in cli), cli
            assert len(tail) == 2
            assert all(orjson.loads(line)["topic"] == "ticker:KRW-XRP" for line in tail), tail

            # Expiry shrinks the union: b's lease runs out on whichever node holds its key.
            await r.pexpire(keys.intents("b"), 200)
            await until(lambda: _union_is(r, keys, set(TOPICS_A)), 10)
            assert int((await r.hget(keys.status, "union_size")) or 0) == len(TOPICS_A)
        await collector_redis.aclose()


async def _lines_of(*command: str, within: float = 10.0) -> list[bytes]:
    """Run a command until it printed a JSON line (or exited); its stdout lines."""
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(within):
            while line := await process.stdout.readline():
                lines.append(line.strip())
                if command[0] == "redis-cli" and line.startswith(b"{"):
                    break
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    return [line for line in lines if line.startswith(b"{")]


async def _field(r: aioredis.Redis, keys: Keys, name: str) -> bool:
    return bool(await r.hget(keys.status, name))


async def _union_is(r: aioredis.Redis, keys: Keys, topics: set[str]) -> bool:
    return texts(await r.smembers(keys.union)) == topics


async def test_the_client_library_ssubscribes_and_snapshots_from_last_values(
    redis_cluster: ClusterDeployment, keys: Keys
) -> None:
    """The library, given the cluster URL, writes its intent, gets each topic's last value as
    a snapshot and then live events over SSUBSCRIBE on the owning nodes."""
    keys = keys.clustered()
    async with Emulator(port=0, rate=200, seed=22) as emu:
        collector_redis = await open_redis(redis_cluster.url)
        first_redis = await open_redis(redis_cluster.url)
        async with Collector(
            redis=collector_redis, key_prefix=keys.prefix, upstream_url=emu.public_url, **FAST
        ):
            async with FanoutClient(
                redis=redis_cluster.url, key_prefix=keys.prefix, client_id="first"
            ) as first:
                await first.subscribe(*TOPICS_A)
                seen: set[str] = set()
                async with asyncio.timeout(20):
                    async for item in first:
                        if isinstance(item, Event) and not item.cached:
                            seen.add(item.topic)
                            if seen == set(TOPICS_A):
                                break
                # Snapshots come from the last values, in their channels' slots.
                snaps = await first.snapshots(TOPICS_A, timeout=5)
                for topic in TOPICS_A:
                    assert snaps[topic].cached, topic
                    assert await first_redis.exists(keys.last(topic)), topic
                    body = orjson.loads(snaps[topic].payload)
                    assert (body["type"], body["code"]) == tuple(topic.split(":"))
            # A topic nobody wants yet: the client SSUBSCRIBEs and asks the leader on the classic
            # P:snapshot channel; the answer comes from REST over the sharded channel.
            async with FanoutClient(
                redis=redis_cluster.node_url, key_prefix=keys.prefix, client_id="second"
            ) as second:
                fresh = await second.snapshot("trade:KRW-XRP", timeout=15)
                assert not fresh.cached
                assert fresh.topic == "trade:KRW-XRP"
                assert fresh.stream_type == "REST"
        await collector_redis.aclose()
        await first_redis.aclose()


@pytest.mark.slow
async def test_a_resharding_under_a_running_collector_and_client(
    redis_cluster: ClusterDeployment, keys: Keys
) -> None:
    """A topic's slot moves to another primary (MOVED from then on): the client gets a Gap and
    live events again from the new owner; the collector publishes there (its batch that met
    the moved slot failed, with a gap notice); the last value moved with the slot."""
    keys = keys.clustered()
    topic = "ticker:KRW-BTC"
    channel = keys.channel(topic)
    async with Emulator(port=0, rate=200, seed=24) as emu:
        collector_redis = await open_redis(redis_cluster.url)
        async with (
            Collector(
                redis=collector_redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                leader_lease=3.0,
                **FAST,
            ),
            FanoutClient(
                redis=redis_cluster.url,
                key_prefix=keys.prefix,
                client_id="mover",
                health_check_interval=0.5,
            ) as client,
        ):
            await client.subscribe(topic)
            await _next_live(client, topic)
            before = redis_cluster.owner(channel)
            target = next(port for port in redis_cluster.ports if port != before)
            assert redis_cluster.move_slot(channel, target) == before
            assert redis_cluster.owner(keys.last(topic)) == target
            gap_seen = False
            async with asyncio.timeout(20):
                async for item in client:
                    if isinstance(item, Gap):
                        gap_seen = True
                    elif gap_seen and isinstance(item, Event) and not item.cached:
                        break
            # The collector publishes on the new owner now (a bare SSUBSCRIBE there sees it).
            node = node_client(collector_redis, "127.0.0.1", target)
            try:
                pubsub = node.pubsub()
                await pubsub.ssubscribe(channel)
                async with asyncio.timeout(10):
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "smessage":
                            break
                await pubsub.aclose()
            finally:
                await node.aclose()
        await collector_redis.aclose()


async def _next_live(client: FanoutClient, topic: str) -> None:
    async with asyncio.timeout(20):
        async for item in client:
            if isinstance(item, Event) and item.topic == topic and not item.cached:
                return


@pytest.mark.slow
@pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`")
async def test_a_paused_leader_publishes_nothing_on_any_node_after_a_takeover(
    redis_cluster: ClusterDeployment, keys: Keys, tmp_path: Path
) -> None:
    """Two collector processes on the cluster (one given the cluster URL, one a plain URL of a
    node); the leader is stopped (SIGSTOP) and woken after the standby took over: the standby
    publishes on every node, and nothing of the former leader's shows up afterwards.

    End to end only: a woken leader usually notices the lost lease before it publishes again,
    so this test alone would not catch a missing fence check; the fence itself is checked
    directly by ``test_fencing_holds_on_every_node_after_a_takeover``."""
    keys = keys.clustered()
    lease = 2.0
    settings = {"leader_lease": str(lease), "backoff_initial": "0.05", "ping_interval": "2"}
    async with (
        _cluster_client(redis_cluster) as r,
        Emulator(port=0, seed=23, rate=300) as emu,
        collector_processes() as procs,
    ):
        trades = _spread(r, keys, [f"trade:{code}" for code in CODES])
        channels = [keys.channel(topic) for topic in trades]
        async with Sharded(r, channels) as sharded:
            await _want(r, keys, "bot", trades)
            a = await CollectorProcess.start(
                redis_cluster.url, keys, emu.public_url, "a", tmp_path, **settings
            )
            procs.append(a)
            await sharded.wait_for(lambda: all(sharded.on(ch) for ch in channels), 20)
            b = await CollectorProcess.start(
                redis_cluster.node_url, keys, emu.public_url, "b", tmp_path, **settings
            )
            procs.append(b)
            await b.wait_log("standing by")

            stopped_wall = time.time_ns() // 1_000_000
            a.signal(signal.SIGSTOP)  # a's socket keeps filling with frames
            await until(lambda: _leader_is(r, keys, "b"), lease * 3 + 10)
            took = time.monotonic()
            await sharded.wait_for(
                lambda: all(sharded.on(ch, took) for ch in channels), 15
            )  # b publishes on both nodes
            await asyncio.sleep(1.0)
            a.signal(signal.SIGCONT)
            await a.wait_log("lost")
            woke = time.monotonic()
            await asyncio.sleep(1.5)  # a's pending batches had their chance
            await sharded.wait_for(lambda: all(sharded.on(ch, woke) for ch in channels), 15)
            for channel in channels:
                received = [orjson.loads(data) for data in sharded.on(channel)]
                ids = Counter(event["sequential_id"] for event in received)
                assert [sid for sid, n in ids.items() if n > 1] == [], f"duplicates on {channel}"
                stale = [
                    event
                    for data in sharded.on(channel, took)
                    if int((event := orjson.loads(data))["trade_timestamp"]) < stopped_wall
                ]
                assert stale == [], f"{len(stale)} of a's events published on {channel}"
            assert "standing by" in a.log or "lost" in a.log


def _spanning_prefix(r: aioredis.Redis, keys: Keys, topics: list[str]) -> Keys:
    """The test's prefix, with a digit added if need be, such that the topics' channels live on at
    least two nodes: the test is about spreading (with six channels on three nodes, one random
    prefix in 243 puts them all on one node)."""
    for attempt in range(50):
        candidate = keys if attempt == 0 else Keys(f"{keys.prefix}{attempt}", cluster=True)
        if len({channel_node(r, candidate.channel(topic)) for topic in topics}) >= 2:
            return candidate
    raise AssertionError(f"no prefix of {keys.prefix!r} spreads {topics} over two nodes")


def _spread(r: aioredis.Redis, keys: Keys, topics: list[str]) -> list[str]:
    """One topic per node (the first whose channel that node owns), at least two nodes."""
    picked: dict[tuple[str, int], str] = {}
    for topic in topics:
        picked.setdefault(channel_node(r, keys.channel(topic)), topic)
    assert len(picked) >= 2, "the topics' channels must span nodes"
    return sorted(picked.values())


async def _leader_is(r: aioredis.Redis, keys: Keys, collector_id: str) -> bool:
    try:
        value = await r.get(keys.leader)
    except RedisError:
        return False
    return value is not None and parse_leader(value)[1] == collector_id


async def _take(r: aioredis.Redis, keys: Keys, collector_id: str, lease_ms: int) -> bytes:
    """What a collector does to take the lease (TAKE_SCRIPT, in the collector's own slot)."""
    reply = await r.eval(
        TAKE_SCRIPT, 2, keys.leader, keys.leader_token, collector_id, lease_ms, "0"
    )
    assert reply[0] == 1, reply
    return bytes(reply[1])


async def test_fencing_holds_on_every_node_after_a_takeover(
    redis_cluster: ClusterDeployment, keys: Keys
) -> None:
    """The property fencing must keep on a cluster, checked directly: once a new leader has
    taken P:leader and installed its value on every node, a former leader's batch (spanning
    every node, private stream included) writes NOTHING anywhere: no SPUBLISH, no last value, no
    stream entry. A node that lost its fence copy refuses the former leader too, and the new
    leader puts the copy back and publishes."""
    keys = keys.clustered()
    async with _cluster_client(redis_cluster) as r:
        topics = _spread(r, keys, [f"ticker:{code}" for code in CODES])
        items = [
            Outgoing(topic=topic, payload=f'{{"n":"{topic}"}}'.encode(), type="x")
            for topic in topics
        ]
        private = Outgoing(
            topic="myAsset", payload=b'{"a":1}', private=True, type="myAsset", identity="i-1"
        )
        old = Publisher(r, keys)
        old.fence = (keys.leader.encode(), await _take(r, keys, "old", 1000))
        channels = [keys.channel(topic) for topic in topics]
        async with Sharded(r, channels) as sharded:
            await old.publish([*items, private])
            await sharded.wait_for(lambda: all(sharded.on(ch) for ch in channels), 10)
            assert old.fence_installs == 1
            await r.delete(keys.leader)  # the old leader's lease lapsed (it was paused)
            new = Publisher(r, keys)
            new.fence = (keys.leader.encode(), await _take(r, keys, "new", 30_000))
            await new.install_fence()
            before = {ch: len(sharded.on(ch)) for ch in channels}
            stream_before = await r.xlen(keys.stream("myAsset"))

            stale = [Outgoing(t, b'{"stale":1}', "x") for t in topics]
            with pytest.raises(LeaseLost):
                await old.publish([*stale, private])
            # A node whose copy is gone (a restart, a slot moved): refused too, not re-installed.
            first_copy = keys.fence(new._fence_tag(_owner_name(r, channels[0])))
            assert await r.delete(first_copy) == 1
            with pytest.raises(LeaseLost):
                await old.publish(stale[:1])
            assert await r.exists(first_copy) == 0, "the former leader re-installed a fence"

            # The new leader puts the copy back by itself and publishes on every node.
            fresh = [Outgoing(t, b'{"fresh":1}', "x") for t in topics]
            await new.publish(fresh)
            await sharded.wait_for(
                lambda: all(b'{"fresh":1}' in sharded.on(ch) for ch in channels), 10
            )
            for channel, topic in zip(channels, topics, strict=True):
                assert b'{"stale":1}' not in sharded.on(channel)
                assert len(sharded.on(channel)) == before[channel] + 1
                assert await r.get(keys.last(topic)) == b'{"fresh":1}'
            assert await r.xlen(keys.stream("myAsset")) == stream_before == 1
            assert old.fenced_batches == 2

            # A copy written by hand with a later token: refused and said (no endless retry as
            # for a lost lease), and served again once the key is gone.
            await r.set(first_copy, b"99999999999999 intruder")
            with pytest.raises(RedisError, match="later token"):
                await new.publish(fresh[:1])
            await r.delete(first_copy)
            await new.publish(fresh[:1])


def _owner_name(r: aioredis.Redis, channel: str) -> str:
    host, port = channel_node(r, channel)
    return f"{host}:{port}"


@pytest.fixture
def cluster_with_replica(tmp_path: Path) -> Iterator[ClusterDeployment]:
    deployment = ClusterDeployment(tmp_path)
    try:
        deployment.start(replica_of_first=True)
        yield deployment
    finally:
        deployment.stop()


@pytest.mark.slow
async def test_a_primary_failover_under_a_running_collector_and_client(
    cluster_with_replica: ClusterDeployment, keys: Keys
) -> None:
    """``CLUSTER FAILOVER``: the replica of the primary owning a client's channel takes over.
    The client gets a Gap and live events from the promoted node; the collector (never
    restarted) publishes there, its fence copy came along by replication, and its intent
    tracker follows the new set of primaries."""
    deployment = cluster_with_replica
    keys = keys.clustered()
    async with (
        _cluster_client(deployment) as r,
        Emulator(port=0, rate=200, seed=25) as emu,
    ):
        first = deployment.ports[0]
        # The key prefix is random, so which node owns a channel is too: 42 candidates make
        # "none on the first node" a 1-in-25-million event ((2/3) ** 42); 7 made it 1 in 17.
        candidates = [f"{kind}:{code}" for kind in ("ticker", "trade") for code in CODES]
        candidates += [
            f"orderbook:{code}{depth}" for depth in ("", ".1", ".5", ".15") for code in CODES
        ]
        topic = next(name for name in candidates if channel_node(r, keys.channel(name))[1] == first)
        collector_redis = await open_redis(deployment.url)
        async with (
            Collector(
                redis=collector_redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                leader_lease=3.0,
                **FAST,
            ) as collector,
            FanoutClient(
                redis=deployment.url,
                key_prefix=keys.prefix,
                client_id="survivor",
                health_check_interval=0.5,
            ) as client,
        ):
            await client.subscribe(topic)
            await _next_live(client, topic)
            promoted = deployment.failover()
            assert deployment.owner(keys.channel(topic)) == promoted
            gap_seen = False
            async with asyncio.timeout(20):
                async for item in client:
                    if isinstance(item, Gap):
                        gap_seen = True
                    elif gap_seen and isinstance(item, Event) and not item.cached:
                        break
            # A new client's intent, written after the failover, is served: the tracker
            # sweeps and listens on the promoted node too.
            await _want(r, keys, "late", ["trade:KRW-BTC"])
            await until(lambda: _in_union(r, keys, "trade:KRW-BTC"), 15)
            assert collector.is_leader
        await collector_redis.aclose()


async def _in_union(r: aioredis.Redis, keys: Keys, topic: str) -> bool:
    return bool(await r.sismember(keys.union, topic))


ACCESS = "AkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAkAk"
SECRET = "Sx9kTr4WqPz2LmN8vBc6Hd3Jf7Gy5Ue1Oi0Pa2Sd"


async def test_private_events_reach_their_stream_and_channel_on_the_cluster(
    redis_cluster: ClusterDeployment, keys: Keys
) -> None:
    """With API keys the leader records every myOrder event in ``P:stream:myOrder`` (on the
    node of its slot, deduplicated through its seen set in the same slot) and SPUBLISHes the
    wanted private topic on its channel's node: every fill once, in order, in both."""
    keys = keys.clustered()
    topic = "myOrder:KRW-BTC"
    async with (
        _cluster_client(redis_cluster) as r,
        Emulator(port=0, seed=26, rate=50, access_key=ACCESS, secret_key=SECRET) as emu,
    ):
        collector_redis = await open_redis(redis_cluster.url)
        async with (
            Sharded(r, [keys.channel(topic)]) as sharded,
            Collector(
                redis=collector_redis,
                key_prefix=keys.prefix,
                upstream_url=emu.public_url,
                private_url=emu.private_url,
                access_key=ACCESS,
                secret_key=SECRET,
                leader_lease=3.0,
                **FAST,
            ),
        ):
            await _want(r, keys, "books", [topic])
            await until(lambda: _field_starts(r, keys, "private_last_reconcile", "ok"), 30)
            placed = [
                emu.place_order(code="KRW-BTC", side="bid", ord_type="price", price="6000")
                for _ in range(20)
            ]
            await until(lambda: _stream_at_least(r, keys, 40), 30)
            await sharded.wait_for(lambda: len(sharded.on(keys.channel(topic))) >= 40, 15)
            await asyncio.sleep(0.5)  # nothing more may come
            entries = stream_entries(await r.xrange(keys.stream("myOrder")))
            published = [orjson.loads(data) for data in sharded.on(keys.channel(topic))]
            assert await r.zcard(keys.stream_seen("myOrder")) >= 40  # the dedupe set is used
            seen_node = channel_node(r, keys.stream_seen("myOrder"))
            assert seen_node == channel_node(r, keys.stream("myOrder"))
        await collector_redis.aclose()
    states: dict[str, list[str]] = {}
    for _, fields in entries:
        if fields[b"source"] == b"ws":
            event = orjson.loads(fields[b"payload"])
            states.setdefault(event["uuid"], []).append(event["state"])
    assert set(placed) <= set(states)
    assert all(states[uuid] == ["trade", "done"] for uuid in placed), states
    assert sorted(e["uuid"] for e in published if e["uuid"] in placed) == sorted(placed * 2)


async def _field_starts(r: aioredis.Redis, keys: Keys, name: str, prefix: str) -> bool:
    value = await r.hget(keys.status, name)
    return value is not None and text(value).startswith(prefix)


async def _stream_at_least(r: aioredis.Redis, keys: Keys, count: int) -> bool:
    entries = stream_entries(await r.xrange(keys.stream("myOrder")))
    return sum(1 for _, fields in entries if fields[b"source"] == b"ws") >= count


def _power_back(deployment: ClusterDeployment) -> None:
    """Start every stopped node again on its port, with its cluster configuration (the slots
    each owns) and no data: what a cluster without persistence is after a power cut."""
    for port in deployment.ports:
        deployment._spawn(port)
    deployment.wait_ready()


@pytest.mark.slow
@pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`")
async def test_the_whole_cluster_going_away_and_coming_back(tmp_path: Path, keys: Keys) -> None:
    """A power cut: every node stopped for a few seconds, then started again, empty. redis-py's
    cluster client raises ``RedisClusterException`` then (no ``RedisError``): the collector
    process stays up and reports the outage without a traceback or a crashed task, and the
    client reconnects by itself, says ``Gap``, re-asserts its intent and gets live events."""
    deployment = ClusterDeployment(tmp_path / "cluster")
    deployment.workdir.mkdir()
    deployment.start()
    try:
        async with Emulator(port=0, rate=200, seed=27) as emu, collector_processes() as procs:
            process = await CollectorProcess.start(
                deployment.url, keys, emu.public_url, "cut", tmp_path
            )
            procs.append(process)
            async with FanoutClient(
                redis=deployment.url,
                key_prefix=keys.prefix,
                client_id="survivor",
                health_check_interval=0.5,
            ) as client:
                await client.subscribe("ticker:KRW-BTC")
                await _next_live(client, "ticker:KRW-BTC")
                deployment.stop()
                await process.wait_log("Redis unreachable", within=15)
                await asyncio.sleep(scaled(2))
                _power_back(deployment)
                gap_seen = False
                async with asyncio.timeout(scaled(60)):
                    async for item in client:
                        if isinstance(item, Gap):
                            gap_seen = True
                        elif gap_seen and isinstance(item, Event) and not item.cached:
                            break
            assert process.process.returncode is None
            assert "Traceback" not in process.log, process.log
            assert "crashed" not in process.log
    finally:
        deployment.stop()
