"""The ``upbit-fanout`` command: one entry point, one subcommand per job.

Each subcommand lives in ``upbit_fanout/commands/<name>.py`` and provides ``HELP`` (one line),
``configure(parser)`` (its own arguments) and ``run(args, settings) -> int`` (the exit status).
``main(argv=None)`` is the only place that reads the environment, configures logging and, through
the commands, calls ``asyncio.run`` (configuration at the edge).

Start-up is kept light: the command modules import only :mod:`argparse` and
:mod:`upbit_fanout.validate` at the top and their heavy parts (redis, websockets, the collector,
pydantic through the settings) inside ``run``, so ``--version`` and ``--help`` answer at once.

Mistakes are one line on stderr and exit status 2, never a traceback: a bad argument (argparse,
whose usage block is left out), or a bad setting (pydantic's error, reduced to the variable's
name and what would be right; the value itself is never repeated, it may be a secret).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from upbit_fanout import __version__, validate

if TYPE_CHECKING:
    from pydantic import ValidationError

COMMANDS: tuple[str, ...] = ("emulator", "collector", "demo", "tail", "status", "check")
PROG = "upbit-fanout"
_BROKEN_PIPE = 141  # 128 + SIGPIPE: the shell's status of a tool whose reader went away


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"upbit_fanout.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Share one Upbit WebSocket connection among many processes through Redis.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        type=validate.arg(validate.log_level),
        help="DEBUG, INFO, WARNING or ERROR (default: UPBIT_FANOUT_LOG_LEVEL, INFO)",
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


def describe_settings_error(exc: ValidationError) -> str:
    """One line for a settings error: each bad variable's name and what would be right."""
    from upbit_fanout.settings import ENV_PREFIX  # noqa: PLC0415 - pydantic is heavy

    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error.get("msg", "is invalid"))
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if message.startswith("Input should be "):  # pydantic's own checks (numbers, choices)
            message = "must be " + message.removeprefix("Input should be ")
        location: tuple[Any, ...] = tuple(error.get("loc", ()))
        if location:
            name = f"{ENV_PREFIX}{str(location[0]).upper()}"
            parts.append(f"{name}: {message[:1].lower()}{message[1:]}")
        else:
            parts.append(message)  # a check across settings names its variables itself
    return "; ".join(part.replace("\n", " ") for part in parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported after parsing: --version and --help need neither pydantic nor the settings.
    from pydantic import ValidationError  # noqa: PLC0415

    from upbit_fanout.logs import configure_logging  # noqa: PLC0415
    from upbit_fanout.settings import Settings  # noqa: PLC0415

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"{PROG}: invalid settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or settings.log_level, args.log_format or settings.log_format)
    module: ModuleType = args._module
    status = _BROKEN_PIPE
    try:
        status = int(module.run(args, settings))
        sys.stdout.flush()  # here, so a reader that went away is seen below, not at exit
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`upbit-fanout status | head -1`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's last flush does not fail again (the recipe
        # of the Python docs, "Note on SIGPIPE"). The status is the command's own when it had
        # finished (`check`'s verdict stands), else 141 as for any tool cut off by SIGPIPE.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
