"""Every bad setting or argument: exit status 2 and ONE line on stderr naming the setting (its
``UPBIT_FANOUT_*`` variable or its ``--flag``) and what would be right. No traceback, nothing on
stdout, and never the value of a secret.

``main([...])`` runs in this process with the environment set by monkeypatch; none of these
cases gets as far as opening a socket.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from upbit_fanout.cli import main
from upbit_fanout.settings import Settings

SECRET = "s3cr3t-must-not-show"
PASSWORD = "hunter2-must-not-show"

# (environment, the name the line must contain, a word of what would be right)
ENV_CASES: list[tuple[dict[str, str], str, str]] = [
    ({"REDIS_URL": "http://localhost:6379/0"}, "UPBIT_FANOUT_REDIS_URL", "redis://"),
    ({"REDIS_URL": "localhost:6379"}, "UPBIT_FANOUT_REDIS_URL", "redis://"),
    ({"REDIS_URL": f"redis://:{PASSWORD}@localhost:99999/0"}, "UPBIT_FANOUT_REDIS_URL", "65535"),
    ({"REDIS_URL": "redis:///0"}, "UPBIT_FANOUT_REDIS_URL", "host"),
    ({"REDIS_URL": "redis://localhost:6379/zero"}, "UPBIT_FANOUT_REDIS_URL", "number"),
    ({"REDIS_URL": "redis+sentinel://h1:26379,h2:26379"}, "UPBIT_FANOUT_REDIS_URL", "service"),
    ({"REDIS_URL": f"redis+sentinel://:{PASSWORD}@h:1/svc/x"}, "UPBIT_FANOUT_REDIS_URL", "number"),
    ({"REDIS_URL": f"redis+cluster://:{PASSWORD}@h:1/3"}, "UPBIT_FANOUT_REDIS_URL", "database 0"),
    ({"KEY_PREFIX": "up:bit"}, "UPBIT_FANOUT_KEY_PREFIX", "':'"),
    ({"KEY_PREFIX": ""}, "UPBIT_FANOUT_KEY_PREFIX", "non-empty"),
    ({"UPBIT_WS_URL": "https://api.upbit.com/websocket/v1"}, "UPBIT_FANOUT_UPBIT_WS_URL", "wss://"),
    ({"UPBIT_WS_URL": "ws://:0/x"}, "UPBIT_FANOUT_UPBIT_WS_URL", "ws://"),
    ({"UPBIT_PRIVATE_WS_URL": "http://h/p"}, "UPBIT_FANOUT_UPBIT_PRIVATE_WS_URL", "wss://"),
    ({"ACCESS_KEY": "ak"}, "UPBIT_FANOUT_SECRET_KEY", "both"),
    ({"SECRET_KEY": SECRET}, "UPBIT_FANOUT_ACCESS_KEY", "both"),
    ({"CODEC": "xml"}, "UPBIT_FANOUT_CODEC", "msgpack"),
    ({"LOG_LEVEL": "LOUD"}, "UPBIT_FANOUT_LOG_LEVEL", "WARNING"),
    ({"SWEEP_INTERVAL": "0"}, "UPBIT_FANOUT_SWEEP_INTERVAL", "greater than 0"),
    ({"PING_INTERVAL": "often"}, "UPBIT_FANOUT_PING_INTERVAL", "number"),
    ({"PING_TIMEOUT": "-1"}, "UPBIT_FANOUT_PING_TIMEOUT", "greater than 0"),
    ({"MAX_MESSAGES_PER_SECOND": "0"}, "UPBIT_FANOUT_MAX_MESSAGES_PER_SECOND", "1"),
    ({"MAX_MESSAGES_PER_MINUTE": "1.5"}, "UPBIT_FANOUT_MAX_MESSAGES_PER_MINUTE", "integer"),
    ({"PRIVATE_STREAM_MAXLEN": "0"}, "UPBIT_FANOUT_PRIVATE_STREAM_MAXLEN", "1"),
    ({"CONNECT_PER_SECOND": "0"}, "UPBIT_FANOUT_CONNECT_PER_SECOND", "1"),
    ({"BACKOFF_INITIAL": "0"}, "UPBIT_FANOUT_BACKOFF_INITIAL", "greater than 0"),
    ({"BACKOFF_MAX": "-5"}, "UPBIT_FANOUT_BACKOFF_MAX", "greater than 0"),
    ({"BACKOFF_FAST_MAX": "0"}, "UPBIT_FANOUT_BACKOFF_FAST_MAX", "greater than 0"),
    ({"REDIS_GRACE": "-1"}, "UPBIT_FANOUT_REDIS_GRACE", "greater than or equal to 0"),
    (
        {"MAX_TOPICS_PER_CLIENT": "0"},
        "UPBIT_FANOUT_MAX_TOPICS_PER_CLIENT",
        "greater than or equal to 1",
    ),
    ({"MAX_UNION_TOPICS": "0"}, "UPBIT_FANOUT_MAX_UNION_TOPICS", "greater than or equal to 1"),
    (
        {"MAX_REQUEST_BYTES": "100"},
        "UPBIT_FANOUT_MAX_REQUEST_BYTES",
        "greater than or equal to 1024",
    ),
    ({"MAX_TOPIC_LENGTH": "4"}, "UPBIT_FANOUT_MAX_TOPIC_LENGTH", "greater than or equal to 8"),
    (
        {"MAX_CLIENT_ID_LENGTH": "129"},
        "UPBIT_FANOUT_MAX_CLIENT_ID_LENGTH",
        "less than or equal to 128",
    ),
    ({"MAX_LEASE": "0"}, "UPBIT_FANOUT_MAX_LEASE", "greater than 0"),
    ({"LEASE_GRACE": "-1"}, "UPBIT_FANOUT_LEASE_GRACE", "greater than or equal to 0"),
    ({"INVALID_EXAMPLES": "0"}, "UPBIT_FANOUT_INVALID_EXAMPLES", "greater than or equal to 1"),
    (
        {"MAX_INVALID_CLIENTS": "0"},
        "UPBIT_FANOUT_MAX_INVALID_CLIENTS",
        "greater than or equal to 1",
    ),
    ({"VALIDATE_MARKETS": "maybe"}, "UPBIT_FANOUT_VALIDATE_MARKETS", "bool"),
    ({"MARKETS_URL": "ftp://api.upbit.com/v1/market/all"}, "UPBIT_FANOUT_MARKETS_URL", "https://"),
    ({"MARKETS_REFRESH": "0"}, "UPBIT_FANOUT_MARKETS_REFRESH", "greater than 0"),
    ({"LOG_FORMAT": "xml"}, "UPBIT_FANOUT_LOG_FORMAT", "'text' or 'json'"),
    ({"RECORD_PRIVATE": "sometimes"}, "UPBIT_FANOUT_RECORD_PRIVATE", "bool"),
    ({"UPSTREAM_FORMAT": "SIMPLE_LIST"}, "UPBIT_FANOUT_UPSTREAM_FORMAT", "'SIMPLE'"),
    ({"UPSTREAM_TRANSPORT": "aiohttp"}, "UPBIT_FANOUT_UPSTREAM_TRANSPORT", "'picows'"),
    ({"EVENT_LOOP": "trio"}, "UPBIT_FANOUT_EVENT_LOOP", "'uvloop'"),
    ({"READ_COALESCE": "0.5"}, "UPBIT_FANOUT_READ_COALESCE", "less than or equal to 0.1"),
    ({"READ_COALESCE": "-0.001"}, "UPBIT_FANOUT_READ_COALESCE", "greater than or equal to 0"),
    ({"VERIFY_SUBSCRIPTIONS": "perhaps"}, "UPBIT_FANOUT_VERIFY_SUBSCRIPTIONS", "bool"),
    ({"VERIFY_DELAY": "-1"}, "UPBIT_FANOUT_VERIFY_DELAY", "greater than or equal to 0"),
    ({"WARM_SECONDS": "soon"}, "UPBIT_FANOUT_WARM_SECONDS", "number"),
    ({"REST_SNAPSHOTS": "perhaps"}, "UPBIT_FANOUT_REST_SNAPSHOTS", "bool"),
    (
        {"BACKFILL_MAX_TRADES": "-1"},
        "UPBIT_FANOUT_BACKFILL_MAX_TRADES",
        "greater than or equal to 0",
    ),
    (
        {"SNAPSHOT_REQUESTS_PER_CLIENT": "0"},
        "UPBIT_FANOUT_SNAPSHOT_REQUESTS_PER_CLIENT",
        "greater than or equal to 1",
    ),
    ({"UPBIT_REST_URL": "wss://api.upbit.com"}, "UPBIT_FANOUT_UPBIT_REST_URL", "https://"),
    ({"RECONCILE_LOOKBACK": "-1"}, "UPBIT_FANOUT_RECONCILE_LOOKBACK", "greater than or equal to 0"),
    ({"PRIVATE_DOWN_THRESHOLD": "0"}, "UPBIT_FANOUT_PRIVATE_DOWN_THRESHOLD", "greater than 0"),
    ({"METRICS_PORT": "70000"}, "UPBIT_FANOUT_METRICS_PORT", "less than or equal to 65535"),
    ({"METRICS_HOST": "0.0.0.0/0"}, "UPBIT_FANOUT_METRICS_HOST", "host name or an IP address"),
    ({"QUEUE_SIZE": "0"}, "UPBIT_FANOUT_QUEUE_SIZE", "1"),
    ({"LEADER_LEASE": "0.5"}, "UPBIT_FANOUT_LEADER_LEASE", "at least 1"),
    ({"LEADER_LEASE": "-1"}, "UPBIT_FANOUT_LEADER_LEASE", "0"),
    ({"COLLECTOR_ID": "my collector"}, "UPBIT_FANOUT_COLLECTOR_ID", "letters, digits"),
    ({"LEASE_SECONDS": "0.5"}, "UPBIT_FANOUT_LEASE_SECONDS", "1"),
]

ARG_CASES: list[tuple[list[str], str, str]] = [
    (["emulator", "--port", "70000"], "--port", "65535"),
    (["emulator", "--port", "eighty"], "--port", "65535"),
    (["emulator", "--rate", "-1"], "--rate", "at least 0"),
    (["emulator", "--messages-per-s", "0"], "--messages-per-s", "at least 1"),
    (["status", "--redis-url", f"http://:{PASSWORD}@h/0"], "--redis-url", "redis://"),
    (["status", "--key-prefix", "a:b"], "--key-prefix", "':'"),
    (["check", "--max-age", "-3"], "--max-age", "at least"),
    (["collector", "--upstream", "https://api.upbit.com"], "--upstream", "wss://"),
    (["collector", "--private-upstream", "tcp://h"], "--private-upstream", "wss://"),
    (["collector", "--collector-id", "a b"], "--collector-id", "letters, digits"),
    (["tail", "ticker:KRW-BTC", "--client-id", "me:you"], "--client-id", "letters, digits"),
    (["tail", "ticker:KRW-BTC", "--count", "0"], "--count", "at least 1"),
    (["tail", "ticker:krw-btc"], "ticker:krw-btc", "upper case"),
    (["demo", "--topics", "ticker:krw-btc"], "ticker:krw-btc", "upper case"),
    (["demo", "--redis-url", "localhost"], "--redis-url", "redis://"),
    (["--log-level", "LOUD", "status"], "--log-level", "DEBUG"),
    (["status", "--no-such-flag"], "--no-such-flag", "--help"),
    (["no-such-command"], "no-such-command", "status"),
    ([], "COMMAND", "--help"),
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("UPBIT_FANOUT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file of the checkout


def exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse exits by itself
        return int(exc.code or 0)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.endswith("\n")
    assert captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


@pytest.mark.parametrize(
    ("env", "name", "right"), ENV_CASES, ids=[name for _, name, _ in ENV_CASES]
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    env: dict[str, str],
    name: str,
    right: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(f"UPBIT_FANOUT_{variable}", value)
    assert exit_status(["status"]) == 2
    line = one_line(capsys)
    assert line.startswith("upbit-fanout: invalid settings: ")
    assert name in line
    assert right in line
    assert SECRET not in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    ("argv", "name", "right"), ARG_CASES, ids=[" ".join(a) for a, _, _ in ARG_CASES]
)
def test_a_bad_argument_is_one_line_naming_the_flag(
    argv: list[str], name: str, right: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_status(argv) == 2
    line = one_line(capsys)
    assert line.startswith("upbit-fanout")
    assert name in line
    assert right in line
    assert PASSWORD not in line


def test_a_bad_setting_beside_set_secrets_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UPBIT_FANOUT_ACCESS_KEY", "access-" + SECRET)
    monkeypatch.setenv("UPBIT_FANOUT_SECRET_KEY", SECRET)
    monkeypatch.setenv("UPBIT_FANOUT_REDIS_URL", f"redis://user:{PASSWORD}@localhost:0/0")
    monkeypatch.setenv("UPBIT_FANOUT_CODEC", SECRET)  # a secret pasted into the wrong variable
    assert exit_status(["check"]) == 2
    line = one_line(capsys)
    assert "UPBIT_FANOUT_REDIS_URL" in line
    assert "UPBIT_FANOUT_CODEC" in line
    assert SECRET not in line
    assert PASSWORD not in line


def test_every_setting_has_a_bad_case_in_the_table() -> None:
    covered = {name.removeprefix("UPBIT_FANOUT_").lower() for _, name, _ in ENV_CASES}
    assert set(Settings.model_fields) <= covered, set(Settings.model_fields) - covered


def test_good_settings_pass_and_empty_keys_mean_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # What docker-compose passes: empty optional values. Not a mistake.
    for variable in ("ACCESS_KEY", "SECRET_KEY", "UPBIT_PRIVATE_WS_URL", "COLLECTOR_ID"):
        monkeypatch.setenv(f"UPBIT_FANOUT_{variable}", "")
    monkeypatch.setenv("UPBIT_FANOUT_REDIS_URL", "rediss://user:pw@redis.example:6380/3")
    monkeypatch.setenv("UPBIT_FANOUT_LOG_LEVEL", "debug")
    monkeypatch.setenv("UPBIT_FANOUT_LEADER_LEASE", "0")
    settings = Settings()
    assert not settings.has_private_keys()
    assert settings.upbit_private_ws_url == ""
    assert settings.collector_id is None
    assert settings.log_level == "DEBUG"
    monkeypatch.setenv("UPBIT_FANOUT_REDIS_URL", "unix:///run/redis/redis.sock")
    assert Settings().redis_url == "unix:///run/redis/redis.sock"
    sentinel = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/fanout/0"
    monkeypatch.setenv("UPBIT_FANOUT_REDIS_URL", sentinel)
    assert Settings().redis_url == sentinel
    cluster = "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/"
    monkeypatch.setenv("UPBIT_FANOUT_REDIS_URL", cluster)
    assert Settings().redis_url == cluster
