"""subscriptions.tasks: every task has an owner, and an outside cancel always gets through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path

import pytest

from tests.helpers import scaled
from upbit_fanout.subscriptions.tasks import TaskOwner, stop_tasks


async def _stubborn(swallow: int, started: asyncio.Event) -> None:
    """Swallows the first ``swallow`` cancellations (as redis-py under gh-86296 can), then stops."""
    started.set()
    for _ in range(swallow):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
    await asyncio.sleep(3600)


async def test_stop_insists_until_a_task_that_swallows_cancellations_stops() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_stubborn(3, started))
    await started.wait()
    left = await stop_tasks([task], within=5.0)
    assert left == set()
    assert task.cancelled()


async def test_without_insist_one_cancel_is_all_and_the_deadline_holds() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_stubborn(1, started))
    await started.wait()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    left = await stop_tasks([task], within=0.3, insist=False)
    assert left == {task}  # still running: reported, not waited for
    assert loop.time() - begin < scaled(2.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_an_outside_cancel_of_the_stopper_always_gets_through() -> None:
    """The stopping task is itself cancelled while it waits for a child that will not stop:
    its CancelledError must propagate at once, not be eaten, and not wait out the deadline."""
    started = asyncio.Event()
    child = asyncio.create_task(_stubborn(10_000, started))
    await started.wait()
    waiting = asyncio.Event()

    async def stopper() -> str:
        waiting.set()
        await stop_tasks([child], within=30.0)
        return "kept running after being cancelled"

    outer = asyncio.create_task(stopper())
    await waiting.wait()
    await asyncio.sleep(0.05)  # inside asyncio.wait now
    loop = asyncio.get_running_loop()
    begin = loop.time()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()
    assert loop.time() - begin < scaled(2.0)
    # the child is not left orphaned by the test
    while not child.done():
        child.cancel()
        await asyncio.sleep(0)


async def test_the_suppress_pattern_it_replaces_does_swallow_the_outside_cancel() -> None:
    """Why the helper exists: ``cancel(); with suppress(CancelledError): await child`` eats the
    caller's own cancellation when it arrives during that await (the caller keeps running)."""
    child_started = asyncio.Event()

    async def child() -> None:
        child_started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)  # a slow clean-up, e.g. a WebSocket close

    async def caller() -> str:
        task = asyncio.create_task(child())
        await child_started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return "kept running"

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    outer.cancel()
    assert await outer == "kept running"  # the defect: the outside cancel was swallowed


async def test_the_owner_reports_a_crash_in_one_place_and_forgets_finished_tasks() -> None:
    crashes: list[tuple[str, BaseException]] = []
    owner = TaskOwner("unit", on_crash=lambda name, exc: crashes.append((name, exc)))

    async def boom() -> None:
        raise RuntimeError("broken")

    task = owner.spawn("boom", boom())
    with contextlib.suppress(RuntimeError):
        await task
    await asyncio.sleep(0)
    assert [(name, str(exc)) for name, exc in crashes] == [("boom", "broken")]
    assert "boom" not in owner
    assert owner.get("boom") is None


async def test_the_owner_logs_crashes_by_default(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("unit")

    async def boom() -> None:
        raise ValueError("bad")

    task = owner.spawn("boom", boom())
    with contextlib.suppress(ValueError):
        await task
    await asyncio.sleep(0)
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert records
    assert "unit task boom crashed" in records[0].getMessage()
    assert records[0].exc_info is not None


async def test_the_owner_stops_and_closes_with_a_deadline() -> None:
    owner = TaskOwner("unit")
    started = asyncio.Event()
    owner.spawn("a", asyncio.sleep(3600))
    owner.spawn("b", _stubborn(2, started))
    await started.wait()
    assert len(owner) == 2
    with pytest.raises(RuntimeError, match="already running"):
        owner.spawn("a", asyncio.sleep(1))
    assert await owner.stop("a", "unknown")
    assert "a" not in owner
    assert await owner.close(within=5.0)
    assert len(owner) == 0


async def test_a_cancelled_task_is_not_a_crash() -> None:
    crashes: list[str] = []
    owner = TaskOwner("unit", on_crash=lambda name, exc: crashes.append(name))
    owner.spawn("sleeper", asyncio.sleep(3600))
    await asyncio.sleep(0)
    assert await owner.close(within=1.0)
    await asyncio.sleep(0)
    assert crashes == []


def test_no_package_stops_a_task_by_suppressing_cancelled_error() -> None:
    """``task.cancel(); with suppress(CancelledError): await task`` eats the caller's own
    cancellation when it lands during the await (the stopping task then keeps running); every
    package stops its tasks with :func:`stop_tasks` instead."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("collector", "client", "emulator", "subscriptions", "src")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"^\s*with\s+(contextlib\.)?suppress\([^)]*CancelledError", line)
    ]
    assert offenders == []
