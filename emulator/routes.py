"""The plain-HTTP answers on the emulator's port, other than the admin paths.

``GET /v1/market/all[?is_details=true]`` (the served markets, with a replay file's codes among
them), the exchange REST API (:mod:`emulator.rest`) and the quotation REST API
(:mod:`emulator.quotation`). :meth:`HttpRoutes.answer` turns a request's path and query into a
websockets :class:`~websockets.http11.Response`, counted in the emulator's counters and with
``Remaining-Req`` where Upbit sends it, or None when the path is none of these: the server then
treats it as a WebSocket handshake (``/websocket/v1``, ``/websocket/v1/private``) or answers 404.
The admin paths (:mod:`emulator.admin`) drive the emulator itself and stay with the server. No
socket here, and the clock is passed in.
"""

from __future__ import annotations

import http
import json
from collections import Counter
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qs

from websockets.http11 import Response

from upbit_fanout.emulator.admin import json_response
from upbit_fanout.emulator.markets import Market, market_all_payload
from upbit_fanout.emulator.quotation import QuotationApi, quotation_group
from upbit_fanout.emulator.rest import REST_PATHS, RestAnswer, RestApi

__all__ = ["MARKET_ALL_PATH", "HttpRoutes"]

MARKET_ALL_PATH: Final = "/v1/market/all"


class HttpRoutes:
    """``GET /v1/market/all``, the exchange REST API and the quotation REST API."""

    def __init__(
        self,
        *,
        markets: Sequence[Market],
        known: frozenset[str],
        rest: RestApi,
        quotation: QuotationApi,
        counters: Counter[str],
    ) -> None:
        self._markets = tuple(markets)
        self._known = known
        """Every code served: the listed markets and, in replay mode, the file's codes."""
        self._rest = rest
        self._quotation = quotation
        self._counters = counters
        self._market_all: dict[bool, bytes] = {}

    def answer(
        self,
        path: str,
        query: str,
        *,
        authorization: str | None,
        address: str,
        now: float,
        now_ms: int,
    ) -> Response | None:
        """The response to ``GET path?query`` (``path`` without a trailing slash), or None
        when the path is not one of these routes. ``now`` is monotonic seconds (rate limits),
        ``now_ms`` wall time."""
        if path == MARKET_ALL_PATH:
            details = parse_qs(query).get("is_details", ["false"])[-1].lower() == "true"
            return json_response(http.HTTPStatus.OK, self.market_all(details=details))
        if path in REST_PATHS:
            answer = self._rest.handle(path, query, authorization, now=now, now_ms=now_ms)
            return self._response("rest", answer)
        if quotation_group(path) is not None:
            answer = self._quotation.handle(path, query, address=address, now=now, now_ms=now_ms)
            return self._response("quotation", answer)
        return None

    def market_all(self, *, details: bool) -> bytes:
        """The ``/v1/market/all`` body, built once per ``details``."""
        body = self._market_all.get(details)
        if body is None:
            # In replay mode the file's codes are markets too: a client that checks codes
            # against this list (the collector does) must accept what the file serves.
            listed = {market.code for market in self._markets}
            extra = [Market(code, code, code, False) for code in sorted(self._known - listed)]
            payload = market_all_payload([*self._markets, *extra], is_details=details)
            body = self._market_all[details] = json.dumps(
                payload, ensure_ascii=False, separators=(",", ":")
            ).encode()
        return body

    def _response(self, api: str, answer: RestAnswer) -> Response:
        """An API's answer as HTTP, counted (``{api}_requests``, ``{api}_refused:{status}``),
        with ``Remaining-Req`` when the answer has one."""
        self._counters[f"{api}_requests"] += 1
        if answer.status != http.HTTPStatus.OK:
            self._counters[f"{api}_refused:{answer.status.value}"] += 1
        response = json_response(answer.status, answer.body)
        if answer.remaining_req is not None:
            response.headers["Remaining-Req"] = answer.remaining_req
        return response
