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

The parser is pure (:func:`parse_sentinel_url`) and tested from a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

__all__ = [
    "SENTINEL_SCHEMES",
    "SentinelURL",
    "follow_primary",
    "is_sentinel_managed",
    "is_sentinel_url",
    "parse_sentinel_url",
    "redis_from_url",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


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
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in SENTINEL_SCHEMES


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"a Sentinel address needs a host: {text!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"a Sentinel port is a number from 1 to 65535: {text!r}")
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
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
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
    return isinstance(redis.connection_pool, SentinelConnectionPool)


async def follow_primary(redis: Redis) -> bool:
    """Ask the Sentinels where the primary is; True when it moved and the pool was dropped.

    A no-op (False) for a client that is not Sentinel-managed, and while the pool has not
    connected yet. Raises what the Sentinel query raises (``redis.ConnectionError`` subclasses
    such as ``MasterNotFoundError``): callers treat that as Redis trouble, as any other.
    """
    pool = redis.connection_pool
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
    connection: dict[str, Any] = dict(options)
    if parsed.username is not None:
        connection["username"] = parsed.username
    if parsed.password is not None:
        connection["password"] = parsed.password
    if parsed.ssl:
        connection["ssl"] = True
    sentinels = list(parsed.sentinels)
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **connection)  # type: ignore[no-untyped-call, unused-ignore]
    client = sentinel.master_for(
        parsed.service_name, redis_class=_SentinelManagedRedis, db=parsed.db
    )
    assert isinstance(client, _SentinelManagedRedis)
    client._sentinel = sentinel
    return client
