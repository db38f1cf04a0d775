"""The emulator package's public API is deliberate: this pins it."""

from __future__ import annotations

from upbit_fanout import emulator


def test_public_names() -> None:
    assert set(emulator.__all__) == {
        "DEFAULT_RATE",
        "Account",
        "AuthError",
        "Emulator",
        "EmulatorConnection",
        "Format",
        "Market",
        "MarketSimulator",
        "OrderRejected",
        "Received",
        "ReplayError",
        "ReplayFrame",
        "RequestError",
        "Stream",
        "Subscription",
        "default_markets",
        "load_replay",
        "make_token",
        "market_all_payload",
        "verify_authorization",
    }
    for name in emulator.__all__:
        assert getattr(emulator, name) is not None


def test_urls_before_start() -> None:
    emu = emulator.Emulator(port=8765)
    assert emu.base_url == "ws://127.0.0.1:8765"
    assert emu.public_url == "ws://127.0.0.1:8765/websocket/v1"
    assert emu.private_url == "ws://127.0.0.1:8765/websocket/v1/private"
    assert emu.http_url == "http://127.0.0.1:8765"
