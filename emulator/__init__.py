"""A local stand-in for Upbit's WebSocket API, for tests, benchmarks and offline demos.

Point any Upbit client at it (only the URL changes)::

    async with Emulator(port=0, seed=1) as emu:
        async with websockets.connect(emu.public_url) as ws:
            await ws.send('[{"ticket":"t"},{"type":"ticker","codes":["KRW-BTC"]}]')
            frame = await ws.recv()   # bytes: a SNAPSHOT, then REALTIME frames

From the command line: ``upbit-fanout emulator --port 0`` prints its base URL first.
docs/emulator.md lists every behaviour, and every choice made where Upbit's is unknown.

Modules: :mod:`emulator.protocol` (requests, errors, formats; pure), :mod:`emulator.auth`
(private-endpoint JWT), :mod:`emulator.replay` (recorded frames), :mod:`emulator.server`
(sockets, handshake, request loop, lifecycle), :mod:`emulator.fanout` (which connection is sent
which frame; no sockets), :mod:`emulator.routes` (the plain-HTTP and REST answers),
:mod:`emulator.pacing` (the pacer), :mod:`emulator.markets`, :mod:`emulator.simulation` (with
:mod:`emulator.market_state`, :mod:`emulator.book`, :mod:`emulator.ticks`,
:mod:`emulator.fixedpoint`, :mod:`emulator.payloads`) and :mod:`emulator.account` (the data
behind it).
"""

from upbit_fanout.emulator.account import Account, OrderRejected
from upbit_fanout.emulator.auth import AuthError, make_token, verify_authorization
from upbit_fanout.emulator.markets import Market, default_markets, market_all_payload
from upbit_fanout.emulator.protocol import ConnectionSubscription, Format, RequestError, Stream
from upbit_fanout.emulator.replay import ReplayError, ReplayFrame, load_replay
from upbit_fanout.emulator.server import (
    DEFAULT_RATE,
    Emulator,
    EmulatorConnection,
    EmulatorCrashError,
    Received,
)
from upbit_fanout.emulator.simulation import MarketSimulator

__all__ = [
    "DEFAULT_RATE",
    "Account",
    "AuthError",
    "ConnectionSubscription",
    "Emulator",
    "EmulatorConnection",
    "EmulatorCrashError",
    "Format",
    "Market",
    "MarketSimulator",
    "OrderRejected",
    "Received",
    "ReplayError",
    "ReplayFrame",
    "RequestError",
    "Stream",
    "default_markets",
    "load_replay",
    "make_token",
    "market_all_payload",
    "verify_authorization",
]
