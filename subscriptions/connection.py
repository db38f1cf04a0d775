"""One way to turn a Redis URL into a ``redis.asyncio.Redis``, Sentinel included.

Every part of upbit-fanout that is given a URL (the collector command, the client library, the
operator commands) connects through :func:`redis_from_url`, so they all accept the same forms:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path?db=N``:
  redis-py's own forms, passed to ``Redis.from_url`` unchanged;
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]`` (and
  ``rediss+sentinel://`` for TLS to the data nodes): a Sentinel-managed primary. The hosts are the
  Sentinels (port 26379 when left out), ``service_name`` is the name the Sentinels monitor, and the
  user and password are those of the Redis data nodes. Query parameters ``sentinel_username`` and
  ``sentinel_password`` authenticate to the Sentinels themselves (without them, the Sentinels are
  asked without a password).

A Sentinel-managed client asks the Sentinels for the current primary whenever it (re)connects, and
treats a ``READONLY`` reply (a primary demoted to replica under it) as a lost connection. That is
not enough on its own: after ``SENTINEL FAILOVER`` the old primary stays a writable primary for
several seconds before the Sentinels demote it, and connections already open to it keep working,
so their writes (a leader lease renewal, published events) land where nobody reads and are
discarded at the demotion. :func:`follow_primary`, called every second or so by the collector and
at every health check by the client library, asks the Sentinels and, when the primary moved, drops
every connection of the pool (in use ones too) so that each reconnects to the new primary. The
collector and the client library then take the same path as after a Redis restart (re-assert
intents, report a gap).

- ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]`` (and ``rediss+cluster://``
  for TLS): a Redis Cluster; the hosts are any of its nodes (port 6379 when left out), the rest of
  the cluster is discovered from them. A plain ``redis://`` URL of a cluster node works as well:
  :func:`open_redis` asks the node (``INFO cluster``) and switches to a cluster client when it says
  ``cluster_enabled:1``.

A cluster client is a ``redis.asyncio.cluster.RedisCluster``. It is handed around typed as
``Redis`` (the commands upbit-fanout uses have the same signatures; :func:`cluster_of` gives the
cluster type back where the two differ): it routes every keyed command to the node owning the
key's slot and follows ``MOVED`` / ``ASK`` redirections and failovers by refreshing its slot map.
What it cannot route by key (keyspace notifications, sharded subscriptions, one publish script per
node) is done on plain per-node connections from :func:`node_client`.

The parsers are pure (:func:`parse_sentinel_url`, :func:`parse_cluster_url`) and tested from a
table.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_FAILURES",
    "SENTINEL_SCHEMES",
    "ClusterURL",
    "SentinelURL",
    "channel_node",
    "cluster_of",
    "cluster_primaries",
    "follow_primary",
    "is_cluster_url",
    "is_sentinel_managed",
    "is_sentinel_url",
    "node_client",
    "open_redis",
    "parse_cluster_url",
    "parse_sentinel_url",
    "primaries",
    "redis_from_url",
    "refresh_slots",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
REDIS_FAILURES: Final = (RedisError, RedisClusterException, OSError)
"""What a call to Redis raises when Redis is away or refuses: redis-py's errors, its Cluster
client's own (``RedisClusterException``: a whole Cluster unreachable, a slot no node covers,
which are no ``RedisError``) and socket errors. Every loop that retries Redis catches these."""
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379
_NODE_OPTIONS = frozenset(
    {
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "ssl",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "client_name",
        "health_check_interval",
    }
)
"""Connection options a per-node client copies from its cluster client."""


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return _has_scheme(url, SENTINEL_SCHEMES)


def _has_scheme(url: str, schemes: Container[str]) -> bool:
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in schemes


def _userinfo(netloc: str) -> tuple[str, str | None, str | None]:
    """``(hosts, username, password)`` of a URL's ``[user[:password]@]hosts`` part, unquoted."""
    if "@" not in netloc:
        return netloc, None, None
    userinfo, _, hosts = netloc.rpartition("@")
    user_text, colon, password_text = userinfo.partition(":")
    return hosts, unquote(user_text) or None, unquote(password_text) if colon else None


