"""Small helpers shared by the tests (import them; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

TIME_SCALE = max(1.0, float(os.environ.get("UPBIT_FANOUT_TEST_TIME_SCALE", "1")))
"""How much slower than an idle developer machine this one may be (a loaded CI runner: 3).
Every time limit of the suite's helpers (``until``, ``ClientProcess.start``) and every upper
bound a test puts on elapsed wall-clock time (``scaled``) is multiplied by it; lower bounds
("not before 0.1 s") are not. Never below 1."""


def scaled(seconds: float) -> float:
    """An upper bound on elapsed wall-clock time (or its slack), times ``TIME_SCALE``."""
    return seconds * TIME_SCALE


SAMPLES = Path(__file__).resolve().parent / "data" / "upbit-samples"
"""Real Upbit frames from public sources, kept in the repository (sources: README.md there)."""


COMMAND = Path(sys.executable).with_name("upbit-fanout")
"""This virtualenv's ``upbit-fanout`` command (a test that runs it skips when it is missing)."""


def command_env(**settings: str) -> dict[str, str]:
    """The environment of an ``upbit-fanout`` process: this one's without any ``UPBIT_FANOUT_*``
    variable (a developer's own settings must not reach a test), plus ``settings`` as
    ``UPBIT_FANOUT_{NAME}`` variables (``command_env(key_prefix=keys.prefix)``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPBIT_FANOUT_")}
    env.update({f"UPBIT_FANOUT_{name.upper()}": value for name, value in settings.items()})
    return env


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
        async with asyncio.timeout(scaled(within)) as limit:
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
        raise AssertionError(f"not within {scaled(within)} s: {label}") from None


class ClientProcess:
    """A client in a process of its own: real signals, a real crash.

    ``start`` runs ``python -c script *args`` and returns once the script printed ``ready`` (one
    line); every line it prints afterwards is kept in ``lines``. ``stop()`` sends SIGTERM (a
    clean leave: the script gives its lease back), ``stop(kill=True)`` SIGKILL (a crash: no
    goodbye, the lease must run out).
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, script: str, *args: str, ready: str, within: float = 20.0
    ) -> ClientProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), scaled(within))
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"the client did not say {ready!r} within {scaled(within)} s"
            ) from None
        assert line.decode().strip() == ready, line
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode().strip())

    async def stop(self, *, kill: bool = False) -> int:
        """End the process (SIGTERM, or SIGKILL with ``kill``); its exit code."""
        if self.process.returncode is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
        returncode = await self.process.wait()
        await self._reader  # ends at the pipe's EOF
        return returncode


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
