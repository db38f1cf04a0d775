"""The emulator's protocol core: no sockets, no clock, no event loop (a pure core).

Everything a client can send is decided here, from the bytes it sent:

- :func:`parse_request` turns one client message into a :class:`SubscribeRequest`,
  a :class:`ListRequest` or :data:`PING`, or raises :class:`RequestError` carrying Upbit's error
  ``name`` and its Korean message (docs/upbit-protocol.md §2, §7);
- :func:`compile_subscription` turns a request into the :class:`ConnectionSubscription` the
  server serves:
  codes without their depth suffix, unknown and lower-case codes dropped (§2.6), depth and level
  per orderbook stream (§2.3, §2.2), snapshots to send, and the LIST_SUBSCRIPTIONS listing (§2.7);
- the ``render_*`` functions write frames in the four formats (§2.5) with the SIMPLE key tables of
  :mod:`subscriptions.upbit_fields`;
- :class:`SlidingWindow` and :class:`ConnectLimiter` are the rate-limit bookkeeping (§6), with
  time passed in.

Choices where Upbit's behaviour is unknown are listed in docs/emulator.md; the code says
``CHOICE`` where it makes one.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from upbit_fanout.subscriptions import upbit_fields
from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.jsontext import dumps_exact, reject_constant

__all__ = [
    "DEPTHS",
    "ERROR_MESSAGES",
    "PING",
    "STATUS_UP",
    "BookUnits",
    "ConnectLimiter",
    "ConnectionSubscription",
    "Format",
    "ListRequest",
    "Ping",
    "RequestError",
    "RowSpec",
    "SlidingWindow",
    "Stream",
    "SubscribeRequest",
    "TypeRequest",
    "compile_subscription",
    "dumps_fast",
    "error_frame",
    "frame_binary",
    "frame_header",
    "parse_request",
    "render_event",
    "render_list_subscriptions",
    "render_row",
    "split_depth",
    "without_code",
    "wrap_list",
]

DEFAULT_DEPTH: Final = 30
DEPTHS: Final = frozenset({1, 5, 15, 30})
"""Orderbook depths a ``.N`` suffix may choose; any other suffix gives 30 (§2.3)."""

STATUS_UP: Final = b'{"status":"UP"}'
"""The keep-alive reply a text ``PING`` starts (§4.7, §5)."""

# Korean messages as the Korea host writes them (§7, upbit-samples/errors.jsonl). Only NO_TICKET,
# WRONG_FORMAT, INVALID_PARAM (unknown type) and INVALID_AUTH were captured; the others follow
# the same wording (CHOICE, docs/emulator.md).
ERROR_MESSAGES: Final[Mapping[str, str]] = {
    "NO_TICKET": "티켓이 존재하지 않거나, 유효하지 않습니다.",
    "NO_TYPE": "타입이 존재하지 않거나, 유효하지 않습니다.",
    "NO_CODES": "codes 가 존재하지 않거나, 유효하지 않습니다.",
    "WRONG_FORMAT": "Format 이 맞지 않습니다.",
    "INVALID_PARAM": "지원하지 않는 파라미터입니다.",
    "INVALID_AUTH": "인증 정보가 올바르지 않습니다.",
    "TOO_MANY_REQUESTS": "Too Many Requests",
}


class RequestError(UpbitFanoutError):
    """A client request Upbit would answer with ``{"error": {...}}`` and a close (§7)."""

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        self.message = ERROR_MESSAGES[name] if message is None else message
        super().__init__(f"{self.name}: {self.message}")

    def frame(self) -> bytes:
        """The error frame, as Upbit sends it."""
        return error_frame(self.name, self.message)


def error_frame(name: str, message: str | None = None) -> bytes:
    """``{"error":{"name":...,"message":...}}`` as compact UTF-8 JSON."""
    text = ERROR_MESSAGES.get(name, name) if message is None else message
    return dumps_exact({"error": {"name": name, "message": text}})


class Format(enum.Enum):
    """The four response formats (§2.5); the value is the string a request names."""

    DEFAULT = "DEFAULT"
    SIMPLE = "SIMPLE"
    JSON_LIST = "JSON_LIST"
    SIMPLE_LIST = "SIMPLE_LIST"

    @property
    def simple(self) -> bool:
        """Abbreviated keys."""
        return self in (Format.SIMPLE, Format.SIMPLE_LIST)

    @property
    def listed(self) -> bool:
        """Each frame is a JSON array."""
        return self in (Format.JSON_LIST, Format.SIMPLE_LIST)


class Ping:
    """The text message ``PING`` (§5): it starts the ``{"status":"UP"}`` cycle."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