def _host_port(text: str, default_port: int = DEFAULT_SENTINEL_PORT) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"an address needs a host: {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"a port is a number from 1 to 65535: {text!r}")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis+sentinel://[user:password@]h1[:p1][,h2[:p2]...]/service_name[/db]``.

    Raises ``ValueError`` with a message that says what would be right. Passwords never appear
    in the message.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    netloc, username, password = _userinfo(netloc)
    if not netloc:
        raise ValueError(
            "a Sentinel URL names its Sentinels: redis+sentinel://host:26379,host:26380/mymaster"
        )
    sentinels = tuple(_host_port(part) for part in netloc.split(",") if part)
    parts = [unquote(part) for part in path.split("/") if part]
    if not parts:
        raise ValueError(
            "a Sentinel URL names the monitored service after the hosts: "
            "redis+sentinel://host:26379/mymaster[/db]"
        )
    if len(parts) > 2:
        raise ValueError("a Sentinel URL's path is /service_name or /service_name/db")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"the database after the service name is a number: {parts[1]!r}")
        db = int(parts[1])
    params = parse_qs(query)
    unknown = set(params) - {"sentinel_username", "sentinel_password", "db"}
    if unknown:
        raise ValueError(
            f"unknown Sentinel URL parameter(s) {sorted(unknown)}: "
            "only sentinel_username, sentinel_password and db are understood"
        )
    if "db" in params:
        value = params["db"][-1]
        if not value.isdigit():
            raise ValueError(f"db is a number: {value!r}")
        db = int(value)
    return SentinelURL(
        sentinels=sentinels,
        service_name=parts[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=params.get("sentinel_username", [None])[-1],
        sentinel_password=params.get("sentinel_password", [None])[-1],
        ssl=scheme.lower() == "rediss+sentinel",
    )


@dataclass(frozen=True)
class ClusterURL:
    """The parts of a ``redis+cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False


def is_cluster_url(url: str) -> bool:
    return _has_scheme(url, CLUSTER_SCHEMES)


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse ``redis+cluster://[user:password@]h1[:p1][,h2[:p2]...][/]``.

    Raises ``ValueError`` saying what would be right (a cluster has one database, 0, so a path
    other than ``/`` or ``/0`` is refused). Passwords never appear in the message.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("a Cluster URL starts with redis+cluster:// or rediss+cluster://")
    rest, _, query = rest.partition("?")
    if query:
        raise ValueError("a Cluster URL takes no parameters: redis+cluster://host:port,host:port/")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    netloc, username, password = _userinfo(netloc)
    nodes = tuple(_host_port(part, DEFAULT_REDIS_PORT) for part in netloc.split(",") if part)
    if not nodes:
        raise ValueError("a Cluster URL names at least one node: redis+cluster://host:7000/")
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: end the URL with / or /0")
    return ClusterURL(
        nodes=nodes, username=username, password=password, ssl=scheme.lower() == "rediss+cluster"
    )


def cluster_of(redis: Redis) -> RedisCluster | None:
    """The cluster client behind ``redis``, or None for a single Redis (or Sentinel)."""
    client: object = redis
    return client if isinstance(client, RedisCluster) else None


def primaries(redis: Redis) -> list[tuple[str, int]]:
    """``(host, port)`` of every primary of the cluster as last seen (empty for a single Redis)."""
    cluster = cluster_of(redis)
    if cluster is None:
        return []
    return sorted((node.host, int(node.port)) for node in cluster.get_primaries())


def channel_node(redis: Redis, channel: str | bytes) -> tuple[str, int]:
    """``(host, port)`` of the primary owning a (sharded) channel's or key's slot, as the
    cluster client last saw the slot map. Raises ``ValueError`` for a single Redis."""
    cluster = cluster_of(redis)
    if cluster is None:
        raise ValueError("not a Redis Cluster client")
    node = cluster.nodes_manager.get_node_from_slot(key_slot(_bytes(channel)))
    return node.host, int(node.port)


async def refresh_slots(redis: Redis) -> None:
    """Ask the cluster for its slot map again (after a ``MOVED``, a failover, a resharding)."""
    cluster = cluster_of(redis)
    if cluster is not None:
        await cluster.nodes_manager.initialize()


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


async def cluster_primaries(redis: Redis) -> list[tuple[str, int]] | None:
    """The primaries of a cluster (loading the slot map when it is not loaded yet); None for a
    single Redis."""
    cluster = cluster_of(redis)
    if cluster is None:
        return None
    if not cluster.get_primaries():
        await cluster.nodes_manager.initialize()
    return primaries(redis)


def node_client(redis: Redis, host: str, port: int) -> Redis:
    """A plain client of one cluster node, with the cluster client's credentials and timeouts."""
    cluster = cluster_of(redis)
    options: dict[str, Any] = {}
    if cluster is not None:
        options = {
            key: value
            for key, value in cluster.get_connection_kwargs().items()
            if key in _NODE_OPTIONS and value is not None
        }
    return Redis(host=host, port=port, **options)


def _data_connection(parsed: ClusterURL | SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    """The data connections' options: ``options`` with the URL's user, password and TLS."""
    connection: dict[str, Any] = dict(options)
    if parsed.username is not None:
        connection["username"] = parsed.username
    if parsed.password is not None:
        connection["password"] = parsed.password
    if parsed.ssl:
        connection["ssl"] = True
    return connection


def _cluster_client(parsed: ClusterURL, options: dict[str, Any]) -> Redis:
    connection = _data_connection(parsed, options)
    connection.pop("db", None)
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        require_full_coverage=False,
        **connection,
    )
    return cast(Redis, cluster)


async def _initialize(redis: Redis) -> None:
    """Load a cluster client's slot map now (closing the client if that fails)."""
    cluster = cluster_of(redis)
    if cluster is None:
        return
    try:
        await cluster.initialize()
    except RedisClusterException as exc:
        # Not a RedisError in redis-py: callers that report Redis errors (one line, exit 1)
        # would let it through as a traceback. Unreachable nodes are a connection error.
        await cluster.aclose()
        error = (
            RedisConnectionError if isinstance(exc, RedisClusterUnreachableError) else RedisError
        )
        raise error(str(exc)) from exc
    except BaseException:
        await cluster.aclose()
        raise


async def open_redis(url: str, **options: Any) -> Redis:
    """:func:`redis_from_url`, then, for a plain URL, ask the server whether it is a cluster
    node (``INFO cluster``) and if so return a cluster client seeded with it instead.

    A server that refuses ``INFO`` (an ACL, a proxy) is taken for a single Redis. Connection
    errors propagate (the caller reports them as it would any other)."""
    redis = redis_from_url(url, **options)
    if cluster_of(redis) is not None:
        await _initialize(redis)
        return redis
    if is_sentinel_url(url) or url.startswith("unix:"):
        return redis
    try:
        info = await redis.info("cluster")
    except (ResponseError, RedisConnectionError, RedisTimeoutError, OSError):
        return redis  # refused, or not reachable yet: taken for a single Redis
    if not int(info.get("cluster_enabled", 0) or 0):
        return redis
    kwargs = redis.connection_pool.connection_kwargs
    await redis.aclose()
    client = _cluster_client(
        ClusterURL(
            nodes=((str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))),),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            ssl=url.lower().startswith("rediss:"),
        ),
        options,
    )
    await _initialize(client)
    return client


