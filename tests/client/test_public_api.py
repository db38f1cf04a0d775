"""The public API of ``upbit_fanout.client`` is deliberate: exactly these names, each documented.

Like httpx's test of its exports: adding or removing a public name must be a conscious change
(update ``EXPECTED``, docs/client.md and the CHANGELOG together).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import upbit_fanout
from upbit_fanout import FanoutClient, client  # the README spelling is the first
from upbit_fanout.subscriptions.errors import UpbitFanoutError

EXPECTED = {
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
}

DOCS = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_exports_are_exactly_the_public_api() -> None:
    assert set(client.__all__) == EXPECTED
    assert len(client.__all__) == len(EXPECTED), "duplicates in __all__"
    for name in client.__all__:
        assert getattr(client, name) is not None


def test_the_everyday_names_are_exported_from_the_top_namespace() -> None:
    assert set(upbit_fanout.__all__) == EXPECTED | {"__version__"}
    for name in EXPECTED:
        assert getattr(upbit_fanout, name) is getattr(client, name), name
    assert FanoutClient is client.FanoutClient


def test_no_other_public_names_leak_from_the_package() -> None:
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == EXPECTED


def test_every_export_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [name for name in sorted(EXPECTED) if f"`{name}" not in text]
    assert not missing, f"not documented in docs/client.md: {missing}"


def test_every_error_derives_from_the_project_root() -> None:
    errors = [
        getattr(client, name)
        for name in client.__all__
        if inspect.isclass(getattr(client, name))
        and issubclass(getattr(client, name), BaseException)
    ]
    assert {error.__name__ for error in errors} == {
        "ClientError",
        "CodecError",
        "EventParseError",
        "InvalidTopicError",
        "RedisUnavailableError",
        "SnapshotTimeoutError",
        "UpbitFanoutError",
    }
    for error in errors:
        assert issubclass(error, UpbitFanoutError), error
    assert issubclass(client.SnapshotTimeoutError, TimeoutError)
    assert issubclass(client.RedisUnavailableError, client.ClientError)


def test_public_classes_and_functions_have_docstrings() -> None:
    for name in client.__all__:
        value = getattr(client, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
    for method in ("subscribe", "unsubscribe", "snapshot", "snapshots", "events", "on"):
        assert inspect.getdoc(getattr(client.FanoutClient, method)), method
        assert inspect.getdoc(getattr(client.BlockingClient, method)), method


def test_public_classes_report_the_module_users_import_them_from() -> None:
    for name in client.__all__:
        value = getattr(client, name)
        if inspect.isclass(value):
            assert not value.__module__.startswith("upbit_fanout.client._"), name
    assert client.FanoutClient.__module__ == "upbit_fanout.client"
    assert repr(client.Gap).startswith("<class 'upbit_fanout.client.Gap'")
