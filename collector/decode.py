"""Upstream frame decoder: one WebSocket frame in, one :class:`Frame` per Upbit object out.

Pure: bytes in, values out, no I/O. It reads every shape Upbit sends
(docs/upbit-protocol.md §1, §2.5, §4, §7, §10.11):

- ``DEFAULT`` objects (``type``, ``code``, ``stream_type``): the normal case and the hot path;
- ``SIMPLE`` objects (``ty``, ``cd``, ``st``, nested ``obu`` units and ``ast`` assets), renamed to
  DEFAULT names with the tables of :mod:`subscriptions.upbit_fields`;
- ``JSON_LIST`` / ``SIMPLE_LIST`` frames: a JSON array of such objects (one Frame per element);
- legacy frames: ``market`` (or SIMPLE ``mk``) instead of ``type``/``code``, no ``stream_type``;
  the type is inferred from the fields (:func:`subscriptions.upbit_fields.infer_type`) and the
  market becomes ``code`` (every other field is kept);
- ``{"error": {"name", "message"}}``, ``{"status": "UP"}`` and LIST_SUBSCRIPTIONS replies
  (``method`` / SIMPLE ``mthd``), which are never events.

Fast path. A DEFAULT object frame is parsed with ``orjson`` only to read ``type``, ``code``,
``stream_type`` and ``sequential_id`` (orjson integers are exact, its floats are not, so nothing
is ever published from that parse) and its bytes are kept untouched in :attr:`Frame.raw`: with the
``json`` codec the router publishes them as they are. Everything else, and any frame whose
objects need a change (renaming, a depth suffix in ``code``), is parsed with exact numbers
(:class:`subscriptions.jsontext.RawNumber`) into :attr:`Frame.obj`, which the router re-encodes.
:meth:`Frame.exact` gives the exact object of any event frame (parsing ``raw`` on first use).

Typed fast path (:mod:`msgspec`, a dependency, imported defensively: the ordinary path below
serves alone without it). A binary frame is first decoded in one C pass against a struct per
data type (a union tagged by ``type``) that reads only what routing needs (``code``,
``stream_type``, ``sequential_id``, the number of ``orderbook_units``) and checks the JSON type
of every field of :data:`~subscriptions.upbit_fields.FIELD_TYPES` on the way, building no dict.
It only ever *accepts*: anything it refuses or cannot tell (a wrong field type, a legacy
``market``, a depth suffix, SIMPLE names, a list frame, a non-event, a number beyond a double)
goes the ordinary path below, which decides and words the error. A Hypothesis test holds it to
that: whatever it accepts, the ordinary decoder accepts with the same frame
(tests/collector/test_decode_typed.py).

Field types. Every event's fields are checked against the JSON types of
:data:`subscriptions.upbit_fields.FIELD_TYPES` (and the items of ``orderbook_units`` / ``assets``
against :data:`~subscriptions.upbit_fields.NESTED_FIELD_TYPES`) on the parse the decoder makes
anyway: one dict lookup and one type test per field present. A field of another type (``"abc"``
for ``trade_price``, a number for ``code``, null where null is not allowed) raises
:class:`InvalidEvent`, whose :attr:`InvalidEvent.kind` (``"ticker.trade_price"``) lets the caller
log each kind once.

Errors. Malformed input raises :class:`subscriptions.errors.FrameError` with a short message
(no payload dumps): not UTF-8, not JSON, a JSON scalar, an empty array, an object with no
recognisable or a non-string type, an event without a code where one is required. A list frame
whose elements are partly bad: :func:`decode_frame` returns the good ones and raises only when
nothing in the frame is usable (the first element's error); :func:`decode_frame_report` returns
the good frames *and* the errors of the bad elements, for callers that count them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Annotated, Any, Final, Literal

import orjson

from upbit_fanout.subscriptions import upbit_fields
from upbit_fanout.subscriptions.errors import FrameError
from upbit_fanout.subscriptions.jsontext import INT64_MAX, INT64_MIN, RawNumber, loads_exact
from upbit_fanout.subscriptions.topics import TOPIC_TYPES

__all__ = [
    "Frame",
    "FrameKind",
    "InvalidEvent",
    "decode_frame",
    "decode_frame_report",
    "loads_exact_strict",
]

FrameKind = Literal["event", "error", "status", "list_subscriptions"]

_EVENT_TYPES: Final = frozenset(TOPIC_TYPES)
_NO_CODE_TYPES: Final = frozenset({"myAsset"})
_MAX_SHOWN: Final = 60
_LIST_SUBSCRIPTIONS: Final = upbit_fields.LIST_SUBSCRIPTIONS_METHOD


class InvalidEvent(FrameError):
    """An event whose field has the wrong JSON type for its data type (never published)."""

    def __init__(self, type_name: str, field: str, value: object, expected: str) -> None:
        self.kind = f"{type_name}.{field}"
        """``TYPE.FIELD``: a small, bounded set (types and fields come from the tables)."""
        super().__init__(
            f"{type_name} event whose {field} is a JSON {_json_kind(value)}, not {expected}"
        )


_JSON_TYPES: Final[dict[str, frozenset[type]]] = {
    "number": frozenset({int, float, RawNumber}),
    "integer": frozenset({int}),
    "string": frozenset({str}),
}
_ANY: Final[frozenset[type]] = frozenset({int, float, RawNumber, str, bool, type(None), list, dict})
_MAX_SHAPES: Final = 512

_Spec = dict[str, tuple[frozenset[type], str]]  # field -> (allowed types, what to expect)


def _compile(table: Mapping[str, str]) -> _Spec:
    out: _Spec = {}
    for name, kind in table.items():
        base = kind.rstrip("?")
        allowed = _JSON_TYPES[base]
        if kind.endswith("?"):
            allowed = allowed | {type(None)}
            base += " or null"
        out[name] = (allowed, ("an " if base[0] == "i" else "a ") + base)
    return out


@cache
def _spec(type_name: str) -> _Spec:
    return _compile(upbit_fields.field_types(type_name))


@cache
def _nested(type_name: str) -> tuple[tuple[str, frozenset[type] | None], ...]:
    """(list field, the types every value of its items may have, or None when its fields differ
    in type: then each item is checked field by field) for the type's nested lists."""
    out: list[tuple[str, frozenset[type] | None]] = []
    for list_name in upbit_fields.nested_tables(type_name):
        kinds = {allowed for allowed, _ in _nested_spec(list_name).values()}
        out.append((list_name, kinds.pop() if len(kinds) == 1 else None))
    return tuple(out)


