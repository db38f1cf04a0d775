"""The emulator's REST exchange API, served from the simulated account (docs/emulator.md, "REST").

``GET /v1/accounts``, ``GET /v1/order?uuid=``, ``GET /v1/orders/open`` and
``GET /v1/orders/closed``, with Upbit's query parameters and its answers' shapes (numbers as
strings, ``side``/``ord_type``/``market`` names, ``created_at`` in ISO 8601 with the KST offset).

Authentication is the private WebSocket's (:func:`emulator.auth.verify_authorization`) plus the
REST rule: a request with a query string must carry ``query_hash`` (hex SHA-512 of the query
string exactly as sent) and ``query_hash_alg`` ``SHA512``. A refusal is HTTP 401 with Upbit's error
body ``{"error":{"name":...,"message":...}}`` and one of Upbit's names: ``jwt_verification``
(missing, malformed or badly signed token), ``invalid_access_key``, ``nonce_used``,
``invalid_query_payload``. Bad parameters get 400 ``validation_error``, an unknown order 404
``order_not_found``.

Rate limit: the exchange ``default`` group, 30 requests in any second per access key (a sliding
window, like the WebSocket limits); every answer carries ``Remaining-Req: group=default;
min=1800; sec=N`` and a request over the limit gets 429 ``too_many_requests``.

:class:`RestApi` is pure: the caller passes the clock (``now`` monotonic seconds for the limit,
``now_ms`` wall time) and turns the answer into HTTP.
"""

from __future__ import annotations

import datetime as dt
import http
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final
from urllib.parse import parse_qs

from upbit_fanout.emulator.account import Account
from upbit_fanout.emulator.auth import AuthError, NonceMemory, verify_authorization
from upbit_fanout.emulator.protocol import SlidingWindow, error_frame
from upbit_fanout.subscriptions.jsontext import dumps_exact

__all__ = ["REST_PATHS", "RestAnswer", "RestApi", "iso_kst", "parse_time"]

REST_PATHS: Final = frozenset({"/v1/accounts", "/v1/order", "/v1/orders/open", "/v1/orders/closed"})
DEFAULT_PER_SECOND: Final = 30
"""Upbit's exchange ``default`` group: 30 requests per second (docs/upbit-protocol.md §13)."""

_KST: Final = dt.timezone(dt.timedelta(hours=9))
_WEEK_MS: Final = 7 * 24 * 3600 * 1000
_CLOSED_STATES: Final = frozenset({"done", "cancel"})
_OPEN_STATES: Final = frozenset({"wait", "watch"})
_DIGITS: Final = re.compile(r"\d{10,}")


@dataclass(frozen=True, slots=True)
class RestAnswer:
    """One HTTP answer: status, JSON body, the ``Remaining-Req`` header value (None: none)."""

    status: http.HTTPStatus
    body: bytes
    remaining_req: str | None


