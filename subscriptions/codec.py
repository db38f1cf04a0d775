"""Payload codecs: ``json`` (default) and ``msgpack``, both lossless (docs/contract.md, "Payloads").

An event payload is one Upbit object with Upbit's DEFAULT field names.

``json``
    UTF-8 JSON. When Upbit's DEFAULT frame needs no change, the collector publishes Upbit's own
    bytes untouched; otherwise it writes the object with :func:`subscriptions.jsontext.dumps_exact`,
    which keeps every number's text as Upbit wrote it.

``msgpack``
    The same map, compact. Integers that fit 64 bits are msgpack integers. Every other number is
    an extension value holding the number's exact text: type 1 for a decimal number
    (``1.16539E8``, ``0.00077720``), type 2 for an integer wider than 64 bits. No number ever
    passes through a float, so the 28-digit myAsset balance survives.

JSON is decoded by msgspec with ``float_hook=Decimal`` (the number's own text goes to ``Decimal``,
never through a float): the same value as ``json.loads(payload, parse_float=Decimal)`` at about
a quarter to a half of the cost (``bench/decode_cost.py``). A payload msgspec refuses is decoded
again by the standard library's ``json`` under :mod:`subscriptions.jsontext`'s strict policy
(:func:`~subscriptions.jsontext.exact_decoder`), so what is accepted and how errors read are the
standard library's (msgspec is stricter about lone surrogates, for one), except that ``NaN``,
``Infinity`` and ``-Infinity`` are refused (they are not JSON; msgspec refuses them too) and the
bytes must be UTF-8. Encoding refuses a non-finite ``Decimal`` in both codecs.

A payload's codec is told by its first byte: JSON objects and arrays start with ``{`` or ``[``
(a msgpack fixint there can never be a whole event), msgpack maps with 0x80-0x8f, 0xde or 0xdf.
:func:`decode_event` gives the same Python value for both codecs: numbers with a fraction or an
exponent become :class:`decimal.Decimal` (exact digits, ``str()`` gives the same text), integers
``int``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Literal

import msgpack
import msgspec

from upbit_fanout.subscriptions.errors import CodecError
from upbit_fanout.subscriptions.jsontext import (
    RawNumber,
    decimal_text,
    dumps_exact,
    exact_decoder,
    replace_wide_ints,
)

__all__ = [
    "CODECS",
    "EXT_BIG_INT",
    "EXT_DECIMAL",
    "CodecName",
    "decode_event",
    "detect_codec",
    "encode_event",
]

CodecName = Literal["json", "msgpack"]
CODECS: Final[tuple[CodecName, ...]] = ("json", "msgpack")
EXT_DECIMAL: Final = 1
EXT_BIG_INT: Final = 2

_JSON_FIRST = frozenset(b"{[ \t\r\n")


def _is_integer_text(text: str) -> bool:
    return not any(ch in text for ch in ".eE")


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, RawNumber):
        if _is_integer_text(obj):
            return msgpack.ExtType(EXT_BIG_INT, obj.encode("ascii"))
        return msgpack.ExtType(EXT_DECIMAL, obj.encode("ascii"))
    if isinstance(obj, Decimal):
        return msgpack.ExtType(EXT_DECIMAL, decimal_text(obj).encode("ascii"))
    if isinstance(obj, int) and not isinstance(obj, bool):
        return msgpack.ExtType(EXT_BIG_INT, str(int(obj)).encode("ascii"))
    if isinstance(obj, str):
        return str(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in an event")


_packer_options: Final[dict[str, Any]] = {
    "default": _msgpack_default,
    "use_bin_type": True,
    "strict_types": True,  # a RawNumber (a str subclass) must reach `default`, not be packed as str
    "datetime": False,
}
_PACK: Final = msgpack.Packer(**_packer_options).pack


def encode_event(obj: Mapping[str, Any], codec: CodecName) -> bytes:
    """Encode one event object (values from :func:`loads_exact`, or Decimal/int/str/...)."""
    if codec == "json":
        try:
            return dumps_exact(obj)
        except TypeError as exc:
            raise CodecError(f"cannot encode event as JSON: {exc}") from exc
    if codec == "msgpack":
        try:
            try:
                return bytes(_PACK(obj))
            except OverflowError:  # an int wider than 64 bits: msgpack refuses before `default`
                return bytes(_PACK(replace_wide_ints(obj, _big_int_ext)))
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode event as msgpack: {exc}") from exc
    raise CodecError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def _big_int_ext(value: int) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_BIG_INT, str(value).encode("ascii"))


def detect_codec(payload: bytes | bytearray | memoryview) -> CodecName:
    """Which codec wrote ``payload``, from its first byte; CodecError if neither did."""
    if not payload:
        raise CodecError("empty payload")
    first = payload[0]
    if first in _JSON_FIRST:
        return "json"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF) or 0x90 <= first <= 0x9F:
        return "msgpack"
    raise CodecError(f"payload starts with byte 0x{first:02x}: neither JSON nor msgpack")


def _ext_hook(code: int, data: bytes) -> Any:
    text = data.decode("ascii")
    if code == EXT_DECIMAL:
        return Decimal(text)
    if code == EXT_BIG_INT:
        return int(text)
    raise CodecError(f"unknown msgpack extension type {code}")


_JSON_FAST: Final = msgspec.json.Decoder(float_hook=Decimal).decode
_JSON_EXACT: Final = exact_decoder(Decimal).decode
_OPEN_BRACE: Final = 0x7B


def decode_event(payload: bytes | bytearray | memoryview) -> Any:
    """Decode a payload of either codec; decimals as ``Decimal``, integers as ``int``.

    Raises :class:`CodecError` for anything that is not a well-formed payload.
    """
    if payload and payload[0] == _OPEN_BRACE:  # the common case: a JSON object
        try:
            return _JSON_FAST(payload)
        except msgspec.DecodeError:
            pass  # the standard library decides, and words the error
    codec = detect_codec(payload)
    try:
        if codec == "json":
            return _JSON_EXACT(bytes(payload).decode("utf-8"))
        return msgpack.unpackb(bytes(payload), ext_hook=_ext_hook, raw=False, strict_map_key=True)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise CodecError(f"malformed {codec} payload: {exc}") from exc
