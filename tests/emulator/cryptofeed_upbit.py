"""cryptofeed's Upbit feed, its code unmodified, pointed at a URL through its own endpoint lists.

Run as a script by tests/emulator/test_tls_third_party.py (never imported by pytest):
``python cryptofeed_upbit.py WSS_BASE HTTPS_BASE COUNT``. It prints one ``TRADE`` line per trade
and exits 0 after COUNT trades. cryptofeed refuses any WebSocket address but ``wss://``; its REST
symbol list goes through requests (trust: ``REQUESTS_CA_BUNDLE``), its WebSocket through
websockets (trust: ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import TRADES
from cryptofeed.exchanges import Upbit


def main() -> None:
    wss_base, https_base, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Upbit.websocket_endpoints = [WebsocketEndpoint(wss_base + "/websocket/v1")]
    Upbit.rest_endpoints = [RestEndpoint(https_base, routes=Routes("/v1/market/all"))]
    seen: list[Any] = []
    handler = FeedHandler()

    async def trade(item: Any, receipt: float) -> None:
        seen.append(item)
        print("TRADE", item.symbol, item.price, item.amount, flush=True)
        if len(seen) >= count:
            raise SystemExit(0)

    handler.add_feed(Upbit(symbols=["BTC-KRW"], channels=[TRADES], callbacks={TRADES: trade}))
    asyncio.set_event_loop(asyncio.new_event_loop())
    handler.run()


if __name__ == "__main__":
    main()