class _SentinelManagedRedis(Redis):
    """The primary's client; closing it also closes the clients of the Sentinels it asks."""

    _sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            sentinel, self._sentinel = self._sentinel, None
            if sentinel is not None:
                for node in sentinel.sentinels:
                    await node.aclose()


def is_sentinel_managed(redis: Redis) -> bool:
    """True when ``redis`` finds its primary through Sentinels."""
    return isinstance(getattr(redis, "connection_pool", None), SentinelConnectionPool)


async def follow_primary(redis: Redis) -> bool:
    """Ask the Sentinels where the primary is; True when it moved and the pool was dropped.

    A no-op (False) for a client that is not Sentinel-managed, and while the pool has not
    connected yet. Raises what the Sentinel query raises (``redis.ConnectionError`` subclasses
    such as ``MasterNotFoundError``): callers treat that as Redis trouble, as any other.
    """
    pool = getattr(redis, "connection_pool", None)  # a cluster client has none
    if not isinstance(pool, SentinelConnectionPool):
        return False
    before = pool.master_address
    if before is None:
        return False
    address = await pool.sentinel_manager.discover_master(pool.service_name)
    if address == before:
        return False
    pool.master_address = address
    await pool.disconnect(inuse_connections=True)
    return True


def redis_from_url(url: str, **options: Any) -> Redis:
    """A ``redis.asyncio.Redis`` for ``url`` (see the module docstring for the forms).

    ``options`` are connection options (``socket_timeout``, ``socket_connect_timeout``, ...),
    applied to the data connections and, for Sentinel, to the Sentinel connections too.
    """
    if is_cluster_url(url):
        return _cluster_client(parse_cluster_url(url), options)
    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {
        key: value
        for key, value in options.items()
        if key in {"socket_timeout", "socket_connect_timeout"}
    }
    if parsed.sentinel_username is not None:
        sentinel_kwargs["username"] = parsed.sentinel_username
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
    connection = _data_connection(parsed, options)
    sentinels = list(parsed.sentinels)
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **connection)  # type: ignore[no-untyped-call, unused-ignore]
    client = sentinel.master_for(
        parsed.service_name, redis_class=_SentinelManagedRedis, db=parsed.db
    )
    assert isinstance(client, _SentinelManagedRedis)
    client._sentinel = sentinel
    return client