@cache
def _nested_spec(list_name: str) -> _Spec:
    return _compile(upbit_fields.NESTED_FIELD_TYPES[list_name])


_shapes: dict[tuple[str, tuple[str, ...]], tuple[frozenset[type], ...]] = {}
_contains: Final = frozenset.__contains__


def check_fields(obj: Mapping[str, Any], type_name: str) -> None:
    """Raise :class:`InvalidEvent` when a field of ``obj`` (DEFAULT names) has the wrong type.

    Cheap on the hot path: Upbit's objects of one type come in a few shapes (the same keys in
    the same order), so the allowed types are laid out once per shape and a frame costs one
    C-level pass over its values; the per-field loop runs only to name the culprit.
    """
    shape = (type_name, tuple(obj))
    plan = _shapes.get(shape)
    if plan is None:
        spec = _spec(type_name)
        plan = tuple(spec[name][0] if name in spec else _ANY for name in shape[1])
        if len(_shapes) >= _MAX_SHAPES:  # bounded, whatever an upstream sends
            _shapes.clear()
        _shapes[shape] = plan
    if not all(map(_contains, plan, map(type, obj.values()))):
        _explain(obj, type_name, _spec(type_name))
    for list_name, allowed in _nested(type_name):
        items = obj.get(list_name)
        if type(items) is list and items:
            ok = False
            if allowed is not None:  # orderbook units: every value a number, one C-level pass
                with contextlib.suppress(TypeError):  # an item that is not an object
                    ok = allowed.issuperset(map(type, chain.from_iterable(map(dict.values, items))))
            if not ok:
                _explain_nested(items, type_name, list_name)