class _Refused(Exception):
    """A request the emulator refuses as Upbit would: HTTP status, Upbit's error name (or, on the
    quotation API, a numeric one) and message. Shared with :mod:`emulator.quotation`."""

    def __init__(self, status: http.HTTPStatus, name: str | int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message


def iso_kst(ms: int) -> str:
    """Epoch ms as Upbit's REST writes a time: ``2026-12-01T21:06:50+09:00`` (seconds)."""
    return dt.datetime.fromtimestamp(ms // 1000, _KST).isoformat()


def parse_time(text: str) -> int:
    """``start_time``/``end_time``: ISO 8601 (an offset, or Z; none means KST) or epoch ms."""
    text = text.strip()
    if _DIGITS.fullmatch(text):
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_KST)
    return int(moment.timestamp() * 1000)


def _number(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _order_json(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "updated_at":
            continue
        if key == "created_at":
            out[key] = iso_kst(int(value))
        elif isinstance(value, Decimal):
            out[key] = _number(value)
        else:
            out[key] = value
    return out


class RestApi:
    """Answers the four exchange endpoints for one account and one pair of keys."""

    def __init__(
        self,
        account: Account,
        *,
        access_key: str | None,
        secret_key: str | None,
        nonces: NonceMemory,
        per_second: int = DEFAULT_PER_SECOND,
    ) -> None:
        self._account = account
        self._access_key = access_key
        self._secret_key = secret_key
        self._nonces = nonces
        self._window = SlidingWindow([(per_second, 1.0)])
        self.requests = 0
        self.refused: dict[str, int] = {}

    def handle(
        self, path: str, query: str, authorization: str | None, *, now: float, now_ms: int
    ) -> RestAnswer:
        """Answer ``GET path?query``; never raises."""
        self.requests += 1
        remaining: str | None = None
        try:
            try:
                verify_authorization(
                    authorization,
                    access_key=self._access_key,
                    secret_key=self._secret_key,
                    nonces=self._nonces,
                    query=query,
                )
            except AuthError as exc:
                raise _Refused(http.HTTPStatus.UNAUTHORIZED, exc.name, exc.reason) from None
            allowed = self._window.try_acquire(now)
            remaining = f"group=default; min=1800; sec={self._window.remaining(now, 1.0)}"
            if not allowed:
                raise _Refused(
                    http.HTTPStatus.TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too many requests in the default group (30 per second)",
                )
            params = parse_qs(query, keep_blank_values=True)
            body = self._answer(path, params, now_ms)
        except _Refused as refused:
            key = str(refused.name)
            self.refused[key] = self.refused.get(key, 0) + 1
            return RestAnswer(refused.status, error_frame(key, refused.message), remaining)
        return RestAnswer(http.HTTPStatus.OK, dumps_exact(body), remaining)

    # -- endpoints ----------------------------------------------------------------------------

    def _answer(self, path: str, params: Mapping[str, list[str]], now_ms: int) -> Any:
        if path == "/v1/accounts":
            return self._accounts()
        if path == "/v1/order":
            return self._order(params)
        if path == "/v1/orders/open":
            return self._orders(params, now_ms, closed=False)
        if path == "/v1/orders/closed":
            return self._orders(params, now_ms, closed=True)
        raise _Refused(http.HTTPStatus.NOT_FOUND, "not_found", f"no endpoint {path}")

    def _accounts(self) -> list[dict[str, Any]]:
        return [
            {
                "currency": currency,
                "balance": _number(balance),
                "locked": _number(locked),
                "avg_buy_price": "0",
                "avg_buy_price_modified": False,
                "unit_currency": "KRW",
            }
            for currency, (balance, locked) in self._account.balances().items()
        ]

    def _order(self, params: Mapping[str, list[str]]) -> dict[str, Any]:
        uuid = _one(params, "uuid")
        identifier = _one(params, "identifier")
        if not uuid and not identifier:
            raise _bad("uuid or identifier is required")
        for candidate in self._account.order_uuids():
            record = self._account.order_record(candidate)
            if (uuid and candidate == uuid) or (identifier and record["identifier"] == identifier):
                return _order_json(record)
        raise _Refused(http.HTTPStatus.NOT_FOUND, "order_not_found", "주문을 찾지 못했습니다.")

    def _orders(
        self, params: Mapping[str, list[str]], now_ms: int, *, closed: bool
    ) -> list[dict[str, Any]]:
        allowed = _CLOSED_STATES if closed else _OPEN_STATES
        states = set(params.get("states[]", [])) | set(params.get("state", []))
        states = states or set(allowed)
        if not states <= allowed:
            raise _bad(f"states must be among {', '.join(sorted(allowed))}")
        market = _one(params, "market")
        order_by = _one(params, "order_by") or "desc"
        if order_by not in ("asc", "desc"):
            raise _bad("order_by must be asc or desc")
        limit = _int(_one(params, "limit"), default=100, low=1, high=1000 if closed else 100)
        page = 1 if closed else _int(_one(params, "page"), default=1, low=1, high=10**6)
        start = end = None
        if closed:
            try:
                start_text, end_text = _one(params, "start_time"), _one(params, "end_time")
                start = parse_time(start_text) if start_text else None
                end = parse_time(end_text) if end_text else None
            except ValueError as exc:
                raise _bad(str(exc)) from None
            # Upbit: at most a 7-day window; a missing end is start + 7 days (or now), a missing
            # start is end - 7 days. Orders are selected by their creation time.
            if start is None and end is None:
                end = now_ms
            if start is None:
                assert end is not None
                start = end - _WEEK_MS
            if end is None:
                end = start + _WEEK_MS
            if end < start or end - start > _WEEK_MS:
                raise _bad("start_time..end_time must be a window of at most 7 days")
        account = self._account
        found: list[dict[str, Any]] = []
        for uuid in account.order_uuids():
            record = account.order_record(uuid)
            if record["state"] not in states or (market and record["market"] != market):
                continue
            if start is not None and end is not None and not start <= record["created_at"] <= end:
                continue
            found.append(record)
        found.sort(key=lambda r: (r["created_at"], r["uuid"]), reverse=order_by == "desc")
        offset = (page - 1) * limit
        return [_order_json(r) for r in found[offset : offset + limit]]


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _int(text: str | None, *, default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _bad(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise _bad(f"{value} is out of range {low}..{high}")
    return value


def _bad(message: str) -> _Refused:
    return _Refused(http.HTTPStatus.BAD_REQUEST, "validation_error", message)
