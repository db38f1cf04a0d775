"""What went wrong with Redis, in words a person can act on.

A Redis that refuses our password or ACL user (``WRONGPASS``, ``NOAUTH``, ``NOPERM``) is not
"unreachable": retrying will not help, somebody must fix the configuration. The commands
(``status``, ``check``, ``tail``) and the collector's Redis health both describe errors through
:func:`describe_redis_error`, so they say the same thing. No description holds a password: URLs
go through :func:`~upbit_fanout.subscriptions.redact.redact_url`, and Redis's own error texts
name the user and the command, never the password.
"""

from __future__ import annotations

from upbit_fanout.subscriptions.redact import redact_url

__all__ = ["AUTH_FAILED", "describe_redis_error", "is_auth_error"]

AUTH_FAILED = "authentication failed: check the password/ACL user"
_AUTH_REPLIES = ("WRONGPASS", "NOAUTH", "NOPERM")
_AUTH_CLASSES = frozenset({"AuthenticationError", "AuthorizationError", "NoPermissionError"})


def is_auth_error(exc: BaseException) -> bool:
    """True when Redis answered but refused our credentials or the ACL user's rights."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _AUTH_CLASSES:
        return True
    return str(exc).lstrip().upper().startswith(_AUTH_REPLIES)


def describe_redis_error(exc: BaseException, url: str | None = None) -> str:
    """One line: ``authentication failed: check the password/ACL user (...)`` for a refusal,
    else ``Redis unreachable (...)``; ``url`` (redacted) is named when given."""
    where = f" at {redact_url(url)}" if url else ""
    detail = str(exc).strip() or type(exc).__name__
    if is_auth_error(exc):
        return f"Redis{where}: {AUTH_FAILED} ({type(exc).__name__}: {detail})"
    return f"Redis unreachable{where} ({type(exc).__name__}: {detail})"