def _explain(obj: Mapping[str, Any], type_name: str, spec: _Spec) -> None:
    for name, value in obj.items():
        found = spec.get(name)
        if found is not None and type(value) not in found[0]:
            raise InvalidEvent(type_name, name, value, found[1])


def _explain_nested(items: list[Any], type_name: str, list_name: str) -> None:
    spec = _nested_spec(list_name)
    for item in items:
        if type(item) is not dict:
            raise InvalidEvent(type_name, list_name, item, "a list of objects")
        for key, value in item.items():
            found = spec.get(key)
            if found is not None and type(value) not in found[0]:
                raise InvalidEvent(type_name, f"{list_name}[].{key}", value, found[1])


@dataclass(slots=True)
class Frame:
    """One decoded upstream object.

    ``raw`` is Upbit's own bytes of this object when it is a DEFAULT object that needs no change
    (publishable as is); ``obj`` is the DEFAULT-named object with exact numbers (``RawNumber`` for
    every non-integer number) when ``raw`` cannot be used, and for non-event frames. At least one
    of the two is set. ``units`` is the number of ``orderbook_units`` of an orderbook event.
    """

    kind: FrameKind
    type: str | None
    code: str | None
    stream_type: str | None
    raw: bytes | None
    obj: dict[str, Any] | None
    sequential_id: int | None
    error: tuple[str, str] | None
    units: int | None = None

    def exact(self) -> dict[str, Any]:
        """The DEFAULT-named object with exact numbers (parsed from ``raw`` once, then kept)."""
        obj = self.obj
        if obj is None:
            if self.raw is None:  # pragma: no cover - the decoder always sets one of them
                raise FrameError("frame carries neither raw bytes nor an object")
            parsed = loads_exact_strict(self.raw)
            if not isinstance(parsed, dict):  # pragma: no cover - raw came from an object
                raise FrameError("frame bytes are not a JSON object")
            obj = self.obj = parsed
        return obj


