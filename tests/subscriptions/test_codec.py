from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import SAMPLES
from upbit_fanout.subscriptions import CodecError, decode_event, detect_codec, encode_event
from upbit_fanout.subscriptions.codec import CodecName
from upbit_fanout.subscriptions.jsontext import dumps_exact, loads_exact


def _sample_lines() -> list[tuple[str, str]]:
    lines = []
    for path in sorted(Path(SAMPLES).glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                lines.append((f"{path.name}:{number}", line))
    return lines


SAMPLE_LINES = _sample_lines()


def test_samples_are_present() -> None:
    # Guards the parametrised tests below against silently running on nothing.
    assert len(SAMPLE_LINES) >= 25


@pytest.mark.parametrize(("where", "line"), SAMPLE_LINES)
def test_exact_json_round_trip_keeps_every_byte(where: str, line: str) -> None:
    # Every sample line is compact JSON, so an exact parse written back is the same bytes.
    assert dumps_exact(loads_exact(line)) == line.encode()


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize(("where", "line"), SAMPLE_LINES)
def test_both_codecs_give_the_samples_digits(codec: CodecName, where: str, line: str) -> None:
    source = loads_exact(line)
    objects = source if isinstance(source, list) else [source]
    for obj in objects:
        payload = encode_event(obj, codec)
        assert detect_codec(payload) == codec
        decoded = decode_event(payload)
        expected = json.loads(dumps_exact(obj), parse_float=Decimal)
        assert decoded == expected
        # Same digits, not merely equal values: compare the number text.
        assert _texts(decoded) == _texts(expected)


def _texts(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _texts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_texts(item) for item in value]
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return str(value)
    return value


def test_28_digit_balance_survives_msgpack() -> None:
    line = (SAMPLES / "myAsset.jsonl").read_text().splitlines()[0]
    decoded = decode_event(encode_event(loads_exact(line), "msgpack"))
    assert str(decoded["assets"][0]["balance"]) == "1386929.37231066771348207123"


def test_exponent_and_trailing_zeros_keep_their_text() -> None:
    obj = loads_exact(b'{"a":1.16539E8,"b":0.00077720,"c":8.428e-05}')
    for codec in ("json", "msgpack"):
        decoded = decode_event(encode_event(obj, codec))
        assert [str(decoded[k]) for k in "abc"] == ["1.16539E+8", "0.00077720", "0.00008428"]
        assert decoded["a"].as_tuple() == Decimal("1.16539E8").as_tuple()


def test_wide_integers_survive_both_codecs() -> None:
    obj = {"n": 2**70, "m": -(2**63), "s": 17303368620470000}
    for codec in ("json", "msgpack"):
        assert decode_event(encode_event(obj, codec)) == obj


@pytest.mark.parametrize("payload", [b"", b"\x00abc", b"hello", b"\xc1"])
def test_garbage_is_a_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_event(payload)


def test_truncated_payloads_are_codec_errors() -> None:
    obj = {"type": "ticker", "trade_price": Decimal("1.5")}
    for codec in ("json", "msgpack"):
        payload = encode_event(obj, codec)
        with pytest.raises(CodecError):
            decode_event(payload[:-2])


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(CodecError, match="unknown codec"):
        encode_event({}, "xml")  # type: ignore[arg-type]


finite_decimals = st.decimals(allow_nan=False, allow_infinity=False).filter(
    lambda d: not (d.is_zero() and d.is_signed())  # JSON reads "-0" as the integer 0
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | finite_decimals,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_codecs_round_trip_anything_with_the_same_number_text(obj: dict[str, Any]) -> None:
    for codec in ("json", "msgpack"):
        decoded = decode_event(encode_event(obj, codec))
        assert _texts(decoded) == _texts(obj)


_TRICKY_JSON = [
    b'{"a":1.16539E8,"b":0.00077720,"c":123456789012345678901234567890,"d":-0.0,"e":1e400}',
    b'{"a":1,"a":2}',  # a duplicate key: the last one wins, as in json
    b'{"x":"\\ud800"}',  # a lone surrogate: msgspec refuses it, json takes it
    b'{"k\\u00e9y":"\xed\x95\x9c\xea\xb8\x80","n":null,"t":true,"f":false,"l":[1,2.50,{"z":[]}]}',
    b'{"big":-18446744073709551616,"small":-9223372036854775808,"e":1E-7}',
]


@pytest.mark.parametrize("payload", _TRICKY_JSON)
def test_json_decoding_is_exactly_the_standard_librarys(payload: bytes) -> None:
    """decode_event's fast JSON path (msgspec) gives what json.loads(parse_float=Decimal) gives:
    the same values of the same types (a Decimal keeps its exponent and trailing zeros)."""
    expected = json.loads(payload, parse_float=Decimal)
    got = decode_event(payload)
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"x":NaN}',
        b'{"x":Infinity}',
        b'{"x":-Infinity}',
        b'{"x":[1,{"y":NaN}]}',
        b"[NaN]",
        b'  {"x":NaN}',  # not the msgspec fast path (first byte): the fallback decides alone
    ],
)
def test_json_nan_and_infinity_are_codec_errors(payload: bytes) -> None:
    # json's extensions are not JSON (RFC 8259 section 6); the collector never publishes them,
    # so a payload carrying one was not written by it.
    with pytest.raises(CodecError, match="is not a JSON number"):
        decode_event(payload)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN")])
@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_non_finite_decimals_are_not_encoded(value: Decimal, codec: str) -> None:
    with pytest.raises(CodecError, match="not a finite number"):
        encode_event({"type": "ticker", "trade_price": value}, codec)  # type: ignore[arg-type]


@given(st.dictionaries(st.text(max_size=8), values, max_size=8))
def test_json_decoding_matches_the_standard_library_on_anything(obj: dict[str, Any]) -> None:
    payload = encode_event(obj, "json")
    assert repr(decode_event(payload)) == repr(json.loads(payload, parse_float=Decimal))


@pytest.mark.parametrize(
    ("where", "line"), [(where, line) for where, line in SAMPLE_LINES if line.startswith("{")]
)
def test_samples_decode_as_the_standard_library_does(where: str, line: str) -> None:
    payload = line.encode()
    assert repr(decode_event(payload)) == repr(json.loads(payload, parse_float=Decimal))
