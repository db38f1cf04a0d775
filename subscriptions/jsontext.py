"""JSON with exact numbers: parse and write JSON without ever turning a number into a float.

Upbit writes numbers such as ``1.16539E8``, ``0.00077720`` and ``1386929.37231066771348207123``
(docs/upbit-protocol.md §10.6). A float would change them, so everything in upbit-fanout that must
re-write an Upbit payload parses it with :func:`loads_exact`, which keeps every non-integer number
as a :class:`RawNumber` (its source text), and writes it with :func:`dumps_exact`, which puts that
text back verbatim. Integers stay ``int`` (Python integers are exact at any size).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["RawNumber", "dumps_exact", "loads_exact"]


class RawNumber(str):
    """A JSON number kept as the exact text it was written with (e.g. ``"1.16539E8"``).

    It is a ``str`` so it costs nothing to create while parsing; :func:`dumps_exact` writes it as
    a bare JSON number, and ``Decimal(raw)`` gives its exact value.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RawNumber({str.__repr__(self)})"

    def to_decimal(self) -> Decimal:
        return Decimal(self)


def loads_exact(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; non-integer numbers become :class:`RawNumber`, integers ``int``.

    Raises ``ValueError`` (``json.JSONDecodeError`` or ``UnicodeDecodeError``) on malformed input.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data, parse_float=RawNumber, parse_int=_parse_int)


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _parse_int(text: str) -> int | RawNumber:
    value = int(text)
    # orjson (the writer) handles 64-bit integers only; keep larger ones as text, still exact.
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    return RawNumber(text)


def _default(obj: Any) -> Any:
    if isinstance(obj, RawNumber):
        return orjson.Fragment(obj.encode("ascii"))
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError(f"JSON has no representation for {obj!r}")
        return orjson.Fragment(str(obj).encode("ascii"))
    if isinstance(obj, str):  # any other str subclass: a plain string
        return str(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, int):  # bool is handled natively; IntEnum and friends
        return int(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as exact JSON")


def dumps_exact(obj: Any) -> bytes:
    """Write compact UTF-8 JSON; :class:`RawNumber` and ``Decimal`` are written as bare numbers.

    Integers of any size are exact. A Python ``float`` is written in its shortest form, so exact
    payloads should carry ``RawNumber`` or ``Decimal`` instead. Raises ``TypeError`` for values
    JSON cannot hold.
    """
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise TypeError(str(exc)) from exc
    return orjson.dumps(_big_ints_as_text(obj), default=_default, option=_OPTIONS)


_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS


def _big_ints_as_text(obj: Any) -> Any:
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj if _INT64_MIN <= obj <= _UINT64_MAX else RawNumber(str(obj))
    if isinstance(obj, dict):
        return {key: _big_ints_as_text(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_big_ints_as_text(value) for value in obj]
    return obj
