"""Upbit's market list: which codes exist, and the closest real one to a typo.

The collector refuses a topic whose market Upbit does not list (``ticker:KRW-BTX`` would be
"served" and never flow; 100,000 invented codes would make a subscribe frame no server accepts).
The list comes from Upbit's REST API, ``GET /v1/market/all`` on the upstream's own host (the
emulator serves it too), at start and every ``refresh_interval`` seconds.

Pure part (table-tested): :func:`market_list_url`, :func:`parse_market_list`, :class:`MarketSet`
(membership, :meth:`MarketSet.closest`, :meth:`MarketSet.refusal`). I/O part: :class:`MarketList`,
one short task that fetches and refreshes. Without a list (REST down at start) nothing is
refused for its market: the collector serves what the clients ask, says so in ``P:status``
(field ``markets``) and retries; a failed refresh keeps the list it has.

HTTP client: httpx (a project dependency, also used for Upbit's private REST API): an async
client with real timeouts, redirects off and TLS verification on; the stdlib has no async HTTP
client, and a thread around urllib would be one more task to own.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from upbit_fanout.collector._log import log
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.topics import ALL_MARKETS, Topic

__all__ = [
    "MARKET_LIST_PATH",
    "MarketList",
    "MarketSet",
    "market_list_url",
    "parse_market_list",
]


MARKET_LIST_PATH = "/v1/market/all"
_SCHEMES = {"wss": "https", "ws": "http", "https": "https", "http": "http"}
_MAX_BODY = 8 * 1024 * 1024  # Upbit's list is about 80 kB; anything far bigger is not it


# -- pure part ------------------------------------------------------------------------------------
def market_list_url(ws_url: str) -> str:
    """The REST URL of the market list on the host of a WebSocket URL.

    ``wss://api.upbit.com/websocket/v1`` -> ``https://api.upbit.com/v1/market/all``;
    ``ws://127.0.0.1:8765/websocket/v1`` -> ``http://127.0.0.1:8765/v1/market/all``.
    """
    parts = urlsplit(ws_url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"cannot derive a market-list URL from {ws_url!r}")
    return urlunsplit((scheme, parts.netloc, MARKET_LIST_PATH, "", ""))


def parse_market_list(body: bytes) -> tuple[str, ...]:
    """The codes in a ``/v1/market/all`` answer (a JSON array of objects with ``market``), in
    Upbit's order (it lists the best-known markets first; suggestions prefer them).

    Raises ValueError for anything else (an error object, an empty list, a wrong shape).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the market list is not JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise ValueError("the market list is not a non-empty JSON array")
    codes: dict[str, None] = {}
    for item in data:
        code = item.get("market") if isinstance(item, dict) else None
        if not isinstance(code, str) or not code:
            raise ValueError("a market-list entry has no 'market' string")
        codes[code] = None
    return tuple(codes)


@dataclass(frozen=True, slots=True)
class MarketSet:
    """The codes Upbit lists, e.g. ``KRW-BTC``; answers "is it real?" and "what was meant?"."""

    codes: tuple[str, ...]
    """In Upbit's order (ties between equally close suggestions go to the earlier one)."""
    _set: frozenset[str] = field(init=False, repr=False, compare=False, hash=False)
    _by_quote: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_set", frozenset(self.codes))
        by_quote: dict[str, list[str]] = {}
        for code in self.codes:
            by_quote.setdefault(code.partition("-")[0], []).append(code)
        object.__setattr__(self, "_by_quote", {q: tuple(c) for q, c in by_quote.items()})

    @classmethod
    def of(cls, codes: Iterable[str]) -> MarketSet:
        return cls(tuple(dict.fromkeys(codes)))

    def __contains__(self, code: object) -> bool:
        return code in self._set

    def __len__(self) -> int:
        return len(self.codes)

    def closest(self, code: str) -> str | None:
        """The listed code most like ``code`` (difflib), or None when nothing is close.

        Markets of the same quote are tried first (``KRW-BTX`` -> ``KRW-BTC``, not ``BTC-BTT``),
        then every market (``KWR-ETH`` -> ``KRW-ETH``). Costs a few ms: call it for the few
        refusals that are shown, not for every member of a hostile key.
        """
        return _closest(self, code)

    def lists(self, topic: Topic) -> bool:
        """True when ``topic``'s market is listed, or it has none (``myAsset``, ``myOrder:*``)."""
        code = topic.code
        return code is None or code == ALL_MARKETS or code in self._set

    def refusal(self, topic: Topic, *, suggest: bool = True) -> str | None:
        """Why ``topic`` is refused for its market (None: its market is listed, or it has none).

        ``suggest=False`` skips the (costly) closest-match search.
        """
        code = topic.code
        if code is None or self.lists(topic):
            return None
        suggestion = self.closest(code) if suggest else None
        if suggestion is not None:
            return f"unknown market {code}; did you mean {suggestion}?"
        return f"unknown market {code} (Upbit lists {len(self.codes)} markets; see /v1/market/all)"


