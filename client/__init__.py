"""The consumer library of upbit-fanout: declare topics, receive typed events.

::

    from upbit_fanout.client import FanoutClient

    async with FanoutClient("redis://localhost:6379/0") as client:
        await client.subscribe("ticker:KRW-BTC", "orderbook:KRW-BTC.5")
        await client.subscribe("trade", codes=["KRW-BTC", "KRW-ETH"])
        async for item in client:
            if item.kind == "event":
                print(item.topic, item.data["trade_price"], item.typed)

Blocking scripts use :class:`BlockingClient` (same abilities, no asyncio). Leases, heartbeats,
Redis reconnects and the collector's contract are handled inside; docs/client.md is the guide.

Public names are exactly those in ``__all__`` (pinned by tests/client/test_public_api.py);
modules starting with ``_`` are private and may change.
"""

from upbit_fanout.client._blocking import BlockingClient, BlockingStream
from upbit_fanout.client._client import FanoutClient
from upbit_fanout.client._errors import ClientError, RedisUnavailableError, SnapshotTimeoutError
from upbit_fanout.client._items import Event, Gap, Item, Notice
from upbit_fanout.client._streams import PrivateStream, StreamEvent, StreamGroup
from upbit_fanout.client.events import (
    AssetBalance,
    Candle,
    EventParseError,
    MarketEvent,
    MyAsset,
    MyOrder,
    Orderbook,
    OrderbookUnit,
    PriceLevel,
    Ticker,
    Trade,
    parse_event,
)
from upbit_fanout.subscriptions.errors import CodecError, InvalidTopicError, UpbitFanoutError
from upbit_fanout.subscriptions.topics import Topic

__all__ = [
    "AssetBalance",
    "BlockingClient",
    "BlockingStream",
    "Candle",
    "ClientError",
    "CodecError",
    "Event",
    "EventParseError",
    "FanoutClient",
    "Gap",
    "InvalidTopicError",
    "Item",
    "MarketEvent",
    "MyAsset",
    "MyOrder",
    "Notice",
    "Orderbook",
    "OrderbookUnit",
    "PriceLevel",
    "PrivateStream",
    "RedisUnavailableError",
    "SnapshotTimeoutError",
    "StreamEvent",
    "StreamGroup",
    "Ticker",
    "Topic",
    "Trade",
    "UpbitFanoutError",
    "parse_event",
]

# The classes defined in the private modules report the module a user imports them from (as
# httpx does), so reprs, tracebacks and ``help()`` name ``upbit_fanout.client.FanoutClient``.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("upbit_fanout.client._"):
        _value.__module__ = __name__
del _name, _value
