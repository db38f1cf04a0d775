"""``upbit-fanout --version`` and ``--help`` answer without importing the heavy parts.

Asserted through ``sys.modules`` in a fresh interpreter, not with a clock (speed is measured,
not asserted): the commands import redis, websockets, orjson, pydantic and the collector inside
``run``, so a mistake that moves one of them back to a module's top shows up here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from upbit_fanout.cli import COMMANDS

HEAVY = ("redis", "websockets", "orjson", "msgpack", "jwt", "pydantic", "pydantic_settings")
PROBE = """
import contextlib, io, json, sys
from upbit_fanout.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
top = sorted({name.split(".")[0] for name in sys.modules})
ours = sorted(n for n in sys.modules if n.startswith("upbit_fanout."))
print(json.dumps({"code": code, "out": out.getvalue(), "top": top, "ours": ours}))
"""


def probe(*argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], *([name, "--help"] for name in COMMANDS)],
    ids=" ".join,
)
def test_version_and_help_import_nothing_heavy(argv: list[str]) -> None:
    result = probe(*argv)
    assert result["code"] == 0
    assert "upbit-fanout" in str(result["out"])  # it did answer
    heavy = set(HEAVY) & set(result["top"])
    assert not heavy, f"{' '.join(argv)} imported {sorted(heavy)}"
    for module in result["ours"]:
        assert not module.startswith(
            ("upbit_fanout.collector", "upbit_fanout.client", "upbit_fanout.emulator")
        ), module


def test_the_probe_sees_heavy_imports_when_a_command_runs() -> None:
    # The same probe, on a path that must import redis: the check above can fail.
    result = probe("status", "--redis-url", "redis://127.0.0.1:1/0")
    assert result["code"] == 1  # Redis unreachable
    assert "redis" in result["top"]


def test_check_judges_staleness_by_the_collectors_heartbeat() -> None:
    # The health rules keep their own copy of the number: they sit below the collector.
    from upbit_fanout.collector.status import HEARTBEAT_INTERVAL  # noqa: PLC0415
    from upbit_fanout.subscriptions.health import STALE_STATUS  # noqa: PLC0415

    assert STALE_STATUS == 3 * HEARTBEAT_INTERVAL
