"""Private events that are never lost: the pure decisions (docs/contract.md, "Private streams").

No I/O here; the clock comes in as ``now_ms``. Used by the router (identities), the private
recorder (gaps, reconciliation) and the publisher (entry layout):

- :func:`identity`: what makes a myOrder/myAsset event the same event twice, so the publisher's
  Lua script can refuse a second copy (after a reconnect, a takeover, a re-sent batch, or a REST
  reconciliation that finds what the socket already delivered);
- :func:`gap_event`: the entry written into a stream when the private socket was down;
- :func:`rest_query`, :func:`closed_windows`: Upbit REST queries for the orders of a gap window;
- :func:`order_event`, :func:`asset_event`: a REST order / account list in the WebSocket's
  myOrder / myAsset shape, with exact numbers;
- :func:`missing_order_events`, :func:`changed_currencies`: the diff between what the stream
  holds and what REST says;
- :func:`parse_remaining_req`: Upbit's ``Remaining-Req`` header.

Identity of a myOrder event (the fields Upbit documents for every order event,
docs/upbit-protocol.md §4.5):
``myOrder|{uuid}|trade|{trade_uuid}`` for a fill, ``myOrder|{uuid}|{state}|{executed_volume}``
for any other state (``wait``, ``watch``, ``done``, ``cancel``, ...). The timestamp is left out
on purpose: a REST answer about the same state has another timestamp but is the same state.
A myAsset event is ``myAsset|{asset_uuid}``; a reconciled one gets a name-based uuid (uuid5)
of its balances, so the same balances reconciled twice are one event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import quote

__all__ = [
    "STREAM_TYPES",
    "WEEK_MS",
    "asset_event",
    "asset_identity",
    "changed_currencies",
    "closed_windows",
    "gap_event",
    "gap_identity",
    "identity",
    "missing_order_events",
    "order_event",
    "order_identity",
    "parse_remaining_req",
    "parse_rest_time",
    "rest_base_url",
    "rest_query",
    "unfinished_orders",
]

STREAM_TYPES: Final = ("myOrder", "myAsset")
WEEK_MS: Final = 7 * 24 * 3600 * 1000
"""Upbit's longest ``/v1/orders/closed`` window."""

_REMAINING: Final = re.compile(r"(?:^|;)\s*sec=(\d+)")
_GROUP: Final = re.compile(r"(?:^|;)\s*group=([^;\s]+)")


def _number_text(value: Any) -> str:
    """A number's canonical text (``1.50`` and ``1.5`` are the same amount)."""
    if value is None:
        return ""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    if not number.is_finite():
        return str(value)
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


def order_identity(obj: Mapping[str, Any]) -> str | None:
    """The identity of one myOrder state; None when the event has no ``uuid``/``state``."""
    uuid, state = obj.get("uuid"), obj.get("state")
    if not isinstance(uuid, str) or not uuid or not isinstance(state, str) or not state:
        return None
    if state == "trade":
        trade = obj.get("trade_uuid")
        if isinstance(trade, str) and trade:
            return f"myOrder|{uuid}|trade|{trade}"
    return f"myOrder|{uuid}|{state}|{_number_text(obj.get('executed_volume'))}"


def asset_identity(obj: Mapping[str, Any]) -> str | None:
    """The identity of one myAsset event (its ``asset_uuid``, or its content if reconciled)."""
    asset_uuid = obj.get("asset_uuid")
    if isinstance(asset_uuid, str) and asset_uuid:
        return f"myAsset|{asset_uuid}"
    assets = obj.get("assets")
    if not isinstance(assets, list):
        return None
    return f"myAsset|rest|{hashlib.sha1(_asset_content(assets).encode()).hexdigest()}"


def _asset_content(assets: Iterable[Any]) -> str:
    return "|".join(
        f"{a.get('currency')}={_number_text(a.get('balance'))}/{_number_text(a.get('locked'))}"
        for a in sorted(
            (a for a in assets if isinstance(a, Mapping)), key=lambda a: str(a.get("currency"))
        )
    )