PING: Final = Ping()

Level = int | Decimal


@dataclass(frozen=True, slots=True)
class TypeRequest:
    """One data-type object of a request, validated, codes exactly as sent."""

    type: str
    codes: tuple[str, ...] | None
    """``None`` when the object had no ``codes`` (myOrder: all markets; myAsset)."""
    only_snapshot: bool = False
    only_realtime: bool = False
    level: Level | None = None
    """The ``level`` field of an orderbook object (None when absent)."""


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """A subscribe message: it replaces the connection's whole subscription (§3)."""

    ticket: str | int
    types: tuple[TypeRequest, ...]
    format: Format | None


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``{"method":"LIST_SUBSCRIPTIONS"}`` (§2.7); it does not change the subscription."""

    ticket: str | int
    format: Format | None


Request = SubscribeRequest | ListRequest | Ping

_SNAPSHOT_KEYS: Final = ("is_only_snapshot", "isOnlySnapshot")
_REALTIME_KEYS: Final = ("is_only_realtime", "isOnlyRealtime")


def parse_request(data: str | bytes, *, private: bool) -> Request:
    """Validate one client message on the public (or ``private``) endpoint.

    Raises :class:`RequestError` with the name Upbit would send (§7):
    ``WRONG_FORMAT`` for text that is not a JSON array of objects (and ``codes`` on myAsset),
    ``NO_TICKET``, ``NO_TYPE``, ``NO_CODES``, ``INVALID_PARAM`` (unknown type or method,
    a type of the other endpoint, a flag that is not a boolean, an unknown format, a bad level).
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("WRONG_FORMAT") from None
    else:
        text = data
    if text.strip() == "PING":
        return PING
    try:
        items = json.loads(text, parse_constant=reject_constant)  # NaN/Infinity: not JSON
    except ValueError:
        raise RequestError("WRONG_FORMAT") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise RequestError("WRONG_FORMAT")

    ticket: Any = None
    has_ticket = False
    format_value: Any = None
    has_format = False
    method: Any = None
    type_objects: list[dict[str, Any]] = []
    for item in items:
        # CHOICE: objects are told apart by their keys, in any order (§2.1).
        if "ticket" in item:
            ticket, has_ticket = item["ticket"], True
        if "format" in item:
            format_value, has_format = item["format"], True
        if "method" in item:
            method = item["method"]
        if not ({"ticket", "format", "method"} & item.keys()) or "type" in item:
            type_objects.append(item)

    if not has_ticket or not _valid_ticket(ticket):
        raise RequestError("NO_TICKET")
    fmt = _parse_format(format_value) if has_format else None
    if method is not None:
        if method != "LIST_SUBSCRIPTIONS":
            raise RequestError("INVALID_PARAM", f"{method} 은 지원하지 않는 메소드입니다.")
        return ListRequest(ticket=ticket, format=fmt)
    if not type_objects:
        raise RequestError("NO_TYPE")
    types = tuple(_parse_type_object(obj, private=private) for obj in type_objects)
    return SubscribeRequest(ticket=ticket, types=types, format=fmt)


def _valid_ticket(ticket: Any) -> bool:
    if isinstance(ticket, str):
        return bool(ticket.strip())
    # CHOICE: the LIST_SUBSCRIPTIONS docs type the ticket as Long, so integers are accepted too.
    return isinstance(ticket, int) and not isinstance(ticket, bool)


def _parse_format(value: Any) -> Format:
    if isinstance(value, str):
        try:
            return Format(value)
        except ValueError:
            pass
    raise RequestError("INVALID_PARAM", f"{value} 은 지원하지 않는 포맷입니다.")


