"""The emulator's plain-HTTP answers: ``/_emulator/<action>`` and JSON responses.

The admin paths let another process (a test runner, a shell) drive a running emulator. Those that
change its state take ``POST`` only (arguments in the query string, no body): ``drop``,
``stall?seconds=``, ``resume``, ``malformed[?data=]``, ``refuse?seconds=``,
``order?code=&side=&ord_type=&price=&volume=[&identifier=&time_in_force=]``, ``cancel?uuid=``,
``inject?frame=<JSON>``, ``drop_code[?code=]``. The read-only ``received[?since=N]``,
``state`` and ``trades?code=`` (the emulator's own record of a market's trades) take ``GET``.
Each maps to the :class:`~emulator.server.Emulator` method of the same purpose
(docs/emulator.md, "Fault injection"). Answers are JSON; bad arguments get 400, unknown actions
404, the wrong method 405 (with ``Allow``).
"""

from __future__ import annotations

import http
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from websockets.datastructures import Headers
from websockets.http11 import Response

from upbit_fanout.emulator.account import OrderRejected
from upbit_fanout.emulator.protocol import error_frame
from upbit_fanout.subscriptions.jsontext import dumps_exact

if TYPE_CHECKING:
    from upbit_fanout.emulator.server import Emulator

__all__ = ["READ_ONLY", "STATE_CHANGING", "admin_response", "json_response"]

JSON: Final = "application/json; charset=utf-8"

READ_ONLY: Final = frozenset({"state", "received", "trades"})
"""Admin actions that only read: ``GET``."""
STATE_CHANGING: Final = frozenset(
    {"drop", "stall", "resume", "malformed", "refuse", "order", "cancel", "inject", "drop_code"}
)
"""Admin actions that change the emulator's state: ``POST`` only, so a crawler, a browser
prefetch or a stray ``curl`` cannot drop connections by reading a URL."""


def json_response(status: http.HTTPStatus, body: bytes) -> Response:
    """An HTTP response with a JSON body (``Connection: close``)."""
    headers = Headers(
        [
            ("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", JSON),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _method_not_allowed(allowed: str) -> Response:
    response = json_response(
        http.HTTPStatus.METHOD_NOT_ALLOWED,
        error_frame("METHOD_NOT_ALLOWED", f"use {allowed} for this path"),
    )
    response.headers["Allow"] = allowed
    return response


async def admin_response(
    emu: Emulator, action: str, query: Mapping[str, list[str]], method: str = "GET"
) -> Response:
    """Run one admin action (the path after ``/_emulator/``) and answer it."""
    if action in READ_ONLY and method != "GET":
        return _method_not_allowed("GET")
    if action in STATE_CHANGING and method != "POST":
        return _method_not_allowed("POST")

    def arg(name: str, default: str | None = None) -> str | None:
        values = query.get(name)
        return values[-1] if values else default

    def seconds(default: float | None) -> float | None:
        value = arg("seconds")
        return default if value is None else float(value)

    result: Any
    try:
        if action == "state":
            result = emu.state()
        elif action == "drop":
            result = {"dropped": await emu.drop_all()}
        elif action == "stall":
            emu.stall(seconds(None))
            result = {"stalled": True}
        elif action == "resume":
            emu.resume()
            result = {"stalled": False}
        elif action == "malformed":
            data = arg("data")
            result = {
                "sent": await (emu.send_malformed(data.encode()) if data else emu.send_malformed())
            }
        elif action == "refuse":
            emu.refuse_connections(seconds(5.0) or 0.0)
            result = {"refusing": emu.state()["refusing"]}
        elif action == "order":
            uuid = emu.place_order(
                code=arg("code") or "",
                side=arg("side") or "",
                ord_type=arg("ord_type") or "limit",
                price=arg("price"),
                volume=arg("volume"),
                identifier=arg("identifier"),
                time_in_force=arg("time_in_force"),
            )
            result = {"uuid": uuid, "order": emu.account.order(uuid)}
        elif action == "cancel":
            uuid = arg("uuid") or ""
            emu.cancel_order(uuid)
            result = {"uuid": uuid, "order": emu.account.order(uuid)}
        elif action == "inject":
            frame = arg("frame")
            if frame is None:
                raise ValueError("inject needs ?frame=<JSON payload>")
            result = {"delivered": await emu.inject(frame)}
        elif action == "drop_code":
            code = arg("code")
            emu.drop_code(code or None)
            result = {"armed": True, "code": code}
        elif action == "trades":
            code = arg("code")
            if not code:
                raise ValueError("trades needs ?code=<market>")
            result = emu.trade_record(code)
        elif action == "received":
            since = int(arg("since") or 0)
            result = [
                {
                    "connection_id": record.connection_id,
                    "wall": record.wall,
                    "raw": record.raw
                    if isinstance(record.raw, str)
                    else record.raw.decode("utf-8", "replace"),
                    "error": record.error,
                }
                for record in list(emu.received)[since:]
            ]
        else:
            return json_response(http.HTTPStatus.NOT_FOUND, error_frame("NOT_FOUND", action))
    except OrderRejected as exc:
        return json_response(http.HTTPStatus.BAD_REQUEST, error_frame("ORDER_REJECTED", str(exc)))
    except (ValueError, KeyError, ArithmeticError) as exc:
        return json_response(http.HTTPStatus.BAD_REQUEST, error_frame("BAD_REQUEST", str(exc)))
    return json_response(http.HTTPStatus.OK, dumps_exact(result))
