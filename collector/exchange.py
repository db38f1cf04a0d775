"""Upbit's REST exchange API, as the reconciliation needs it: four GETs, JWT with ``query_hash``.

:class:`ExchangeClient` signs every request with a fresh token (collector/auth.py; the query
string it hashes is the one it sends, built by :func:`collector.private_sync.rest_query`) and
respects Upbit's per-second limit: after an answer whose ``Remaining-Req`` says ``sec=0`` it
waits for the next second, and a 429 is retried after a pause (at most ``retries`` times). A 418
(blocked) or any other refusal raises :class:`ExchangeError` with Upbit's error name; the message
never holds a key or a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import orjson

from upbit_fanout.collector.auth import Credentials, authorization_header
from upbit_fanout.collector.private_sync import parse_remaining_req, rest_query
from upbit_fanout.subscriptions.errors import UpbitErrorFrame

__all__ = ["ExchangeClient", "ExchangeError", "error_of"]


class ExchangeError(UpbitErrorFrame):
    """A REST request failed: ``status`` (0: no answer), Upbit's error ``name`` and ``message``
    (Upbit's own error body, or ours when there was none: ``unreachable``, ``bad_answer``)."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(name, message)
        if status:
            self.args = (f"{name} (HTTP {status}): {message}",)
        self.status = status


class ExchangeClient:
    """GETs on ``base_url`` (``https://api.upbit.com``; the emulator's ``http://127.0.0.1:PORT``).

    Counters: ``requests``, ``rate_waits`` (pauses for Remaining-Req / 429).
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._retries = retries
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._exhausted = False  # the last answer said sec=0
        self.requests = 0
        self.rate_waits = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """``GET path?params`` -> the decoded JSON answer (numbers as text: ``str`` values)."""
        query = rest_query(params)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        for attempt in range(self._retries + 1):
            if self._exhausted:
                self.rate_waits += 1
                await self._sleep(1.0)
                self._exhausted = False
            headers = authorization_header(self._credentials, query=query or None)
            headers["Accept"] = "application/json"
            self.requests += 1
            try:
                response = await self._client.get(url, headers=headers)
            except httpx.HTTPError as exc:
                raise ExchangeError(0, "unreachable", type(exc).__name__) from None
            _, left = parse_remaining_req(response.headers.get("Remaining-Req"))
            self._exhausted = left == 0
            if response.status_code == 429 and attempt < self._retries:
                self.rate_waits += 1
                await self._sleep(1.0 + attempt)
                continue
            if response.status_code != 200:
                raise error_of(response)
            try:
                return orjson.loads(response.content) if response.content else None
            except orjson.JSONDecodeError:
                raise ExchangeError(response.status_code, "bad_answer", "not JSON") from None
        raise ExchangeError(429, "too_many_requests", "still limited after retries")


def error_of(response: httpx.Response) -> ExchangeError:
    """The error of a refused REST answer: Upbit's ``{"error": {"name", "message"}}`` (a name
    may be a number, as the quotation API's 404), else the HTTP reason."""
    name, message = "http_error", response.reason_phrase
    try:
        body = orjson.loads(response.content)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            name = str(error.get("name") or name)
            message = str(error.get("message") or message)[:200]
    except orjson.JSONDecodeError:
        pass
    return ExchangeError(response.status_code, name, message)
