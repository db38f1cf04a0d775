"""JSON types of frame fields, for comparing the emulator's frames with captured samples."""

from __future__ import annotations

from typing import Any

INTEGER_KEYS = frozenset({"timestamp", "trade_timestamp", "sequential_id", "tms", "ttms", "sid"})
"""Fields that are integers on the wire (DEFAULT and SIMPLE names); other numbers are "number"."""


def json_type(key: str, value: Any) -> str:
    """The JSON type of ``value`` as docs/upbit-protocol.md §4 names it (integer fields apart)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) and key in INTEGER_KEYS:
        return "integer"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