def identity(type_name: str, obj: Mapping[str, Any]) -> str | None:
    """The dedupe identity of a private event (None: no dedupe possible, always appended)."""
    if type_name == "myOrder":
        return order_identity(obj)
    if type_name == "myAsset":
        return asset_identity(obj)
    return None


def gap_event(from_ms: int, to_ms: int, reason: str) -> dict[str, Any]:
    """The payload of a gap entry: events between ``from`` and ``to`` (epoch ms) may be missing
    from this stream (the private socket was down); reconciled entries may follow."""
    return {"type": "gap", "from": from_ms, "to": to_ms, "reason": reason}


def gap_identity(type_name: str, from_ms: int, to_ms: int) -> str:
    return f"{type_name}|gap|{from_ms}|{to_ms}"


# -- REST queries ---------------------------------------------------------------------------------
def rest_query(params: Sequence[tuple[str, str]]) -> str:
    """The query string, exactly as sent and hashed: ``key=value&...`` in the given order, keys
    as written (``states[]`` stays readable, as in Upbit's examples), values percent-encoded."""
    return "&".join(f"{key}={quote(str(value), safe='')}" for key, value in params)


def rest_base_url(private_ws_url: str) -> str:
    """The REST base next to a private WebSocket URL: ``wss://api.upbit.com/websocket/v1/private``
    -> ``https://api.upbit.com`` (``ws://`` -> ``http://``, as the emulator serves both)."""
    scheme, _, rest = private_ws_url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'https' if scheme == 'wss' else 'http'}://{host}"


def closed_windows(from_ms: int, to_ms: int, *, lookback_ms: int) -> list[tuple[int, int]]:
    """``(start, end)`` windows of at most 7 days covering ``[from - lookback, to]``.

    Upbit selects closed orders by creation time, so an order created before the gap and
    finished inside it is found only if the window reaches back to its creation: ``lookback``
    says how far (docs/collector.md, ``reconcile_lookback``)."""
    start = max(0, from_ms - lookback_ms)
    windows: list[tuple[int, int]] = []
    while True:
        end = min(to_ms, start + WEEK_MS)
        windows.append((start, end))
        if end >= to_ms:
            return windows
        start = end


def parse_remaining_req(header: str | None) -> tuple[str | None, int | None]:
    """``group=default; min=1800; sec=29`` -> ``("default", 29)``; missing parts are None."""
    if not header:
        return None, None
    group = _GROUP.search(header)
    sec = _REMAINING.search(header)
    return (group.group(1) if group else None, int(sec.group(1)) if sec else None)


def parse_rest_time(text: Any) -> int | None:
    """Upbit's ``created_at`` (ISO 8601 with an offset) as epoch ms; None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone(dt.timedelta(hours=9)))
    return int(moment.timestamp() * 1000)


# -- REST answers in the stream's shape -----------------------------------------------------------
def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def order_event(order: Mapping[str, Any], *, now_ms: int) -> dict[str, Any]:
    """A REST order (``/v1/order``, ``/v1/orders/open|closed``) as a myOrder event (§4.5 shape).

    Amounts keep the REST answer's exact digits (Decimal). Fields REST does not give (the last
    fill's ``trade_uuid``, ``trade_fee``, ``is_maker``...) are None; ``timestamp`` is when the
    reconciliation saw it, ``order_timestamp`` the order's ``created_at``."""
    executed = _decimal(order.get("executed_volume")) or Decimal(0)
    funds = _decimal(order.get("executed_funds"))
    avg = (funds / executed) if funds is not None and executed else Decimal(0)
    side = str(order.get("side") or "")
    return {
        "type": "myOrder",
        "code": order.get("market"),
        "uuid": order.get("uuid"),
        "ask_bid": side.upper() if side in ("ask", "bid") else None,
        "order_type": order.get("ord_type"),
        "state": order.get("state"),
        "trade_uuid": None,
        "price": _decimal(order.get("price")),
        "avg_price": avg,
        "volume": _decimal(order.get("volume")),
        "remaining_volume": _decimal(order.get("remaining_volume")),
        "executed_volume": executed,
        "trades_count": order.get("trades_count"),
        "reserved_fee": _decimal(order.get("reserved_fee")),
        "remaining_fee": _decimal(order.get("remaining_fee")),
        "paid_fee": _decimal(order.get("paid_fee")),
        "locked": _decimal(order.get("locked")),
        "executed_funds": funds,
        "time_in_force": order.get("time_in_force"),
        "trade_fee": None,
        "is_maker": None,
        "identifier": order.get("identifier"),
        "trade_timestamp": None,
        "order_timestamp": parse_rest_time(order.get("created_at")),
        "timestamp": now_ms,
    }