def loads_exact_strict(data: bytes | str) -> Any:
    """:func:`subscriptions.jsontext.loads_exact`, with its errors as ``FrameError``."""
    try:
        return loads_exact(data)
    except UnicodeDecodeError as exc:
        raise FrameError(f"frame is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise FrameError("frame is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise FrameError(f"frame is not JSON: {_short(str(exc))}") from None


def decode_frame(data: bytes | bytearray | memoryview | str) -> list[Frame]:
    """Decode one WebSocket frame (binary UTF-8 JSON or text) into one Frame per object.

    Raises :class:`FrameError` when nothing in the frame is usable; the bad elements of a list
    frame that also holds good ones are dropped (see :func:`decode_frame_report` to count them).
    """
    return decode_frame_report(data)[0]


def decode_frame_report(
    data: bytes | bytearray | memoryview | str,
) -> tuple[list[Frame], list[FrameError]]:
    """Like :func:`decode_frame`, but also return the errors of the bad elements of a list frame.

    Still raises :class:`FrameError` when the frame as a whole is unreadable (not JSON, a
    scalar, an empty array, a single bad object).
    """
    if _TYPED is not None and type(data) is bytes:  # msgspec: accepts, or leaves it to below
        typed = _typed_event(data)
        if typed is not None:
            return [typed], []
    return _decode_report(data)


def _decode_report(
    data: bytes | bytearray | memoryview | str,
) -> tuple[list[Frame], list[FrameError]]:
    """:func:`decode_frame_report` without the typed fast path: the authority."""
    if type(data) is bytes:  # the hot path: a binary frame holding one DEFAULT event object
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = None
        if type(value) is dict:
            type_name = value.get("type")
            if type(type_name) is str:
                frame = _fast_event(value, type_name, data)
                if frame is not None:
                    return [frame], []
            return [_decode_object(value, data)], []
    raw, value = _parse(data)
    if type(value) is dict:
        return [_decode_object(value, raw)], []
    frames, errors = _decode_list(value, raw)
    if not frames:
        raise errors[0]
    return frames, errors


# -- the typed fast path (msgspec) ----------------------------------------------------------


def _typed_decoder() -> Any:
    """One msgspec decoder for every DEFAULT event type, or None without msgspec."""
    try:
        import msgspec  # noqa: PLC0415 - guarded: a speed-up, never a reason not to start
    except ImportError:  # pragma: no cover - exercised on machines without the extra
        return None
    unset: Any = msgspec.UNSET
    unset_type: Any = msgspec.UnsetType
    # orjson, which the ordinary path parses with, reads integers beyond 64 bits as floats, so
    # an "integer" field holding one is refused there: refused here too (from INT64_MAX + 1 on,
    # since msgspec bounds are 64-bit signed; the ordinary path decides those).
    integer = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
    kinds: dict[str, Any] = {"number": float | int, "integer": integer, "string": str}

    def typed(kind: str) -> Any:
        base = kinds[kind.rstrip("?")]
        return (base | None if kind.endswith("?") else base) | unset_type

    def nested(list_name: str) -> Any:
        fields = [
            (name, typed(kind), unset)
            for name, kind in upbit_fields.NESTED_FIELD_TYPES[list_name].items()
        ]
        return list[msgspec.defstruct(f"_{list_name}", fields, kw_only=True)] | unset_type  # type: ignore[misc, unused-ignore]

    structs: list[Any] = []
    for type_name in TOPIC_TYPES:
        fields: dict[str, tuple[str, Any, Any]] = {
            name: (name, typed(kind), unset)
            for name, kind in upbit_fields.field_types(type_name).items()
        }
        for list_name in upbit_fields.nested_tables(type_name):
            fields[list_name] = (list_name, nested(list_name), unset)
        for name in ("code", "stream_type", "sequential_id", "market"):
            fields.setdefault(name, (name, Any, unset))  # read as they are, judged below
        struct = msgspec.defstruct(
            "_" + type_name.replace(".", "_"),
            list(fields.values()),
            tag_field="type",
            tag=type_name,
            kw_only=True,
        )
        structs.append(struct)
    union: Any = structs[0]
    for struct in structs[1:]:
        union = union | struct
    return msgspec.json.Decoder(union), (msgspec.ValidationError, msgspec.DecodeError), unset


def _typed_or_none() -> Any:
    try:
        return _typed_decoder()
    except (TypeError, ValueError):  # pragma: no cover - a msgspec that cannot build the structs
        return None  # the ordinary path serves alone; an optional speed-up never stops the import


_TYPED: Final = _typed_or_none()


def _typed_event(data: bytes) -> Frame | None:
    """The frame of a DEFAULT event that needs no change, decoded and type-checked in one C
    pass; None for anything else (the ordinary path decides)."""
    decoder, errors, unset = _TYPED
    if not data.isascii():  # msgspec does not check that strings are UTF-8; the ordinary path does
        try:
            data.decode()
        except UnicodeDecodeError:
            return None
    try:
        event = decoder.decode(data)
    except errors:
        return None
    type_name: str = event.__struct_config__.tag
    if event.market is not unset:
        return None  # legacy: the market names the code (the ordinary path renames)
    code = event.code
    if type(code) is str:
        if not code or "." in code:
            return None
    elif (code is not None and code is not unset) or type_name not in _NO_CODE_TYPES:
        return None
    sequential_id = units = None
    if type_name == "trade":
        sid = event.sequential_id
        sequential_id = sid if type(sid) is int else None
    elif type_name == "orderbook":
        book = event.orderbook_units
        if book is unset:
            return None  # the ordinary path says what is wrong
        units = len(book)
    if type_name in _NO_CODE_TYPES:
        code = None
    stream_type = event.stream_type
    return Frame(
        "event",
        type_name,
        code,
        stream_type if type(stream_type) is str else None,
        data,
        None,
        sequential_id,
        None,
        units,
    )


# -- parsing ----------------------------------------------------------------------------------


def _parse(data: bytes | bytearray | memoryview | str) -> tuple[bytes, Any]:
    """The frame's bytes and a fast (orjson) parse of them; floats in the result are inexact."""
    if type(data) is bytes:
        raw = data
    elif isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise FrameError("text frame holds a lone surrogate; it is not UTF-8 text") from None
    elif isinstance(data, bytearray | memoryview):
        raw = bytes(data)
    else:
        raise FrameError(f"a frame is bytes or str, not {type(data).__name__}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson is stricter than JSON in a few harmless ways (numbers beyond a double's range);
        # the exact parser decides, and its objects go the slow path with the raw bytes kept.
        value = _Exact(loads_exact_strict(raw))
    if isinstance(value, _Exact):
        inner = value.value
        if isinstance(inner, dict):
            return raw, _Exact(inner)
        if isinstance(inner, list):
            return raw, [_Exact(item) if isinstance(item, dict) else item for item in inner]
        raise FrameError(f"frame is a JSON {_json_kind(inner)}, not an object or an array")
    if type(value) is dict or type(value) is list:
        return raw, value
    raise FrameError(f"frame is a JSON {_json_kind(value)}, not an object or an array")


class _Exact:
    """Marks a value that already came from the exact parser (orjson refused the frame)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _decode_list(value: Any, raw: bytes) -> tuple[list[Frame], list[FrameError]]:
    if isinstance(value, _Exact):  # a whole-frame object that orjson refused
        return [_decode_exact(value.value, raw)], []
    if not value:
        raise FrameError("frame is an empty JSON array")
    if len(value) == 1 and type(value[0]) is dict:
        # A one-element *_LIST frame: the element's own bytes are the array's inner text.
        inner = raw.strip()[1:-1].strip()
        return [_decode_object(value[0], inner)], []
    exact: list[Any] | None = None
    frames: list[Frame] = []
    errors: list[FrameError] = []
    for index, item in enumerate(value):
        try:
            if isinstance(item, _Exact):
                frames.append(_decode_exact(item.value, None))
                continue
            if type(item) is not dict:
                raise FrameError(f"list element {index} is a JSON {_json_kind(item)}")
            if exact is None:
                parsed = loads_exact_strict(raw)
                exact = parsed if isinstance(parsed, list) else []
            frames.append(_decode_exact(exact[index], None))
        except FrameError as exc:
            errors.append(exc)
    return frames, errors


# -- objects ----------------------------------------------------------------------------------


def _decode_object(value: Any, raw: bytes) -> Frame:
    """Decode one object given its fast parse and its own bytes."""
    if isinstance(value, _Exact):
        return _decode_exact(value.value, raw)
    type_name = value.get("type")
    if type(type_name) is str:
        frame = _fast_event(value, type_name, raw)
        if frame is not None:
            return frame
    return _decode_exact(loads_exact_strict(raw), raw)


def _fast_event(value: dict[str, Any], type_name: str, raw: bytes) -> Frame | None:
    """A current DEFAULT event, kept as Upbit's own bytes; None when it needs the slow path."""
    if type_name not in _EVENT_TYPES or "market" in value:
        return None
    code = value.get("code")
    if type(code) is str:
        if not code or "." in code:
            return None
    elif code is not None or type_name not in _NO_CODE_TYPES:
        return None
    if type_name == "trade":
        sid = value.get("sequential_id")
        sequential_id = sid if type(sid) is int else None
        units = None
    elif type_name == "orderbook":
        obu = value.get("orderbook_units")
        if type(obu) is not list:
            raise FrameError("orderbook frame without an orderbook_units list")
        units = len(obu)
        sequential_id = None
    else:
        if type_name in _NO_CODE_TYPES:
            code = None
        sequential_id = units = None
    check_fields(value, type_name)
    stream_type = value.get("stream_type")
    return Frame(
        "event",
        type_name,
        code,
        stream_type if type(stream_type) is str else None,
        raw,
        None,
        sequential_id,
        None,
        units,
    )


def _decode_exact(obj: dict[str, Any], raw: bytes | None) -> Frame:
    """Decode one exactly parsed object; ``raw`` is kept when the object needed no change."""
    if "error" in obj and "type" not in obj and "ty" not in obj:
        return _error_frame(obj, raw)
    if "status" in obj and "type" not in obj and "ty" not in obj:
        status = obj["status"]
        if not isinstance(status, str):
            raise FrameError("status frame whose status is not a string")
        return Frame("status", None, None, None, raw, obj, None, None)
    if "method" in obj or "mthd" in obj:
        return _list_subscriptions_frame(obj, raw)

    declared_key = "type" if "type" in obj else "ty" if "ty" in obj else None
    if declared_key is not None and not isinstance(obj[declared_key], str):
        raise FrameError(
            f"{declared_key!r} is a JSON {_json_kind(obj[declared_key])}, not a string"
        )
    type_name = upbit_fields.infer_type(obj)
    if type_name is None:
        raise FrameError(f"object with no recognisable type (keys: {_keys(obj)})")
    if type_name not in _EVENT_TYPES:
        raise FrameError(f"unsupported data type {_short(type_name)!r}")

    simple = declared_key == "ty" or (declared_key is None and "market" not in obj)
    changed = False
    if simple:
        obj = upbit_fields.to_default(type_name, obj)
        changed = True
    if "market" in obj:  # legacy: the market names the code, and there is no type field
        market = obj["market"]
        rest = {key: value for key, value in obj.items() if key not in ("market", "type", "code")}
        obj = {"type": type_name, "code": obj.get("code", market), **rest}
        changed = True

    code: str | None = None
    if type_name not in _NO_CODE_TYPES:
        found = obj.get("code")
        if not isinstance(found, str) or not found:
            raise FrameError(f"{type_name} event without a market code")
        code, dot, _ = found.partition(".")
        if dot:  # Upbit echoes codes without the depth suffix; be robust if it ever does not
            obj["code"] = code
            changed = True
        if not code:
            raise FrameError(f"{type_name} event with an empty market code")

    stream_type = obj.get("stream_type")
    sequential_id: int | None = None
    units: int | None = None
    if type_name == "trade":
        sid = obj.get("sequential_id")
        sequential_id = sid if type(sid) is int else None
    elif type_name == "orderbook":
        obu = obj.get("orderbook_units")
        if not isinstance(obu, list):
            raise FrameError("orderbook frame without an orderbook_units list")
        units = len(obu)
    check_fields(obj, type_name)
    return Frame(
        "event",
        type_name,
        code,
        stream_type if isinstance(stream_type, str) else None,
        None if changed else raw,
        obj,
        sequential_id,
        None,
        units,
    )


def _error_frame(obj: dict[str, Any], raw: bytes | None) -> Frame:
    error = obj["error"]
    if isinstance(error, dict):
        name = error.get("name")
        message = error.get("message")
        pair = (
            name if isinstance(name, str) else "" if name is None else str(name),
            message if isinstance(message, str) else "" if message is None else str(message),
        )
    elif isinstance(error, str):
        pair = (error, "")
    else:
        raise FrameError(f"error frame whose error is a JSON {_json_kind(error)}")
    return Frame("error", None, None, None, raw, obj, None, pair)


def _list_subscriptions_frame(obj: dict[str, Any], raw: bytes | None) -> Frame:
    if "mthd" in obj:
        obj, raw = upbit_fields.to_default(_LIST_SUBSCRIPTIONS, obj), None
    method = obj.get("method")
    if method != _LIST_SUBSCRIPTIONS:
        raise FrameError(f"unknown method {_short(str(method))!r}")
    return Frame("list_subscriptions", None, None, None, raw, obj, None, None)


# -- messages ---------------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    kinds: dict[type, str] = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        RawNumber: "number",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)


def _keys(obj: Mapping[str, Any]) -> str:
    return _short(", ".join(sorted(str(key) for key in obj)[:8]) or "none")


def _short(text: str, limit: int = _MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