@lru_cache(maxsize=4096)
def _closest(markets: MarketSet, code: str) -> str | None:
    quote, _, base = code.partition("-")
    same_quote = markets._by_quote.get(quote, ())
    if same_quote:
        found = _best(base, [candidate.partition("-")[2] for candidate in same_quote], 0.6)
        if found is not None:
            return f"{quote}-{found}"
    return _best(code, markets.codes, 0.75)


def _best(word: str, candidates: Sequence[str], cutoff: float) -> str | None:
    """difflib's ratio, ties broken by the longer common prefix, then by the earlier candidate
    (``BTX``: ``BTC`` rather than ``TXT``, both 0.67)."""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)
    best: str | None = None
    best_key: tuple[float, int, int] | None = None
    for index, candidate in enumerate(candidates):
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() < cutoff or matcher.quick_ratio() < cutoff:
            continue
        ratio = matcher.ratio()
        if ratio < cutoff:
            continue
        key = (ratio, _common_prefix(word, candidate), -index)
        if best_key is None or key > best_key:
            best, best_key = candidate, key
    return best


# -- I/O part -------------------------------------------------------------------------------------
class MarketList:
    """Keeps :attr:`current` (a :class:`MarketSet`, or None until a first fetch worked) fresh.

    ``on_change()`` is called (synchronously) whenever :attr:`current` or :attr:`note` changed;
    :attr:`note` says in words what the collector knows, for ``P:status`` field ``markets``.
    """

    def __init__(
        self,
        url: str,
        *,
        on_change: Callable[[], None],
        refresh_interval: float = 600.0,
        timeout: float = 10.0,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        if refresh_interval <= 0:
            raise ValueError("refresh_interval must be > 0")
        self.url = url
        self.refresh_interval = refresh_interval
        self._timeout = timeout
        self._retry = (retry_initial, min(retry_max, refresh_interval))
        self._on_change = on_change
        self.current: MarketSet | None = None
        self.note = "not loaded yet: market codes are not checked"
        self.fetches = 0
        self.failures = 0

    async def fetch(self) -> MarketSet:
        """One ``GET``; raises httpx.HTTPError or ValueError."""
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            response = await client.get(self.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > _MAX_BODY:
            raise ValueError(f"the market list is {len(response.content)} bytes, too big")
        return MarketSet(parse_market_list(response.content))

    async def run(self) -> None:
        """Fetch now, then every ``refresh_interval`` s; failures are retried with backoff."""
        delays = backoff(*self._retry)
        failing = False
        while True:
            self.fetches += 1
            try:
                markets = await self.fetch()
            except (httpx.HTTPError, ValueError) as exc:
                self.failures += 1
                reason = _describe(exc)
                if not failing:
                    failing = True
                    log.warning(
                        "cannot load Upbit's market list from %s (%s); %s, retrying",
                        self.url,
                        reason,
                        "keeping the last list"
                        if self.current is not None
                        else "market codes are not checked until it loads",
                    )
                self._set_note(
                    f"{len(self.current)} markets, refresh failing ({reason})"
                    if self.current is not None
                    else f"not loaded ({reason}): market codes are not checked, retrying"
                )
                await asyncio.sleep(next(delays))
                continue
            if failing or self.current is None:
                log.info("loaded Upbit's market list: %d markets (%s)", len(markets), self.url)
            failing = False
            delays = backoff(*self._retry)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            changed = markets != self.current
            self.current = markets
            self.note = f"{len(markets)} markets, loaded {stamp} UTC"
            if changed:
                log.debug("market list changed: %d markets", len(markets))
            self._on_change()
            await asyncio.sleep(self.refresh_interval)

    def _set_note(self, note: str) -> None:
        if note != self.note:
            self.note = note
            self._on_change()


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
