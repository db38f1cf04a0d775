"""``upbit-fanout status | head -1``: the reader leaves early; no BrokenPipeError traceback.

Real subprocesses of the console script, their stdout a real pipe whose reading end is closed:
once before anything is written (every write fails), once by ``head -1`` after the first line
of an output larger than the pipe's buffer (the writer is cut off mid-way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.helpers import COMMAND, command_env
from upbit_fanout.subscriptions.keys import Keys

pytestmark = [
    pytest.mark.usefixtures("real_redis_url"),
    pytest.mark.skipif(not COMMAND.exists(), reason="run `make .venv/.installed-dev`"),
]


def env(url: str, keys: Keys) -> dict[str, str]:
    return command_env(redis_url=url, key_prefix=keys.prefix)


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["check"]])
def test_a_reader_gone_before_the_first_write(
    argv: list[str], real_redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    try:
        done = subprocess.run(
            [str(COMMAND), *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env(real_redis_url, keys),
            cwd=tmp_path,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr.decode() == ""  # no traceback, no "Exception ignored ..."
    # 141 (128 + SIGPIPE) when the write failed inside the command, as for any tool cut off in
    # a pipeline; the command's own status when only the last flush failed (stdout buffered).
    own = 1 if argv == ["check"] else 0  # check: unhealthy, no collector on this prefix
    assert done.returncode in (own, 141)
    assert done.returncode != 0 or argv != ["check"]  # never a false "healthy"


@pytest.mark.skipif(shutil.which("head") is None, reason="needs head(1)")
def test_status_piped_into_head(real_redis_url: str, keys: Keys, tmp_path: Path) -> None:
    r = redis.Redis.from_url(real_redis_url)
    try:
        with r.pipeline(transaction=False) as pipe:
            for number in range(2000):  # about 150 kB of status text: more than a pipe holds
                pipe.sadd(keys.intents(f"bot-{number:04d}"), "ticker:KRW-BTC", "trade:KRW-ETH")
                pipe.expire(keys.intents(f"bot-{number:04d}"), 60)
            pipe.execute()
        done = _status_into_head(real_redis_url, keys, tmp_path)
    finally:
        for key in r.scan_iter(match=f"{keys.prefix}:*", count=1000):
            r.delete(key)
        r.close()
    assert done.stdout.decode().startswith("Redis ")
    assert done.stdout.decode().count("\n") == 1
    # Cut off mid-way: 141 (128 + SIGPIPE), as any tool in a pipeline; and not one word more.
    assert done.stderr.decode() == "status=141\n"


def _status_into_head(url: str, keys: Keys, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", f"{{ '{COMMAND}' status; echo \"status=$?\" >&2; }} | head -1"],
        capture_output=True,
        env=env(url, keys),
        cwd=cwd,
        timeout=60,
        check=False,
    )
