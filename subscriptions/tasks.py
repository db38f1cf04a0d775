"""Every task has an owner: spawn keeps the handle, stop cancels AND awaits it with a deadline.

The semantics are aiojobs' (``Job.close``, ``Scheduler.close``):

- :meth:`TaskOwner.spawn` keeps the handle under a name; a task that ends with an exception is
  reported in ONE place (the owner's ``on_crash``, by default an ERROR log line with the
  traceback), never lost in a forgotten handle;
- :meth:`TaskOwner.stop` and :func:`stop_tasks` cancel, then wait with ``asyncio.wait`` until the
  tasks are done or a deadline passes. ``asyncio.wait`` never raises the children's
  ``CancelledError``, so there is nothing to suppress, and a cancellation of the CALLER (the task
  doing the stopping) is never swallowed: it propagates at once. The pattern it replaces,
  ``task.cancel(); with suppress(CancelledError): await task``, eats the caller's own
  cancellation when it arrives during that await, and the caller then keeps running;
- ``insist=True`` (the default) repeats the cancellation every 0.1 s until the deadline: on
  Python 3.11 ``asyncio.wait_for`` (which redis-py uses inside) can drop a cancellation that lands
  just as its inner future completes (CPython gh-86296), so a single ``cancel()`` may leave a task
  that talks to Redis running. A task that must be allowed to finish a closing handshake (a
  WebSocket close) is stopped with ``insist=False``;
- a task still alive after the deadline is reported and left behind; it is not waited for.

Pure asyncio, no I/O of its own: the collector, the client library and the emulator all use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

__all__ = ["TaskOwner", "stop_tasks"]

log = logging.getLogger(__name__)

INSIST_INTERVAL = 0.1
"""Seconds between two cancellations of a task that has not stopped yet (``insist=True``)."""

CrashHandler = Callable[[str, BaseException], None]


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]],
    *,
    within: float,
    insist: bool = True,
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until they are done, at most ``within`` seconds.

    Returns the tasks still running at the deadline (empty when all stopped). The children's
    results and exceptions are left in the tasks (read them, or let :class:`TaskOwner` report
    them). If the caller is cancelled while waiting, ``CancelledError`` propagates at once.
    """
    pending = {task for task in tasks if not task.done()}
    if not pending:
        return set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for task in pending:
        task.cancel()
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        wait = min(INSIST_INTERVAL, remaining) if insist else remaining
        _, pending = await asyncio.wait(pending, timeout=wait)
        if insist:
            for task in pending:
                task.cancel()
    return pending


def _log_crash(owner: str) -> CrashHandler:
    def report(name: str, exc: BaseException) -> None:
        log.error("%s task %s crashed", owner, name, exc_info=exc)

    return report


class TaskOwner:
    """The owner of a set of named tasks (see the module docstring for the semantics)."""

    def __init__(self, name: str, *, on_crash: CrashHandler | None = None) -> None:
        self.name = name
        self._on_crash = on_crash if on_crash is not None else _log_crash(name)
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def __contains__(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def __len__(self) -> int:
        return sum(1 for task in self._tasks.values() if not task.done())

    def get(self, name: str) -> asyncio.Task[Any] | None:
        return self._tasks.get(name)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro`` as the task ``name`` (a running task of that name is an error)."""
        if name in self:
            coro.close()
            raise RuntimeError(f"{self.name}: a task named {name!r} is already running")
        task = asyncio.create_task(coro, name=f"{self.name}-{name}")
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._done(name, done))
        return task

    def _done(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._on_crash(name, exc)

    async def stop(self, *names: str, within: float = 5.0, insist: bool = True) -> bool:
        """Stop the named tasks (unknown or finished names are ignored); True when all stopped.

        A task still running at the deadline is logged (ERROR) and forgotten.
        """
        tasks = [task for name in names if (task := self._tasks.pop(name, None)) is not None]
        left = await stop_tasks(tasks, within=within, insist=insist)
        for task in left:
            log.error("%s task %s did not stop within %.1f s", self.name, task.get_name(), within)
        return not left

    async def close(self, within: float = 5.0, *, insist: bool = True) -> bool:
        """Stop every task (all at once, one deadline); True when all stopped."""
        return await self.stop(*list(self._tasks), within=within, insist=insist)
