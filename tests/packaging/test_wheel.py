"""The package as a user installs it: a wheel, in a fresh virtualenv, without the dev extras.

The wheel is built (``pip wheel --no-deps``, build isolation as in the Dockerfile) from a copy of
exactly what the Dockerfile's build stage copies, so a file the build needs but the image lacks
fails here. One virtualenv serves every test of this module (pip's cache makes the dependency
install quick). Checked: the console command (``--version``, ``--help``, ``emulator --port 0``),
that site-packages holds no generic top-level name of ours, and that a distribution with its own
top-level ``client`` module installs beside ours with both importable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from upbit_fanout.cli import COMMANDS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GENERIC = ("client", "collector", "subscriptions", "emulator")
INSTALL_TIMEOUT = 600  # a loaded machine, dependencies from pip's cache or index


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def command(self) -> Path:
        return self.root / "bin" / "upbit-fanout"

    def run(self, *argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UPBIT_FANOUT_", "PYTHON"))}
        return subprocess.run(
            [str(part) for part in argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )

    def pip(self, *argv: str | Path) -> None:
        done = self.run(self.python, "-m", "pip", "install", "--quiet", *argv)
        assert done.returncode == 0, done.stdout + done.stderr


def _docker_build_context(into: Path) -> None:
    """Copy what the Dockerfile's build stage copies (``COPY a b ./`` and ``COPY dir ./dir``)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    build_stage = text.split("\nFROM ", 2)[1]
    for line in build_stage.splitlines():
        if not line.startswith("COPY ") or "--from" in line:
            continue
        *sources, _target = line.split()[1:]
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, into / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, into / source)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("packaging")
    context = base / "context"
    context.mkdir()
    _docker_build_context(context)
    wheels = base / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
         str(context)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("upbit_fanout-*.whl")
    created = subprocess.run(
        [sys.executable, "-m", "venv", str(base / "venv")],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    env = Venv(base / "venv")
    env.pip(wheel)
    return env


def _site_packages(venv: Venv) -> dict[str, Any]:
    """site-packages' entries and, per distribution, the top-level entries its RECORD owns."""
    script = """
import json, os, sysconfig
from importlib.metadata import distributions
site = sysconfig.get_paths()["purelib"]
owners = {}
for dist in distributions():
    tops = {str(f).split("/")[0] for f in dist.files or () if not str(f).startswith("..")}
    owners[dist.metadata["Name"]] = sorted(tops)
print(json.dumps({"entries": sorted(os.listdir(site)), "owners": owners}))
"""
    done = venv.run(venv.python, "-c", script)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


def test_the_wheel_installs_a_working_command_and_no_generic_name(venv: Venv) -> None:
    version = venv.run(venv.command, "--version")
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(r"upbit-fanout \d+\.\d+\.\d+\S*\n", version.stdout)

    usage = venv.run(venv.command, "--help")
    assert usage.returncode == 0, usage.stderr
    for name in COMMANDS:
        assert name in usage.stdout
    for name in COMMANDS:  # every subcommand's own module is in the wheel
        sub = venv.run(venv.command, name, "--help")
        assert sub.returncode == 0, sub.stderr

    emulator = subprocess.Popen(
        [str(venv.command), "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        ready, _, _ = select.select([emulator.stdout], [], [], 60)
        assert ready, "the emulator printed nothing within 60 s"
        first = emulator.stdout.readline()
        assert re.fullmatch(r"ws://127\.0\.0\.1:\d+\n", first), first
    finally:
        emulator.terminate()
        _, err = emulator.communicate(timeout=30)
    assert emulator.returncode == 0, err

    assert venv.run(venv.python, "-c", "import pytest").returncode != 0  # no dev extras
    check = venv.run(venv.python, "-m", "pip", "check")
    assert check.returncode == 0, check.stdout

    site = _site_packages(venv)
    owners: dict[str, list[str]] = site["owners"]
    ours = set(owners["upbit-fanout"])
    assert {top for top in ours if not top.endswith(".dist-info")} == {"upbit_fanout"}
    assert len(ours) == 2, ours
    owned = {top for name, tops in owners.items() for top in tops}
    entries = set(site["entries"])
    assert entries - owned <= {"__pycache__"}, "site-packages holds files nobody installed"
    for name in GENERIC:
        for entry in (name, f"{name}.py"):
            holders = [dist for dist, tops in owners.items() if entry in tops]
            assert holders in ([], ["dummy-client"]), (entry, holders)


def _dummy_wheel(into: Path) -> Path:
    """``dummy-client``: a wheel whose only module is a top-level ``client`` (written by hand,
    as the wheel format says, so no build backend is downloaded for it)."""
    files = {
        "client.py": b'WHO = "dummy-client"\n',
        "dummy_client-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: dummy-client\nVersion: 1.0\n"
        ),
        "dummy_client-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("dummy_client-1.0.dist-info/RECORD,,")
    path = into / "dummy_client-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("dummy_client-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_a_distribution_with_a_top_level_client_installs_beside_ours(
    venv: Venv, tmp_path: Path
) -> None:
    venv.pip(_dummy_wheel(tmp_path))
    probe = (
        "import client; from upbit_fanout import FanoutClient; import upbit_fanout.client as ours; "
        "print(client.WHO, FanoutClient.__module__, ours.FanoutClient is FanoutClient)"
    )
    both = venv.run(venv.python, "-c", probe, cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert both.stdout.split() == ["dummy-client", "upbit_fanout.client", "True"]

    # A bot whose folder holds its own client.py: that one wins `import client`, ours still works.
    bot = tmp_path / "bot"
    bot.mkdir()
    (bot / "client.py").write_text('WHO = "the bot"\n', encoding="utf-8")
    (bot / "main.py").write_text(
        "import client\n"
        "from upbit_fanout import FanoutClient\n"
        "print(client.WHO, FanoutClient.__name__)\n",
        encoding="utf-8",
    )
    mine = venv.run(venv.python, bot / "main.py", cwd=bot)
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout.strip() == "the bot FanoutClient"
    assert venv.run(venv.python, "-m", "pip", "check").returncode == 0
