"""``make run`` installs only what running needs and says what it does; ``make test`` adds the
dev toolchain. Read from ``make -n`` (what make would run) for a virtualenv that does not exist
yet, so nothing is installed by this test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(target: str, tmp_path: Path, path: str | None = None) -> list[str]:
    # Not the environment of a `make test` that runs this: a sub-make would print its
    # "Entering/Leaving directory" lines and inherit the parent's flags.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    if path is not None:
        env["PATH"] = path
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", f"VENV={tmp_path / 'venv'}", target],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line for line in lines if " -m pip install " in line and "--upgrade pip" not in line]


def test_make_run_installs_the_runtime_only_then_starts_the_demo(tmp_path: Path) -> None:
    lines = dry_run("run", tmp_path)
    (install,) = installs(lines)
    assert "[dev]" not in install
    assert "editable_mode=strict" in install
    assert lines[-1].endswith("/bin/upbit-fanout demo")
    said = [line for line in lines if line.startswith("echo ")]
    assert any("runtime dependencies only" in line for line in said)
    assert any("Ctrl-C" in line for line in said)


def test_make_run_adds_the_embedded_redis_where_no_redis_server_is_installed(
    tmp_path: Path,
) -> None:
    bare = tmp_path / "bin"  # a PATH with make and python but no redis-server
    bare.mkdir()
    for tool in ("make", "python3", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (bare / tool).symlink_to(found)
    (install,) = installs(dry_run("run", tmp_path, path=str(bare)))
    assert "'.[embedded]'" in install


def test_make_test_adds_the_dev_toolchain(tmp_path: Path) -> None:
    lines = dry_run("test", tmp_path)
    assert any("'.[dev]'" in line for line in installs(lines))
