"""Log lines carry a dated ISO-8601 UTC time; ``json`` gives one object per line."""

from __future__ import annotations

import json
import logging
import sys

from upbit_fanout.logs import IsoFormatter, JsonFormatter, iso_time

RECORD_TIME = 1_764_623_209.1234  # 2025-12-01T21:06:49.123Z


def record(exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    item = logging.LogRecord("upbit_fanout.x", logging.WARNING, "f.py", 1, "n=%d", (3,), exc_info)
    item.created = RECORD_TIME
    return item


def test_iso_time_has_the_date_and_milliseconds() -> None:
    assert iso_time(RECORD_TIME) == "2025-12-01T21:06:49.123Z"


def test_the_text_format_starts_with_the_dated_time() -> None:
    line = IsoFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s").format(record())
    assert line == "2025-12-01T21:06:49.123Z WARNING upbit_fanout.x: n=3"


def test_the_json_format_is_one_object_with_the_exception() -> None:
    body = json.loads(JsonFormatter().format(record(exc=True)))
    assert body["time"] == "2025-12-01T21:06:49.123Z"
    assert (body["level"], body["logger"], body["message"]) == ("WARNING", "upbit_fanout.x", "n=3")
    assert body["module"] == "f"  # the module that logged (one logger serves a whole package)
    assert "ValueError: boom" in body["exception"]


def test_the_command_line_names_the_module_after_the_package_logger() -> None:
    from upbit_fanout.logs import configure_logging  # noqa: PLC0415

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "text")
        formatter = root.handlers[0].formatter
        assert formatter is not None
        line = formatter.format(record())
        assert line == "2025-12-01T21:06:49.123Z WARNING upbit_fanout.x [f]: n=3"
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
