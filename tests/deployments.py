"""Redis deployments a test starts for itself: a primary with a replica watched by three Sentinels,
and a Redis Cluster of three primaries.

Every process is a real ``redis-server`` on a free loopback port, with its files in a temporary
directory, stopped when the deployment is closed. Nothing is started when the binary is missing
(the test is skipped, saying why).

The single servers of tests/conftest.py (``RedisServer``) and bench/fanout_capacity.py are
started with the same pieces (:func:`redis_server_args`, :func:`spawn`, :func:`wait_ping`,
:func:`stop_processes`), and the bench's Cluster is a :class:`ClusterDeployment`: how a node is
started is written once.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port

SERVICE = "fanout"


def redis_server_args(
    binary: str, port: int, *extra: str, workdir: Path | None = None
) -> list[str]:
    """The command line of one loopback ``redis-server`` without persistence; ``extra`` is
    appended. ``workdir``: where its files go (a cluster node's file; a dump nobody asked for);
    without one it writes none."""
    files = ["--dir", str(workdir), "--dbfilename", f"dump-{port}.rdb"] if workdir else []
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        *files,
        *extra,
    ]  # fmt: skip


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    """Start a server process, its output discarded."""
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process, in order, then wait for each (SIGKILL after 10 s); empties the
    list."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    processes.clear()


def wait_ping(port: int, within: float = 10.0, *, password: str | None = None) -> None:
    """Until the server on ``port`` answers PING (its error after ``within`` seconds)."""
    deadline = time.monotonic() + within
    client = redis.Redis(
        port=port, password=password, socket_connect_timeout=0.2, socket_timeout=1.0
    )
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@dataclass
class SentinelDeployment:
    """Primary + replica + three Sentinels (quorum 2), all on loopback."""

    workdir: Path
    service: str = SERVICE
    data_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server binary not installed; this test needs a Sentinel set-up")
        primary, replica = free_port(), free_port()
        self.data_ports = [primary, replica]
        for port in self.data_ports:
            args = redis_server_args(
                binary, port, "--notify-keyspace-events", "Egsxe", workdir=self.workdir
            )
            if port == replica:
                args += ["--replicaof", "127.0.0.1", str(primary)]
            self._processes.append(spawn(args))
        for port in self.data_ports:
            wait_ping(port)
        for _ in range(3):
            port = free_port()
            self.sentinel_ports.append(port)
            config = self.workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.workdir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 4000\n"
                f"sentinel parallel-syncs {self.service} 1\n",
                encoding="utf-8",
            )
            self._processes.append(spawn([binary, str(config), "--sentinel"]))
        for port in self.sentinel_ports:
            wait_ping(port)
        self.wait_ready()

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], socket_timeout=2.0)

    def primary_port(self) -> int:
        client = self.sentinel()
        try:
            return _primary_port(client, self.service)
        finally:
            client.close()

    def wait_ready(self, within: float = 20.0) -> None:
        """Until every Sentinel knows the primary, its replica (in sync) and the other two."""
        deadline = time.monotonic() + within
        while True:
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the Sentinel set-up did not settle within {within} s")
            time.sleep(0.1)

    def _ready(self) -> bool:
        for index in range(len(self.sentinel_ports)):
            client = self.sentinel(index)
            try:
                master = client.sentinel_master(self.service)
                assert isinstance(master, dict), master
                if master["num-other-sentinels"] < 2 or master["num-slaves"] < 1:
                    return False
                for replica in client.sentinel_slaves(self.service):
                    if replica["is_sdown"] or replica["master-link-status"] != "ok":
                        return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def failover(self, within: float = 20.0) -> int:
        """``SENTINEL FAILOVER``; returns the new primary's port once every Sentinel names it."""
        before = self.primary_port()
        client = self.sentinel()
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        finally:
            client.close()
        deadline = time.monotonic() + within
        while True:
            ports = set()
            for index in range(len(self.sentinel_ports)):
                client = self.sentinel(index)
                try:
                    ports.add(_primary_port(client, self.service))
                except redis.RedisError:
                    ports.add(-1)
                finally:
                    client.close()
            if len(ports) == 1 and before not in ports and -1 not in ports:
                (after,) = ports
                # and the new primary says so itself
                node = redis.Redis(port=after, socket_timeout=2.0)
                try:
                    if node.info("replication")["role"] == "master":
                        return after
                finally:
                    node.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"no failover within {within} s (Sentinels say {ports})")
            time.sleep(0.1)

    def stop(self) -> None:
        self._processes.reverse()  # the Sentinels first
        stop_processes(self._processes)


def cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free as well."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