def asset_event(
    accounts: Iterable[Mapping[str, Any]], *, now_ms: int, currencies: Iterable[str] | None = None
) -> dict[str, Any]:
    """``/v1/accounts`` rows (only ``currencies`` if given) as a myAsset event (§4.6 shape)."""
    wanted = None if currencies is None else set(currencies)
    assets = [
        {
            "currency": row.get("currency"),
            "balance": _decimal(row.get("balance")),
            "locked": _decimal(row.get("locked")),
        }
        for row in accounts
        if wanted is None or row.get("currency") in wanted
    ]
    # a reconciled event has no Upbit uuid: a name-based one, the same for the same balances
    asset_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "myAsset:" + _asset_content(assets)))
    return {
        "type": "myAsset",
        "asset_uuid": asset_uuid,
        "assets": assets,
        "asset_timestamp": now_ms,
        "timestamp": now_ms,
    }


def missing_order_events(
    orders: Iterable[Mapping[str, Any]], seen: Iterable[str], *, now_ms: int
) -> list[tuple[str, dict[str, Any]]]:
    """The ``(identity, myOrder event)`` of every REST order state the stream does not hold.

    ``seen``: identities already in the stream (the recent-identity set). Orders come out in
    creation order (then uuid), each once, even if REST listed it twice (paging overlap)."""
    known = set(seen)
    out: list[tuple[str, dict[str, Any]]] = []
    events: dict[str, tuple[int, str, dict[str, Any]]] = {}
    for order in orders:
        event = order_event(order, now_ms=now_ms)
        ident = order_identity(event)
        if ident is None or ident in known or ident in events:
            continue
        events[ident] = (event["order_timestamp"] or 0, str(event["uuid"]), event)
    for ident, (_, _, event) in sorted(events.items(), key=lambda item: item[1][:2]):
        out.append((ident, event))
    return out


def unfinished_orders(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """uuids whose newest myOrder state in ``events`` (oldest first) is not final (``done`` or
    ``cancel``), in the order first seen: orders the stream still shows open."""
    last: dict[str, str] = {}
    for event in events:
        uuid_text, state = event.get("uuid"), event.get("state")
        if isinstance(uuid_text, str) and isinstance(state, str):
            last[uuid_text] = state
    return [u for u, state in last.items() if state not in ("done", "cancel")]


def changed_currencies(
    accounts: Iterable[Mapping[str, Any]], known: Mapping[str, tuple[Decimal, Decimal]]
) -> list[str]:
    """Currencies whose REST (balance, locked) differ from the stream's last myAsset values,
    including currencies the stream never mentioned."""
    changed: list[str] = []
    for row in accounts:
        currency = str(row.get("currency"))
        now = (
            _decimal(row.get("balance")) or Decimal(0),
            _decimal(row.get("locked")) or Decimal(0),
        )
        if known.get(currency) != now:
            changed.append(currency)
    return changed
