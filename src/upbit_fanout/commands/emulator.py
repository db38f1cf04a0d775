"""``upbit-fanout emulator``: run the local Upbit emulator until SIGINT or SIGTERM.

The first line on stdout is the base URL (``ws://127.0.0.1:PORT``), flushed, so a parent process
can read it and connect (``PORT`` is free when ``--port 0``). Logs go to stderr. The secret key is
never printed or logged. See docs/emulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from typing import TYPE_CHECKING

from upbit_fanout.validate import arg, at_least, port

if TYPE_CHECKING:
    from upbit_fanout.settings import Settings

HELP = "Run a local Upbit WebSocket emulator (public, private, /v1/market/all, admin paths)."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=arg(port), default=0, help="port (0: a free one; default 0)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument(
        "--rate",
        type=arg(at_least(0)),
        default=None,
        metavar="EVENTS_PER_S",
        help="market events per second across subscribed markets, or replay lines per second "
        "per connection; 0 = as fast as possible (default 1000)",
    )
    parser.add_argument("--replay", metavar="FILE.jsonl", help="serve recorded frames")
    parser.add_argument(
        "--replay-loop", action="store_true", help="start the replay file again at its end"
    )
    parser.add_argument(
        "--access-key", help="key the private endpoint accepts (default: UPBIT_FANOUT_ACCESS_KEY)"
    )
    parser.add_argument(
        "--secret-key", help="secret the private endpoint checks (default: UPBIT_FANOUT_SECRET_KEY)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=arg(at_least(0.001, unit="s")),
        default=120.0,
        metavar="SECONDS",
        help="default 120",
    )
    parser.add_argument(
        "--status-interval",
        type=arg(at_least(0.001, unit="s")),
        default=10.0,
        metavar="SECONDS",
        help='period of {"status":"UP"} after a text PING (default 10)',
    )
    parser.add_argument(
        "--connect-limit",
        type=arg(at_least(1, kind=int)),
        default=5,
        help="new connections/s per IP",
    )
    parser.add_argument(
        "--messages-per-s", type=arg(at_least(1, kind=int)), default=5, help="per connection"
    )
    parser.add_argument(
        "--messages-per-min", type=arg(at_least(1, kind=int)), default=100, help="per connection"
    )
    parser.add_argument(
        "--private-activity",
        type=arg(at_least(0, unit="s")),
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="SECONDS",
        help="random orders on the emulated account every SECONDS (default off; flag alone: 1)",
    )
    parser.add_argument(
        "--no-compression", action="store_true", help="do not offer permessage-deflate"
    )
    parser.add_argument("--no-admin", action="store_true", help="disable the /_emulator/ paths")
    parser.add_argument(
        "--trading",
        metavar="CODES",
        default="",
        help="comma-separated markets that trade whether or not anyone watches (as on Upbit), "
        "so GET /v1/trades/ticks has trades from before a client connected",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// and https:// with a certificate made at start for 127.0.0.1, ::1 and "
        "localhost (needs the [tls] extra); the first stdout line is then the wss:// URL",
    )
    parser.add_argument(
        "--ca-out",
        metavar="PATH",
        help="with --tls: write the certificate authority (PEM) here (default: a new temporary "
        "file); its path is logged on stderr. Trust it with SSL_CERT_FILE=PATH",
    )


def _write_ca(pem: bytes, path: str | None) -> str:
    if path is None:
        handle, name = tempfile.mkstemp(prefix="upbit-fanout-emulator-ca-", suffix=".pem")
        with os.fdopen(handle, "wb") as file:
            file.write(pem)
        return name
    with open(path, "wb") as file:
        file.write(pem)
    return path


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_serve(args, settings))


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: `upbit-fanout --help` needs none of it.
    from upbit_fanout.emulator.replay import ReplayError  # noqa: PLC0415
    from upbit_fanout.emulator.server import DEFAULT_RATE, Emulator  # noqa: PLC0415
    from upbit_fanout.emulator.tls import TLSUnavailableError  # noqa: PLC0415

    if args.ca_out and not args.tls:
        print("upbit-fanout emulator: --ca-out needs --tls", file=sys.stderr)
        return 2

    access_key = args.access_key
    secret_key = args.secret_key
    if access_key is None and settings.access_key is not None:
        access_key = settings.access_key.get_secret_value()
    if secret_key is None and settings.secret_key is not None:
        secret_key = settings.secret_key.get_secret_value()

    try:
        emulator = Emulator(
            host=args.host,
            port=args.port,
            seed=args.seed,
            rate=DEFAULT_RATE if args.rate is None else args.rate,
            replay=args.replay,
            replay_loop=args.replay_loop,
            access_key=access_key,
            secret_key=secret_key,
            idle_timeout=args.idle_timeout,
            status_interval=args.status_interval,
            connect_limit_per_s=args.connect_limit,
            messages_per_s=args.messages_per_s,
            messages_per_min=args.messages_per_min,
            private_activity=args.private_activity,
            compression=None if args.no_compression else "deflate",
            admin=not args.no_admin,
            tls=args.tls,
            trading=[code.strip() for code in args.trading.split(",") if code.strip()],
        )
    except ValueError as exc:
        print(f"upbit-fanout emulator: --trading: {exc}", file=sys.stderr)
        return 2
    except (OSError, ReplayError) as exc:
        print(f"upbit-fanout emulator: cannot load the replay file: {exc}", file=sys.stderr)
        return 2
    except TLSUnavailableError as exc:
        print(f"upbit-fanout emulator: {exc}", file=sys.stderr)
        return 2
    if emulator.certificates is not None:
        try:
            ca_path = _write_ca(emulator.certificates.ca_pem, args.ca_out)
        except OSError as exc:
            print(f"upbit-fanout emulator: cannot write --ca-out: {exc}", file=sys.stderr)
            return 2
        print(
            f"upbit-fanout emulator: TLS certificate authority written to {ca_path} "
            f"(trust it with SSL_CERT_FILE={ca_path})",
            file=sys.stderr,
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await emulator.start()
        except OSError as exc:
            print(f"upbit-fanout emulator: cannot listen: {exc}", file=sys.stderr)
            return 1
        try:
            print(emulator.base_url, flush=True)
            await stop.wait()
        finally:
            await emulator.aclose()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    sys.stdout.flush()
    return 0
