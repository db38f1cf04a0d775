"""permessage-deflate for the picows transport (collector/deflate.py): the server's answer read
from a table, and messages inflated as a real deflate sender (zlib, as websockets and Upbit's
servers use it) wrote them, with and without context takeover."""

from __future__ import annotations

import zlib

import pytest

from upbit_fanout.collector.deflate import OFFER, DeflateParams, InflateError, Inflater, accepted
from upbit_fanout.collector.transport import HandshakeError


def test_the_offer_lets_the_server_choose_our_window() -> None:
    assert OFFER == "permessage-deflate; client_max_window_bits"


@pytest.mark.parametrize(
    ("header", "params"),
    [
        (None, None),
        ("", None),
        ("permessage-deflate", DeflateParams()),
        ("PerMessage-Deflate", DeflateParams()),
        (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            DeflateParams(server_max_window_bits=12, client_max_window_bits=12),
        ),
        (
            'permessage-deflate; server_no_context_takeover; server_max_window_bits="10"',
            DeflateParams(server_no_context_takeover=True, server_max_window_bits=10),
        ),
        (
            "permessage-deflate;client_no_context_takeover",
            DeflateParams(client_no_context_takeover=True),
        ),
    ],
)
def test_the_servers_answer(header: str | None, params: DeflateParams | None) -> None:
    assert accepted(header) == params


@pytest.mark.parametrize(
    ("header", "complaint"),
    [
        ("x-webkit-deflate-frame", "not offered"),
        ("permessage-deflate, permessage-deflate", "twice"),
        ("permessage-deflate; server_max_window_bits=16", "8..15"),
        ("permessage-deflate; server_max_window_bits=7", "8..15"),
        ("permessage-deflate; server_max_window_bits", "8..15"),
        ("permessage-deflate; client_max_window_bits=abc", "8..15"),
        ("permessage-deflate; server_no_context_takeover=1", "no value"),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", "twice"),
        ("permessage-deflate; mystery=1", "unknown parameter mystery"),
    ],
)
def test_an_answer_the_client_must_refuse(header: str, complaint: str) -> None:
    with pytest.raises(HandshakeError, match=complaint):
        accepted(header)


def _sender(bits: int) -> zlib._Compress:
    return zlib.compressobj(6, zlib.DEFLATED, -bits)


def _message(sender: zlib._Compress, data: bytes) -> bytes:
    out = sender.compress(data) + sender.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]  # what goes on the wire (RFC 7692, 7.2.1)


MESSAGES = [b'{"type":"ticker","code":"KRW-BTC","trade_price":%d}' % i for i in range(50)]


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_messages_of_one_stream_with_context_takeover(bits: int) -> None:
    sender = _sender(bits)
    inflater = Inflater(DeflateParams(server_max_window_bits=bits), max_size=1 << 20)
    wire = [_message(sender, m) for m in MESSAGES]
    assert sum(map(len, wire[1:])) < sum(map(len, MESSAGES[1:])) / 2  # the context helps
    assert [inflater.inflate(w) for w in wire] == MESSAGES


def test_messages_without_context_takeover_each_start_afresh() -> None:
    inflater = Inflater(DeflateParams(server_no_context_takeover=True), max_size=1 << 20)
    wire = [_message(_sender(15), m) for m in MESSAGES]  # a new stream for every message
    assert [inflater.inflate(w) for w in reversed(wire)] == MESSAGES[::-1]  # any order


def test_a_window_of_8_as_zlib_writes_it() -> None:
    sender = zlib.compressobj(6, zlib.DEFLATED, -9)  # zlib widens 8 to 9 for deflate
    inflater = Inflater(DeflateParams(server_max_window_bits=8), max_size=1 << 20)
    assert [inflater.inflate(_message(sender, m)) for m in MESSAGES] == MESSAGES


def test_garbage_and_bombs_are_refused_with_their_close_codes() -> None:
    inflater = Inflater(DeflateParams(), max_size=1000)
    with pytest.raises(InflateError) as bad:
        inflater.inflate(b"\xff\xff\xff\xff")
    assert bad.value.close_code == 1007
    bomb = _message(_sender(15), b"0" * 100_000)
    assert len(bomb) < 1000
    with pytest.raises(InflateError) as big:
        Inflater(DeflateParams(), max_size=1000).inflate(bomb)
    assert big.value.close_code == 1009
    assert "1000 bytes" in str(big.value)
