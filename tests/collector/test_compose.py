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


def test_redis_persists_what_private_streams_need_across_a_restart() -> None:
    data = compose()
    redis = data["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, target = redis["volumes"][0].split(":")
    assert target == "/data"  # the redis image's working directory, where the AOF lives
    assert volume in data["volumes"]  # a named volume, not a path of this machine


def _published(port_spec: str, environment: dict[str, str]) -> str:
    """A compose port mapping with ``${VAR:-default}`` resolved from ``environment``."""

    def value(found: re.Match[str]) -> str:
        return environment.get(found["name"]) or found["default"]

    return re.sub(r"\$\{(?P<name>\w+):-(?P<default>[^}]*)\}", value, port_spec)


def test_redis_is_published_on_loopback_without_taking_6379() -> None:
    redis = compose()["services"]["redis"]
    (spec,) = redis["ports"]
    host_side = _published(spec, {}).rsplit(":", 1)[0]
    address, port = host_side.rsplit(":", 1)
    assert address == "127.0.0.1"  # never all interfaces by default
    assert port != "6379"  # a Redis already running on this machine keeps its port
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert f"redis://127.0.0.1:{port}/0" in text  # the header says how to reach it
    # ... and the user can ask for another address
    asked = _published(spec, {"UPBIT_FANOUT_REDIS_HOST_PORT": "127.0.0.1:6379"})
    assert asked == "127.0.0.1:6379:6379"


def _collectors() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {
        name: service
        for name, service in services.items()
        if service.get("command", [None])[0] == "collector"
    }


def test_each_profile_has_exactly_one_collector_with_real_variable_names() -> None:
    collectors = _collectors()
    assert set(collectors) == {"collector", "collector-offline"}
    profiles = [tuple(service.get("profiles", ())) for service in collectors.values()]
    # Never two collectors (fed by different upstreams) on one Redis: one per profile, none
    # without a profile.
    assert sorted(profiles) == [("offline",), ("upbit",)]
    settings_fields = set(Settings.model_fields)
    for service in collectors.values():
        assert service["build"] == "."
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        env = env_of(service)
        assert env["UPBIT_FANOUT_REDIS_URL"] == "redis://redis:6379/0"
        for name in env:
            assert name.startswith("UPBIT_FANOUT_")
            assert name.removeprefix("UPBIT_FANOUT_").lower() in settings_fields, name
    assert env_of(collectors["collector"])["UPBIT_FANOUT_UPBIT_WS_URL"].endswith(
        "wss://api.upbit.com/websocket/v1}"
    )


def test_every_collector_is_health_checked_by_the_check_command() -> None:
    for name, service in _collectors().items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name  # exec form: no shell needed in the image
        assert test[1:] == ["upbit-fanout", "check"], name
        assert "check" in COMMANDS
        assert service["stop_signal"] == "SIGTERM"


def test_the_offline_profile_points_its_collector_at_its_emulator() -> None:
    services = compose()["services"]
    emulator = services["emulator"]
    assert emulator["profiles"] == ["offline"]
    command = emulator["command"]
    assert command[0] == "emulator"
    assert command[0] in COMMANDS
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    offline = services["collector-offline"]
    assert offline["profiles"] == ["offline"]
    assert "emulator" in offline["depends_on"]
    env = env_of(offline)
    # No variable to set by hand: the URLs are fixed to the emulator's service name and port.
    assert env["UPBIT_FANOUT_UPBIT_WS_URL"] == f"ws://emulator:{port}/websocket/v1"
    assert env["UPBIT_FANOUT_UPBIT_PRIVATE_WS_URL"] == f"ws://emulator:{port}/websocket/v1/private"
    assert Settings(  # type: ignore[call-arg]
        _env_file=None,
        upbit_ws_url=env["UPBIT_FANOUT_UPBIT_WS_URL"],
        upbit_private_ws_url=env["UPBIT_FANOUT_UPBIT_PRIVATE_WS_URL"],
    )  # valid settings


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
    # What the build reads besides the code: the readme and the license files pyproject names.
    copied = {
        name
        for line in instructions
        if line.startswith("COPY ") and "--from" not in line
        for name in line.split()[1:-1]
    }
    assert pyproject["project"]["readme"] in copied
    assert set(pyproject["project"]["license-files"]) <= copied
    assert "pyproject.toml" in copied
    # The build context leaves out the virtualenv, caches and git (small, and no local state).
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for name in (".venv", ".git", "build", "**/__pycache__", ".env"):
        assert name in ignored, name
    # Every source folder the distribution is built from is copied into the build stage.
    for folder in pyproject["tool"]["setuptools"]["package-dir"].values():
        top = folder.split("/")[0]
        assert f"COPY {top} ./{top}" in text