def _parse_type_object(obj: Mapping[str, Any], *, private: bool) -> TypeRequest:
    type_ = obj.get("type")
    if type_ is None:
        raise RequestError("NO_TYPE")
    if not isinstance(type_, str):
        raise RequestError("INVALID_PARAM", f"{type_} 은 지원하지 않는 타입입니다.")
    allowed = upbit_fields.PRIVATE_TYPES if private else upbit_fields.QUOTATION_TYPES
    if type_ not in allowed:
        # CHOICE: a type of the other endpoint is "not supported" here, like an unknown one.
        raise RequestError("INVALID_PARAM", f"{type_} 은 지원하지 않는 타입입니다.")

    if type_ == "myAsset":
        if "codes" in obj:
            raise RequestError("WRONG_FORMAT")
        return TypeRequest(type=type_, codes=None)
    codes = _parse_codes(obj.get("codes"), required=type_ != "myOrder")
    if type_ == "myOrder":
        # myOrder is realtime only (§4); the quotation flags mean nothing to it.
        return TypeRequest(type=type_, codes=codes or None)
    only_snapshot = _parse_flag(obj, _SNAPSHOT_KEYS)
    only_realtime = _parse_flag(obj, _REALTIME_KEYS)
    level = _parse_level(obj.get("level")) if type_ == "orderbook" else None
    return TypeRequest(
        type=type_,
        codes=codes,
        only_snapshot=only_snapshot,
        only_realtime=only_realtime,
        level=level,
    )


def _parse_codes(value: Any, *, required: bool) -> tuple[str, ...] | None:
    if value is None:
        if required:
            raise RequestError("NO_CODES")
        return None
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise RequestError("INVALID_PARAM", "codes 는 문자열 배열이어야 합니다.")
    if not value and required:
        raise RequestError("NO_CODES")
    return tuple(value)


def _parse_flag(obj: Mapping[str, Any], names: Sequence[str]) -> bool:
    # snake_case (current docs) wins over camelCase (older docs, cryptofeed, pyupbit) (§2.2).
    for name in names:
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise RequestError("INVALID_PARAM", f"{name} 은 지원하지 않는 값입니다.")
        return value
    return False


def _parse_level(value: Any) -> Level | None:
    if value is None:
        return None
    number: Decimal | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, (float, str)):
        # CHOICE: the guide types level as String while examples send numbers; accept both.
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            number = None
    if number is None or not number.is_finite() or number < 0:
        raise RequestError("INVALID_PARAM", f"level {value} 은 지원하지 않는 값입니다.")
    return int(number) if number == number.to_integral_value() else number.normalize()


def without_code(
    request: SubscribeRequest, code: str | None = None
) -> tuple[SubscribeRequest, str | None]:
    """``request`` with one code taken out (a fault: a partly applied subscription), and the
    code taken (as sent), or None when there was nothing to take.

    ``code`` (without a depth suffix) names it: it is taken from the first type object holding
    it. Without ``code``, the last code of the first type object with codes is taken. A type
    object left without codes is dropped with it.
    """
    types = list(request.types)
    for index, obj in enumerate(types):
        if not obj.codes:
            continue
        if code is None:
            taken = obj.codes[-1]
        else:
            matches = [sent for sent in obj.codes if sent.partition(".")[0] == code]
            if not matches:
                continue
            taken = matches[0]
        kept = tuple(sent for sent in obj.codes if sent != taken)
        if kept:
            types[index] = replace(obj, codes=kept)
        else:
            del types[index]
        return replace(request, types=tuple(types)), taken
    return request, None


