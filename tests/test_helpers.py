"""The suite's own helpers: a polling helper that cannot time out, or a reply check that lets a
wrong type through, would make every test built on it unable to fail."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.helpers import (
    ClientProcess,
    command_env,
    stream_entries,
    text,
    text_map,
    texts,
    until,
)


async def test_until_takes_plain_and_async_checks() -> None:
    calls = {"plain": 0, "async": 0}

    def plain() -> bool:
        calls["plain"] += 1
        return calls["plain"] >= 3

    async def in_redis() -> bool:
        await asyncio.sleep(0)
        calls["async"] += 1
        return calls["async"] >= 3

    await until(plain, within=5)
    await until(in_redis, within=5)
    assert calls == {"plain": 3, "async": 3}


async def test_until_fails_with_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"not within [0-9.]+ s: the union"):
        await until(lambda: False, within=0.1, what="the union")


async def test_until_cuts_off_a_check_that_hangs() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(AssertionError, match=r"not within [0-9.]+ s"):
        await until(hangs, within=0.1)


async def test_until_lets_the_checks_own_timeout_through() -> None:
    async def times_out() -> bool:
        raise TimeoutError("from the check")

    with pytest.raises(TimeoutError, match="from the check"):
        await until(times_out, within=5)


def test_reply_helpers_refuse_what_the_tests_connections_never_return() -> None:
    assert text(b"ok") == "ok"
    assert texts([b"a", b"b"]) == {"a", "b"}
    assert text_map({b"k": b"v"}) == {"k": "v"}
    assert stream_entries([(b"1-0", {b"f": b"v"})]) == [(b"1-0", {b"f": b"v"})]
    for wrong in ("ok", None, 1):
        with pytest.raises(AssertionError):
            text(wrong)
    with pytest.raises(AssertionError):
        stream_entries(None)
    with pytest.raises(AssertionError):
        stream_entries([("1-0", {b"f": b"v"})])


async def test_a_client_process_keeps_its_lines_and_ends_on_a_signal() -> None:
    script = "import time\nprint('ready', flush=True)\nprint('a', flush=True)\ntime.sleep(60)\n"
    process = await ClientProcess.start(script, ready="ready")
    await until(lambda: process.lines == ["a"], within=10)
    assert await process.stop() == -signal.SIGTERM
    crashed = await ClientProcess.start(script, ready="ready")
    assert await crashed.stop(kill=True) == -signal.SIGKILL


async def test_a_client_process_that_never_gets_ready_fails_the_test() -> None:
    with pytest.raises(AssertionError, match="did not say 'ready'"):
        await ClientProcess.start("import time\ntime.sleep(60)\n", ready="ready", within=0.5)


def _module_functions(names: set[str], home: str) -> list[str]:
    """Module-level functions of the suite named ``names`` (leading ``_`` ignored), outside
    ``home``."""
    tests = Path(__file__).resolve().parent
    return [
        f"{path.relative_to(tests)}:{node.lineno} {node.name}"
        for path in sorted(tests.rglob("*.py"))
        if path.name != home
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.strip("_") in names
    ]


def test_the_suite_has_one_polling_helper_and_one_emulator_fixture() -> None:
    """``until`` lives in tests/helpers.py and the ``emu`` fixture in tests/conftest.py only: the
    suite once had seven pollers under three names and ten emulator fixtures, each with its own
    defaults."""
    assert _module_functions({"until", "wait_for", "eventually", "poll"}, "helpers.py") == []
    assert _module_functions({"emu", "emulator"}, "conftest.py") == []


def test_a_command_gets_the_tests_settings_and_none_of_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPBIT_FANOUT_CODEC", "msgpack")  # a developer's own setting
    monkeypatch.setenv("UPBIT_FANOUT_KEY_PREFIX", "mine")
    env = command_env(key_prefix="t1", sweep_interval="0.3")
    assert "UPBIT_FANOUT_CODEC" not in env
    assert env["UPBIT_FANOUT_KEY_PREFIX"] == "t1"
    assert env["UPBIT_FANOUT_SWEEP_INTERVAL"] == "0.3"
    assert env["PATH"] == os.environ["PATH"]


def test_the_suite_builds_a_command_environment_in_one_place() -> None:
    """``command_env`` drops the caller's ``UPBIT_FANOUT_*`` variables; eight test files once did
    it themselves, and two that copied the environment forgot to."""
    tests = Path(__file__).resolve().parent
    copies = {
        str(path.relative_to(tests))
        for path in sorted(tests.rglob("*.py"))
        if path.name not in {"helpers.py", "test_helpers.py"}
        and 'startswith("UPBIT_FANOUT_")}' in path.read_text(encoding="utf-8")
    }
    assert copies == set()