@dataclass
class ClusterDeployment:
    """A Redis Cluster of three primaries (no replicas) on loopback, slots split evenly.

    Started in a second or two: ``cluster-node-timeout`` is short and ``redis-cli --cluster
    create --cluster-yes`` assigns the slots; :meth:`start` returns once every node says
    ``cluster_state:ok`` and knows the whole slot map. ``extra_args`` go to every node's
    ``redis-server`` command line (a bench's output-buffer limit).
    """

    workdir: Path
    extra_args: tuple[str, ...] = ()
    node_timeout_ms: int = 1000
    """``cluster-node-timeout``: short, so that a failover is quick."""
    ports: list[int] = field(default_factory=list)
    replica_ports: list[int] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _binaries: tuple[str, str] = ("redis-server", "redis-cli")

    @property
    def url(self) -> str:
        """The explicit form (``redis+cluster://``); a plain URL of any node works too."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+cluster://{hosts}/"

    @property
    def node_url(self) -> str:
        """A plain URL of one node: the cluster is detected (``cluster_enabled:1``)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, primaries: int = 3, *, replica_of_first: bool = False) -> None:
        """Start the primaries; with ``replica_of_first`` one more node replicates the first
        primary (so that ``failover`` can promote it)."""
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            pytest.skip("redis-server and redis-cli are needed to start a Redis Cluster")
        self._binaries = (server, cli)
        self.ports = [cluster_port() for _ in range(primaries)]
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            wait_ping(port)
        self._cli(
            "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        )  # fmt: skip
        self.wait_ready()
        if replica_of_first:
            port = cluster_port()
            self.replica_ports.append(port)
            self._spawn(port)
            wait_ping(port)
            first = self.node(self.ports[0])
            try:
                first_id = first.execute_command("CLUSTER", "MYID").decode()
            finally:
                first.close()
            replica = self.node(port)
            try:
                # What redis-cli --cluster add-node --cluster-slave does, without its waits.
                replica.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
                deadline = time.monotonic() + 20
                while True:
                    try:
                        replica.execute_command("CLUSTER", "REPLICATE", first_id)
                        break
                    except redis.ResponseError:  # it does not know the primary yet
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            finally:
                replica.close()
            self.wait_ready(replica=port)

    def _spawn(self, port: int) -> None:
        server, _ = self._binaries
        args = redis_server_args(
            server, port,
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--notify-keyspace-events", "Egsxe",
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once (default: 5 s later)
            *self.extra_args,
            workdir=self.workdir,
        )  # fmt: skip
        self._processes.append(spawn(args))

    def _cli(self, *args: str) -> None:
        _, cli = self._binaries
        done = subprocess.run([cli, *args], capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            self.stop()
            raise AssertionError(f"redis-cli {args[:2]} failed: {done.stdout!r}")

    def failover(self, within: float = 20.0) -> int:
        """``CLUSTER FAILOVER`` on the replica: it becomes the primary of the first primary's
        slots (slot 0 among them: ``redis-cli --cluster create`` gives the first node the first
        range). Returns its port once every node agrees."""
        (replica,) = self.replica_ports
        node = self.node(replica)
        try:
            node.execute_command("CLUSTER", "FAILOVER")
        finally:
            node.close()
        deadline = time.monotonic() + within
        while not all(self._slot_owner(port, 0) == replica for port in self.all_ports):
            if time.monotonic() > deadline:
                raise AssertionError(f"no failover within {within} s")
            time.sleep(0.05)
        self.wait_ready()
        return replica

    @property
    def all_ports(self) -> list[int]:
        return self.ports + self.replica_ports

    def _slot_owner(self, port: int, slot: int) -> int | None:
        """The primary of ``slot`` as the node on ``port`` sees it."""
        client = self.node(port)
        try:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        except redis.RedisError:
            return None
        finally:
            client.close()
        return None

    def wait_ready(self, within: float = 20.0, replica: int | None = None) -> None:
        """Until every node says ``cluster_state:ok`` and knows every node (and ``replica`` is
        in sync with its primary)."""
        deadline = time.monotonic() + within
        while True:
            nodes = self.ports + self.replica_ports
            if all(self._node_ready(port) for port in nodes) and (
                replica is None or self._synced(replica)
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the Redis Cluster did not settle within {within} s")
            time.sleep(0.05)

    def _node_ready(self, port: int) -> bool:
        client = redis.Redis(port=port, socket_timeout=2.0)
        try:
            info = client.cluster("INFO")
            return bool(
                info.get("cluster_state") == "ok"
                and int(info.get("cluster_known_nodes", 0))
                == len(self.ports) + len(self.replica_ports)
                and int(info.get("cluster_slots_ok", 0)) == 16384
            )
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _synced(self, port: int) -> bool:
        client = redis.Redis(port=port, socket_timeout=2.0)
        try:
            return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2.0)

    def owner(self, key: str) -> int:
        """The port of the primary that owns ``key``'s slot."""
        client = self.node(self.ports[0])
        try:
            slot = int(client.cluster("KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise AssertionError(f"no node owns the slot of {key!r}")

    def move_slot(self, key: str, to_port: int) -> int:
        """Reshard: move the slot of ``key`` (with its keys) to the primary on ``to_port``, the
        way ``redis-cli --cluster reshard`` does (IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE on
        every node). Returns the port it came from."""
        from_port = self.owner(key)
        source, target = self.node(from_port), self.node(to_port)
        try:
            slot = int(source.cluster("KEYSLOT", key))
            source_id = source.execute_command("CLUSTER", "MYID").decode()
            target_id = target.execute_command("CLUSTER", "MYID").decode()
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            for port in self.ports:
                node = self.node(port)
                try:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
                finally:
                    node.close()
        finally:
            source.close()
            target.close()
        return from_port

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def stop(self) -> None:
        stop_processes(self._processes)


def _primary_port(sentinel: redis.Redis, service: str) -> int:
    """The primary's port as one Sentinel names it (``SENTINEL GET-MASTER-ADDR-BY-NAME``)."""
    reply = sentinel.sentinel_get_master_addr_by_name(service)
    assert isinstance(reply, tuple | list), f"Sentinel does not know {service!r}: {reply!r}"
    _, port = reply
    return int(port)
