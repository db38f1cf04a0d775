"""docker-compose.yml and the Dockerfile: the services, the profile, the variables, the command.

No Docker here: the files are parsed and checked against the code they must match (the settings
names, the CLI's commands, the Redis flags the intent tracker needs).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from upbit_fanout.cli import COMMANDS
from upbit_fanout.collector.intents import NEEDED_FLAGS, merge_notify_flags
from upbit_fanout.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_redis_7_with_the_keyspace_events_the_tracker_needs() -> None:
    redis = compose()["services"]["redis"]
    assert re.fullmatch(r"redis:7[\w.-]*", redis["image"])
    command = redis["command"]
    flags = command[command.index("--notify-keyspace-events") + 1]
    assert merge_notify_flags(flags) == flags, f"{flags!r} lacks some of {NEEDED_FLAGS!r}"
    assert "profiles" not in redis


def test_the_collector_service_runs_the_real_command_with_real_variable_names() -> None:
    services = compose()["services"]
    collector = services["collector"]
    assert "profiles" not in collector  # part of a plain `docker compose up`
    assert collector["build"] == "."
    assert collector["command"] == ["collector"]
    assert collector["depends_on"]["redis"]["condition"] == "service_healthy"
    env = env_of(collector)
    assert env["UPBIT_FANOUT_REDIS_URL"] == "redis://redis:6379/0"
    assert "UPBIT_FANOUT_UPBIT_WS_URL" in env
    settings_fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("UPBIT_FANOUT_")
        assert name.removeprefix("UPBIT_FANOUT_").lower() in settings_fields, name


def test_the_offline_profile_adds_the_emulator_that_the_collector_can_use() -> None:
    services = compose()["services"]
    emulator = services["emulator"]
    assert emulator["profiles"] == ["offline"]
    command = emulator["command"]
    assert command[0] == "emulator"
    assert command[0] in COMMANDS
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    # The documented offline URL points at this service and port.
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert f"UPBIT_FANOUT_UPBIT_WS_URL=ws://emulator:{port}/websocket/v1" in text


def test_the_dockerfile_installs_the_package_and_runs_the_collector() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    # A pinned slim base (patch release and Debian release), the same in both stages.
    assert len(bases) == 2
    assert len(set(bases)) == 1
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", bases[0])
    assert any(re.fullmatch(r"RUN pip wheel .* \.", line) for line in instructions)
    assert any(line.startswith("RUN pip install /wheels/") for line in instructions)
    # Not root.
    user = [line for line in instructions if line.startswith("USER ")]
    assert user
    assert user[-1].split()[1].split(":")[0] not in {"0", "root"}
    entrypoint = next(line for line in instructions if line.startswith("ENTRYPOINT "))
    cmd = next(line for line in instructions if line.startswith("CMD "))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    script = json.loads(entrypoint.removeprefix("ENTRYPOINT "))
    assert script == ["upbit-fanout"]
    assert script[0] in pyproject["project"]["scripts"]
    assert json.loads(cmd.removeprefix("CMD ")) == ["collector"]
    assert "collector" in COMMANDS
    # Every source folder the distribution is built from is copied into the build stage.
    for folder in pyproject["tool"]["setuptools"]["package-dir"].values():
        top = folder.split("/")[0]
        assert f"COPY {top} ./{top}" in text
