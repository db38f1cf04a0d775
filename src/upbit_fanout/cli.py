"""The ``upbit-fanout`` command: one entry point, one subcommand per job.

Each subcommand lives in ``upbit_fanout/commands/<name>.py`` and provides ``HELP`` (one line),
``configure(parser)`` (its own arguments) and ``run(args, settings) -> int`` (the exit status).
``main(argv=None)`` is the only place that reads the environment, configures logging and, through
the commands, calls ``asyncio.run`` (STYLE.md: configuration at the edge).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from pydantic import ValidationError

from upbit_fanout import __version__
from upbit_fanout.logs import configure_logging
from upbit_fanout.settings import Settings

COMMANDS: tuple[str, ...] = ("emulator", "collector", "demo", "tail", "status", "check")


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"upbit_fanout.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upbit-fanout",
        description="Share one Upbit WebSocket connection among many processes through Redis.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: settings)"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text, or one JSON object per line (default: UPBIT_FANOUT_LOG_FORMAT, text)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _load(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"upbit-fanout: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or settings.log_level, args.log_format or settings.log_format)
    module: ModuleType = args._module
    try:
        return int(module.run(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
