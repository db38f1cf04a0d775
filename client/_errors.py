"""The client's exceptions. Every one derives from :class:`subscriptions.errors.UpbitFanoutError`::

    UpbitFanoutError
    ├── InvalidTopicError (ValueError)    a topic the contract refuses (raised before any write)
    ├── EventParseError   (ValueError)    ``event.typed`` on a payload that is not a valid event
    ├── CodecError        (ValueError)    ``event.data`` on a payload neither JSON nor msgpack
    └── ClientError                       the client could not do what was asked
        ├── RedisUnavailableError         Redis unreachable, refused our login, or gave up
        └── SnapshotTimeoutError (TimeoutError)  no event for a topic in time

redis-py errors are wrapped at the boundary with ``raise ... from exc``: the original stays
visible as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisClusterException,
    RedisClusterUnreachableError,
)
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import RedisError as _RedisError
from redis.exceptions import TimeoutError as _RedisTimeoutError

from upbit_fanout.subscriptions.errors import UpbitFanoutError

if TYPE_CHECKING:
    from upbit_fanout.client._items import Event

__all__ = ["ClientError", "RedisUnavailableError", "SnapshotTimeoutError", "wrap_redis_error"]


class ClientError(UpbitFanoutError):
    """The client could not do what was asked (also: using a closed client)."""


class RedisUnavailableError(ClientError):
    """Redis could not be reached or used: the message says which and what to check.

    Raised by ``async with`` when the first connection fails, by calls made while Redis is away,
    and by the event iterator when the client gives up (an authentication or permission error,
    or ``max_outage`` exceeded). The redis-py exception is the ``__cause__``.
    """


class SnapshotTimeoutError(ClientError, TimeoutError):
    """No event arrived for one or more topics within the snapshot timeout.

    ``topics`` are the topics still missing; ``received`` maps the topics that did answer to
    their events (a batch snapshot keeps what it got).
    """

    def __init__(
        self,
        message: str,
        topics: Iterable[str],
        received: Mapping[str, Event] | None = None,
    ) -> None:
        super().__init__(message)
        self.topics: tuple[str, ...] = tuple(topics)
        self.received: dict[str, Event] = dict(received or {})


def is_retryable(exc: BaseException) -> bool:
    """True for a connection problem worth retrying; False for a refusal (auth, ACL, bug)."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False
    return isinstance(
        exc, _RedisConnectionError | _RedisTimeoutError | RedisClusterUnreachableError | OSError
    )


def wrap_redis_error(exc: BaseException, doing: str) -> ClientError:
    """The client error for a redis-py error met while ``doing`` something (raise it from exc)."""
    if is_retryable(exc):
        return RedisUnavailableError(f"Redis unreachable while {doing}: {exc}")
    if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError):
        return RedisUnavailableError(
            f"Redis refused {doing}: {exc} (check the user, password and ACL permissions)"
        )
    if isinstance(exc, _RedisError | RedisClusterException):  # the latter is no RedisError
        return ClientError(f"Redis refused {doing}: {exc}")
    return ClientError(f"failed while {doing}: {exc!r}")
