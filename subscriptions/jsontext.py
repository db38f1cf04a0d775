"""Strict JSON with exact numbers: the one policy every exact reader and writer follows.

Upbit writes numbers such as ``1.16539E8``, ``0.00077720`` and ``1386929.37231066771348207123``
(docs/upbit-protocol.md §10.6). A float would change them, so everything in upbit-fanout that must
read or re-write an Upbit payload exactly does it here:

- :func:`loads_exact` parses JSON keeping every non-integer number as a :class:`RawNumber` (its
  source text); :func:`dumps_exact` writes it back verbatim. Integers are ``int`` at any size.
- ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259 §6): every reader refuses them
  (``ValueError``) and :func:`dumps_exact` refuses a non-finite ``float`` or ``Decimal``
  (``TypeError``) instead of writing ``null`` for it. Other readers of exact numbers build their
  decoder with :func:`exact_decoder` (same policy, their own number type).
- 64-bit integers (:data:`INT64_MIN` .. :data:`UINT64_MAX`) are native to orjson and msgpack; a
  wider integer is still exact: :func:`replace_wide_ints` hands each one to the writer's own
  representation (bare number text in JSON, an extension value in msgpack).
- :data:`EXACT_CONTEXT` is the ``Decimal`` context for arithmetic on these numbers: maximal
  precision and exponent range, so a sum of exact numbers is exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any, Final, NoReturn

import orjson

__all__ = [
    "EXACT_CONTEXT",
    "INT64_MAX",
    "INT64_MIN",
    "UINT64_MAX",
    "RawNumber",
    "decimal_text",
    "dumps_exact",
    "exact_decoder",
    "fits_64_bits",
    "loads_exact",
    "reject_constant",
    "replace_wide_ints",
]

EXACT_CONTEXT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
"""Decimal arithmetic that never rounds the numbers Upbit sends (sums of sizes, spreads)."""

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
UINT64_MAX: Final = 2**64 - 1


def fits_64_bits(value: int) -> bool:
    """True when orjson and msgpack hold ``value`` natively (signed or unsigned 64 bits)."""
    return INT64_MIN <= value <= UINT64_MAX


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


def reject_constant(name: str) -> NoReturn:
    """``parse_constant`` for :mod:`json`: ``NaN`` and ``Infinity`` are not JSON numbers."""
    raise ValueError(f"{name} is not a JSON number")


def exact_decoder(parse_float: Callable[[str], Any] = RawNumber) -> json.JSONDecoder:
    """A :mod:`json` decoder with this module's policy: ``parse_float`` gets each non-integer
    number's text (never a float), integers are ``int``, ``NaN``/``Infinity`` raise."""
    return json.JSONDecoder(parse_float=parse_float, parse_constant=reject_constant)


_DECODE: Final = exact_decoder().decode


def loads_exact(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; non-integer numbers become :class:`RawNumber`, integers ``int``.

    Raises ``ValueError`` (``json.JSONDecodeError``, or ``UnicodeDecodeError`` for bytes that
    are not UTF-8) on malformed input, ``NaN`` and ``Infinity`` included, and ``RecursionError``
    on nesting deeper than the interpreter's stack.
    """
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8")
    return _DECODE(data)


def decimal_text(value: Decimal) -> str:
    """The exact text of a finite ``Decimal``; ``TypeError`` for NaN and Infinity."""
    if not value.is_finite():
        raise TypeError(f"{value!r} is not a finite number")
    return str(value)


def _default(obj: Any) -> Any:
    if isinstance(obj, RawNumber):
        return orjson.Fragment(obj.encode("ascii"))
    if isinstance(obj, Decimal):
        return orjson.Fragment(decimal_text(obj).encode("ascii"))
    if isinstance(obj, str):  # any other str subclass: a plain string
        return str(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, int):  # bool is handled natively; IntEnum and friends
        return int(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as exact JSON")


_OPTIONS: Final = orjson.OPT_PASSTHROUGH_SUBCLASS


def dumps_exact(obj: Any) -> bytes:
    """Write compact UTF-8 JSON; :class:`RawNumber` and ``Decimal`` are written as bare numbers.

    Integers of any size are exact. A finite Python ``float`` is written in its shortest form,
    so exact payloads should carry ``RawNumber`` or ``Decimal`` instead. Raises ``TypeError`` for
    values JSON cannot hold: NaN and Infinity (float or Decimal), objects of unknown types.
    """
    try:
        out = orjson.dumps(obj, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):  # say what _default said, not orjson's generic words
            raise TypeError(str(exc.__cause__ or exc)) from exc
        out = orjson.dumps(replace_wide_ints(obj, _int_text), default=_default, option=_OPTIONS)
    # orjson writes a non-finite float as null, without an error: look for one only when the
    # output has a null at all (a substring search; the walk is the rare case).
    if b"null" in out:
        _refuse_non_finite_floats(obj)
    return out


def _int_text(value: int) -> RawNumber:
    return RawNumber(str(value))


def replace_wide_ints(obj: Any, convert: Callable[[int], Any]) -> Any:
    """``obj`` with every integer outside 64 bits replaced by ``convert(value)``; dicts, lists
    and tuples (as lists) are walked, everything else is returned as it is."""
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj if fits_64_bits(obj) else convert(int(obj))
    if isinstance(obj, dict):
        return {key: replace_wide_ints(value, convert) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [replace_wide_ints(value, convert) for value in obj]
    return obj


_FINITE_KINDS: Final = frozenset({str, RawNumber, int, bool, type(None), Decimal})
"""Types that never hide a non-finite float (a non-finite Decimal is refused by _default)."""


def _refuse_non_finite_floats(obj: Any) -> None:
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise TypeError(f"{obj!r} is not a finite number")
        return
    if isinstance(obj, dict):
        values: Any = obj.values()
    elif isinstance(obj, list | tuple):
        values = obj
    else:
        return
    if _FINITE_KINDS.issuperset(map(type, values)):  # the usual case: one C-level pass
        return
    for value in values:
        if type(value) not in _FINITE_KINDS:
            _refuse_non_finite_floats(value)
