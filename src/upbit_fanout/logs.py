"""Logging set-up, done only by the command line (library code only calls ``getLogger``).

Two formats (setting ``UPBIT_FANOUT_LOG_FORMAT``, option ``--log-format``), both with dated
ISO-8601 UTC timestamps with milliseconds (``2026-12-01T21:06:49.123Z``):

``text`` (default)
    ``2026-12-01T21:06:49.123Z INFO    upbit_fanout.collector [service]: collector ... starting``
    (the logger, then the module that logged)
``json``
    one JSON object per line: ``{"time", "level", "logger", "module", "message"}``, plus
    ``"exception"``
    (the formatted traceback) when there is one. For log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

__all__ = ["IsoFormatter", "JsonFormatter", "configure_logging", "iso_time"]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(module)s]: %(message)s"


def iso_time(created: float) -> str:
    """``created`` (seconds since the epoch) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class IsoFormatter(logging.Formatter):
    """The text format, with :func:`iso_time` stamps."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "module": record.module,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exception"] = record.exc_text
        return json.dumps(body, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    """Send log records to stderr (stdout is kept for machine-readable output)."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(IsoFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