def split_depth(code: str) -> tuple[str, int]:
    """``"KRW-BTC.15"`` -> ``("KRW-BTC", 15)``; no suffix or any other suffix gives 30 (§2.3)."""
    base, dot, suffix = code.partition(".")
    if not dot:
        return code, DEFAULT_DEPTH
    depth = int(suffix) if suffix.isdigit() else 0
    return base, depth if depth in DEPTHS else DEFAULT_DEPTH


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream a connection is served: type, code (no suffix), orderbook depth and level."""

    type: str
    code: str
    depth: int = 0
    """Orderbook units per frame (1, 5, 15 or 30); 0 for other types."""
    level: Level = 0
    """Orderbook price grouping (KRW pairs only); 0 for other types."""


@dataclass(frozen=True, slots=True)
class ConnectionSubscription:
    """What one connection is served after its latest request (§3: the whole of it)."""

    ticket: str | int
    format: Format
    realtime: Mapping[tuple[str, str], tuple[Stream, ...]]
    """(type, code) -> the streams that want REALTIME frames of it (several orderbook depths)."""
    snapshots: tuple[Stream, ...]
    """One SNAPSHOT per stream, in request order, sent right after the request."""
    replay: Mapping[tuple[str, str], tuple[bool, bool]]
    """(type, code) -> (takes SNAPSHOT lines, takes REALTIME lines), for replayed frames."""
    my_order: frozenset[str] | None
    """myOrder codes: None = not subscribed, empty = all markets."""
    my_asset: bool
    listing: tuple[Mapping[str, Any], ...]
    """The LIST_SUBSCRIPTIONS ``result`` (DEFAULT keys)."""

    @property
    def codes(self) -> frozenset[str]:
        """Every quotation code with at least one stream (realtime or snapshot)."""
        return frozenset(code for _, code in self.realtime) | {s.code for s in self.snapshots}

    def wants(self, type_: str, code: str | None) -> bool:
        """Whether a REALTIME frame of this type and code is for this connection."""
        if type_ == "myOrder":
            return self.my_order is not None and (not self.my_order or code in self.my_order)
        if type_ == "myAsset":
            return self.my_asset
        return code is not None and (type_, code) in self.realtime


EMPTY_LISTING: Final[tuple[Mapping[str, Any], ...]] = ()


def compile_subscription(
    request: SubscribeRequest,
    *,
    is_known: Callable[[str], bool],
) -> ConnectionSubscription:
    """The :class:`ConnectionSubscription` a request asks for.

    ``is_known(code)`` tells served markets from the rest: unknown and lower-case codes are
    dropped without an error (§2.6). An orderbook ``level`` other than 0 on a non-KRW pair
    delivers nothing (§7, as observed). The same stream asked twice is served once; the same
    code at two depths is served at both (§2.4).
    """
    realtime: dict[tuple[str, str], list[Stream]] = {}
    snapshots: list[Stream] = []
    seen_snapshots: set[Stream] = set()
    replay: dict[tuple[str, str], tuple[bool, bool]] = {}
    order_codes: set[str] = set()
    order_all = False
    order_subscribed = False
    my_asset = False
    for obj in request.types:
        if obj.type == "myAsset":
            my_asset = True
            continue
        if obj.type == "myOrder":
            order_subscribed = True
            order_all = order_all or obj.codes is None
            order_codes.update(obj.codes or ())
            continue
        level: Level = obj.level if obj.level is not None else 0
        for sent in obj.codes or ():
            if obj.type == "orderbook":
                code, depth = split_depth(sent)
                if level and not code.startswith("KRW-"):
                    continue
                stream = Stream(obj.type, code, depth, level)
            else:
                code = sent
                stream = Stream(obj.type, code)
            if not is_known(code):
                continue
            key = (obj.type, code)
            snap_ok = not obj.only_realtime
            real_ok = not obj.only_snapshot
            if snap_ok and stream not in seen_snapshots:
                seen_snapshots.add(stream)
                snapshots.append(stream)
            if real_ok:
                streams = realtime.setdefault(key, [])
                if stream not in streams:
                    streams.append(stream)
            was_snap, was_real = replay.get(key, (False, False))
            replay[key] = (was_snap or snap_ok, was_real or real_ok)
    orders: frozenset[str] | None = None
    if order_subscribed:
        orders = frozenset() if order_all else frozenset(order_codes)
    return ConnectionSubscription(
        ticket=request.ticket,
        # CHOICE: a subscribe request without a format object means DEFAULT (§2.5).
        format=request.format or Format.DEFAULT,
        realtime={key: tuple(streams) for key, streams in realtime.items()},
        snapshots=tuple(snapshots),
        replay=replay,
        my_order=orders,
        my_asset=my_asset,
        listing=_listing(request.types),
    )


def _listing(types: Iterable[TypeRequest]) -> tuple[Mapping[str, Any], ...]:
    # CHOICE: one entry per type (per type and level for orderbook) in request order, codes as
    # sent, merged without duplicates; level only on orderbook entries (list_subscriptions.jsonl).
    entries: dict[tuple[str, Level | None], dict[str, Any]] = {}
    for obj in types:
        level = (obj.level if obj.level is not None else 0) if obj.type == "orderbook" else None
        entry = entries.get((obj.type, level))
        if entry is None:
            entry = entries[(obj.type, level)] = {"type": obj.type}
        if obj.codes is not None:
            codes: list[str] = entry.setdefault("codes", [])
            codes.extend(code for code in obj.codes if code not in codes)
        if level is not None:
            entry["level"] = level
    return tuple(entries.values())


# --- rendering ---------------------------------------------------------------------------------


def _table(type_: str) -> Mapping[str, str]:
    try:
        return upbit_fields.table_for(type_)
    except KeyError:
        return {}


def render_event(
    type_: str, payload: Mapping[str, Any], stream_type: str, *, simple: bool
) -> bytes:
    """One data object (not wrapped) with ``stream_type`` added, DEFAULT or SIMPLE keys.

    ``stream_type`` goes last, except on orderbook frames where ``level`` follows it, as in
    the captured frames (upbit-samples/orderbook.jsonl).
    """
    obj = dict(payload)
    obj.pop("stream_type", None)
    if "level" in obj and type_ == "orderbook":
        level = obj.pop("level")
        obj["stream_type"] = stream_type
        obj["level"] = level
    else:
        obj["stream_type"] = stream_type
    if type_ == "orderbook":
        units = obj.get("orderbook_units")
        text = _units_text(units, simple=simple)
        if text is not None:
            obj["orderbook_units"] = orjson.Fragment(text)
    if simple:
        obj = upbit_fields.to_simple(type_, obj)
    return dumps_fast(obj)


_UNIT_KEYS: Final = ("ask_price", "bid_price", "ask_size", "bid_size")
_UNIT_TEMPLATES: Final = {
    simple: "{" + ",".join(f'"{key}":%s' for key in keys) + "}"
    for simple, keys in (
        (False, _UNIT_KEYS),
        (True, tuple(upbit_fields.ORDERBOOK_UNIT[key] for key in _UNIT_KEYS)),
    )
}


def _units_text(units: Any, *, simple: bool) -> str | None:
    """Orderbook units as JSON text, 2-3x faster than through orjson's per-Decimal callback.

    Only for the simulator's uniform units (four Decimal values in the usual key order); anything
    else returns None and is rendered the general way.
    """
    if not isinstance(units, list) or not units:
        return None
    first = units[0]
    if (
        not isinstance(first, dict)
        or tuple(first) != _UNIT_KEYS
        or not all(value.__class__ is Decimal for value in first.values())
    ):
        return None
    template = _UNIT_TEMPLATES[simple]
    try:
        parts = [
            template % (u["ask_price"], u["bid_price"], u["ask_size"], u["bid_size"]) for u in units
        ]
    except (KeyError, TypeError):
        return None
    return "[" + ",".join(parts) + "]"


_PASSTHROUGH: Final = orjson.OPT_PASSTHROUGH_SUBCLASS  # RawNumber (a str) must reach dumps_exact


def _decimal_fragment(value: Any) -> Any:
    # The hot path of the firehose: simulated payloads carry thousands of Decimals per batch.
    # Checking the exact class first is twice as fast as jsontext's general default.
    if value.__class__ is Decimal:
        text = str(value)
        if text[-1].isdigit():  # NaN, sNaN and Infinity end in a letter: refuse them below
            return orjson.Fragment(text)
    raise TypeError


def dumps_fast(obj: Any) -> bytes:
    """:func:`subscriptions.jsontext.dumps_exact`, faster for payloads made of Decimals.

    Same output (Decimal text verbatim, compact UTF-8); anything this fast path does not handle
    (RawNumber, integers beyond 64 bits, non-finite Decimals) goes through ``dumps_exact``.
    """
    try:
        return orjson.dumps(obj, default=_decimal_fragment, option=_PASSTHROUGH)
    except TypeError:
        return dumps_exact(obj)


_PLACEHOLDERS: Final = {"num": "%s", "int": "%d", "str": '"%s"', "json": "%s", "units": "%s"}


class RowSpec:
    """The fixed shape of one kind of data object, for objects carried as a tuple of values.

    ``fields`` are ``(key, kind, constant)`` in DEFAULT key order. A row is the tuple of the
    values of every non-constant field, in that order, each already in its wire form:

    - ``"num"``: the number's exact JSON text (a ``str`` such as ``"0.00120000"``),
    - ``"int"``: an ``int``,
    - ``"str"``: a ``str`` that needs no JSON escaping (dates, enum words),
    - ``"json"``: a ``str`` holding a complete JSON token (``'"KRW-BTC"'``),
    - ``"units"``: a :class:`BookUnits` (orderbook units, written with the format's keys),
    - ``"const"``: not in the row; the field always has ``constant``.

    ``tail`` fields (constants only) follow ``stream_type``, as ``level`` does on orderbook
    frames.

    :func:`render_row` writes a row from a %-template built once per (format keys, stream type),
    so no number goes through a conversion on the hot path; :meth:`payload` turns a row into the
    usual dict (numbers as ``Decimal``), whose :func:`render_event` is byte for byte the same.
    """

    __slots__ = ("_templates", "fields", "realtime", "tail", "type", "units_at")

    KINDS: Final = frozenset({"num", "int", "str", "json", "units", "const"})

    def __init__(
        self,
        type_: str,
        fields: Sequence[tuple[str, str, Any]],
        tail: Sequence[tuple[str, Any]] = (),
    ) -> None:
        for key, kind, _ in fields:
            if kind not in self.KINDS:
                raise ValueError(f"unknown field kind {kind!r} for {key!r}")
        self.type = type_
        self.fields = tuple(fields)
        self.tail = tuple(tail)
        positions = [f for f in self.fields if f[1] != "const"]
        units = [i for i, f in enumerate(positions) if f[1] == "units"]
        if len(units) > 1:
            raise ValueError("at most one units field")
        self.units_at: int | None = units[0] if units else None
        """Position in the row of the units field (written per format), or None."""
        self._templates: dict[tuple[bool, str], str] = {}
        self.realtime = (
            self.template("REALTIME", simple=False),
            self.template("REALTIME", simple=True),
        )
        """The REALTIME templates, DEFAULT then SIMPLE keys (index them with ``simple``)."""

    def payload(self, row: Sequence[Any]) -> dict[str, Any]:
        """The row as a dict with DEFAULT keys; numbers become ``Decimal``."""
        out: dict[str, Any] = {}
        values = iter(row)
        for key, kind, constant in self.fields:
            if kind == "const":
                out[key] = constant
                continue
            value = next(values)
            if kind == "num":
                out[key] = Decimal(value)
            elif kind == "json":
                out[key] = orjson.loads(value)
            elif kind == "units":
                out[key] = value.payload()
            else:
                out[key] = value
        for key, constant in self.tail:
            out[key] = constant
        return out

    def template(self, stream_type: str, *, simple: bool) -> str:
        """The %-template of one object with ``stream_type`` last, DEFAULT or SIMPLE keys."""
        found = self._templates.get((simple, stream_type))
        if found is not None:
            return found
        table = _table(self.type) if simple else {}
        parts: list[str] = []
        for key, kind, constant in self.fields:
            name = orjson.dumps(table.get(key, key)).decode().replace("%", "%%")
            if kind == "const":
                value = dumps_exact(constant).decode().replace("%", "%%")
            else:
                value = _PLACEHOLDERS[kind]
            parts.append(f"{name}:{value}")
        name = orjson.dumps(table.get("stream_type", "stream_type")).decode()
        stream = orjson.dumps(stream_type).decode().replace("%", "%%")
        parts.append(f"{name}:{stream}")
        for key, constant in self.tail:
            name = orjson.dumps(table.get(key, key)).decode().replace("%", "%%")
            parts.append(f"{name}:" + dumps_exact(constant).decode().replace("%", "%%"))
        found = self._templates[(simple, stream_type)] = "{" + ",".join(parts) + "}"
        return found


class BookUnits:
    """Orderbook units as number texts: ``first`` and each of ``rest`` are ``(ask_price,
    bid_price, ask_size, bid_size)``. ``rest_text`` caches the written ``rest`` per key set and
    may be shared by books whose units beyond the first are the same (a partial fill moves only
    the best sizes), so such a book writes one unit."""

    __slots__ = ("first", "rest", "rest_text")

    def __init__(
        self,
        first: tuple[str, str, str, str],
        rest: tuple[tuple[str, str, str, str], ...],
        rest_text: dict[bool, str] | None = None,
    ) -> None:
        self.first = first
        self.rest = rest
        self.rest_text: dict[bool, str] = {} if rest_text is None else rest_text

    def __len__(self) -> int:
        return 1 + len(self.rest)

    def text(self, *, simple: bool) -> str:
        """The JSON array, DEFAULT or SIMPLE unit keys."""
        template = _UNIT_TEMPLATES[simple]
        rest = self.rest_text.get(simple)
        if rest is None:
            rest = self.rest_text[simple] = "".join(["," + template % u for u in self.rest])
        return "[" + template % self.first + rest + "]"

    def payload(self) -> list[dict[str, Decimal]]:
        """The units as the dicts of an ``orderbook`` payload (numbers as ``Decimal``)."""
        return [
            dict(zip(_UNIT_KEYS, map(Decimal, unit), strict=True))
            for unit in (self.first, *self.rest)
        ]


def render_row(spec: RowSpec, row: tuple[Any, ...], stream_type: str, *, simple: bool) -> bytes:
    """:func:`render_event` of ``spec.payload(row)``, written straight from the row's values."""
    at = spec.units_at
    if at is not None:
        row = (*row[:at], row[at].text(simple=simple), *row[at + 1 :])
    return (spec.template(stream_type, simple=simple) % row).encode()


def frame_binary(data: bytes) -> bytes:
    """``data`` as one unmasked, uncompressed binary WebSocket frame (RFC 6455 5.2).

    A server frame without extensions depends only on its payload, so it is built once and
    written to every connection that negotiated no compression.
    """
    return frame_header(len(data)) + data


def frame_header(length: int) -> bytes:
    """The header of an unmasked, uncompressed binary frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return b"\x82\x7e" + length.to_bytes(2, "big")
    return b"\x82\x7f" + length.to_bytes(8, "big")


def wrap_list(*objects: bytes) -> bytes:
    """A ``*_LIST`` frame: the already rendered objects in one JSON array."""
    return b"[" + b",".join(objects) + b"]"


def render_list_subscriptions(
    listing: Sequence[Mapping[str, Any]], ticket: str | int, fmt: Format
) -> bytes:
    """The LIST_SUBSCRIPTIONS answer (§2.7); SIMPLE keys under SIMPLE formats.

    CHOICE: never wrapped in an array, also under ``*_LIST`` formats (it is an answer, not a
    stream); the ticket is the one of the LIST request.
    """
    method = upbit_fields.LIST_SUBSCRIPTIONS_METHOD
    reply = {"method": method, "result": [dict(e) for e in listing], "ticket": ticket}
    return dumps_exact(upbit_fields.to_simple(method, reply) if fmt.simple else reply)


# --- rate limits -------------------------------------------------------------------------------


class SlidingWindow:
    """At most ``count`` events in any ``seconds``-long window, for each (count, seconds) limit.

    CHOICE (docs/emulator.md): a sliding window, the strictest reading of "5 per second and
    100 per minute"; a client that passes it passes any fixed-window server too. A limit with
    ``count <= 0`` is off.
    """

    __slots__ = ("_horizon", "_limits", "_times")

    def __init__(self, limits: Sequence[tuple[int, float]]) -> None:
        self._limits = tuple((count, seconds) for count, seconds in limits if count > 0)
        self._horizon = max((seconds for _, seconds in self._limits), default=0.0)
        self._times: deque[float] = deque()

    def try_acquire(self, now: float) -> bool:
        """Record one event at ``now`` if every limit allows it; False (nothing recorded) if not."""
        times = self._times
        while times and times[0] <= now - self._horizon:
            times.popleft()
        for count, seconds in self._limits:
            if len(times) >= count and self._count_since(now - seconds) >= count:
                return False
        if self._limits:
            times.append(now)
        return True

    def remaining(self, now: float, seconds: float) -> int:
        """How many more events the limit of this window length allows at ``now``."""
        for count, window in self._limits:
            if window == seconds:
                return max(0, count - self._count_since(now - window))
        return 0

    def idle(self, now: float) -> bool:
        """True when no recorded event is inside any window any more (safe to forget)."""
        return not self._times or self._times[-1] <= now - self._horizon

    def _count_since(self, start: float) -> int:
        total = 0
        for t in reversed(self._times):
            if t <= start:
                break
            total += 1
        return total


class ConnectLimiter:
    """New connections per client address (§6: 5 per second); forgets quiet addresses."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._windows: dict[str, SlidingWindow] = {}

    def try_acquire(self, address: str, now: float) -> bool:
        if self.per_second <= 0:
            return True
        if len(self._windows) > 1024:
            self._windows = {a: w for a, w in self._windows.items() if not w.idle(now)}
        window = self._windows.get(address)
        if window is None:
            window = self._windows[address] = SlidingWindow([(self.per_second, 1.0)])
        return window.try_acquire(now)

    def remaining(self, address: str, now: float) -> int:
        """Connections this address may still open in the current second."""
        window = self._windows.get(address)
        if window is None:
            return self.per_second
        return window.remaining(now, 1.0)
