"""Small helpers shared by the tests (import them; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

SAMPLES = Path(__file__).resolve().parent / "data" / "upbit-samples"
"""Real Upbit frames from public sources, kept in the repository (sources: README.md there)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(
    check: Callable[[], object], within: float = 5.0, *, what: str = "", interval: float = 0.02
) -> None:
    """Poll ``check`` until it is truthy; fail the test after ``within`` seconds.

    The one polling helper of the suite. ``check`` may be a plain predicate (state in this
    process: ``lambda: c.tracker.loaded``) or return an awaitable (state in Redis or in another
    process: ``lambda: union_is(r, keys, {...})``, or an ``async def`` passed by name). A check
    that hangs is cut off at the deadline too. Poll only for state nobody announces; where the
    code under test sets an event or a future, await that instead.
    """
    try:
        async with asyncio.timeout(within) as limit:
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        if not limit.expired():
            raise  # the check itself raised it
        label = what or getattr(check, "__qualname__", repr(check))
        raise AssertionError(f"not within {within} s: {label}") from None


# Redis replies. The tests' connections leave ``decode_responses`` off, so where redis-py types a
# reply as ``bytes | str`` it is bytes here; these helpers check that at run time (a str fails
# the test) instead of casting it away.

StreamEntry = tuple[bytes, dict[bytes, bytes]]


def text(reply: object, errors: str = "strict") -> str:
    """One bytes reply as text."""
    assert isinstance(reply, bytes), f"expected bytes from Redis, got {reply!r}"
    return reply.decode(errors=errors)


def texts(replies: Iterable[object]) -> set[str]:
    """A set reply (SMEMBERS and the like) as a set of text."""
    return {text(reply) for reply in replies}


def text_map(reply: Mapping[Any, object], errors: str = "strict") -> dict[str, str]:
    """A hash reply (HGETALL) as text keys and values."""
    return {text(k, errors): text(v, errors) for k, v in reply.items()}


def stream_entries(reply: object) -> list[StreamEntry]:
    """An XRANGE / XREVRANGE reply: ``[(entry_id, {field: value}), ...]`` in bytes."""
    assert isinstance(reply, list), f"expected a list of stream entries, got {reply!r}"
    for entry in reply:
        entry_id, fields = entry
        assert isinstance(entry_id, bytes), entry
        assert isinstance(fields, dict), entry
    return cast(list[StreamEntry], reply)
