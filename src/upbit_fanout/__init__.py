"""upbit-fanout: one Upbit connection shared by many processes through Redis.

Everything is installed under this one namespace:

- ``upbit_fanout.subscriptions``: the Redis contract (topics, key names, codecs, leases);
- ``upbit_fanout.collector``: the Upbit side (the ``collector`` service);
- ``upbit_fanout.client``: the consumer library;
- ``upbit_fanout.emulator``: a local stand-in for Upbit;
- ``upbit_fanout.cli`` and ``upbit_fanout.commands``: the ``upbit-fanout`` command.

The everyday names of the client library are exported from here too::

    from upbit_fanout import FanoutClient

They are imported on first use, so ``upbit-fanout --version`` does not pay for the client's
imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from upbit_fanout.subscriptions.version import package_version

__version__ = package_version()

if TYPE_CHECKING:
    from upbit_fanout.client import (
        AssetBalance,
        BlockingClient,
        BlockingStream,
        Candle,
        ClientError,
        CodecError,
        Event,
        EventParseError,
        FanoutClient,
        Gap,
        InvalidTopicError,
        Item,
        MarketEvent,
        MyAsset,
        MyOrder,
        Notice,
        Orderbook,
        OrderbookUnit,
        PriceLevel,
        PrivateStream,
        RedisUnavailableError,
        SnapshotTimeoutError,
        StreamEvent,
        StreamGroup,
        Ticker,
        Topic,
        Trade,
        UpbitFanoutError,
        parse_event,
    )

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
    "__version__",
    "parse_event",
]

_FROM_CLIENT = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        value = getattr(import_module("upbit_fanout.client"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'upbit_fanout' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_CLIENT})
