"""The typed fast path (msgspec) only ever accepts what the ordinary decoder accepts, with the
same frame; whatever it refuses, the ordinary decoder decides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upbit_fanout.collector import decode
from upbit_fanout.subscriptions import upbit_fields
from upbit_fanout.subscriptions.errors import FrameError
from upbit_fanout.subscriptions.topics import TOPIC_TYPES

pytestmark = pytest.mark.skipif(decode._TYPED is None, reason="msgspec cannot be imported")

SAMPLES = Path(__file__).parents[1] / "data" / "upbit-samples"

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _good(kind: str) -> st.SearchStrategy[Any]:
    base = kind.rstrip("?")
    value: st.SearchStrategy[Any] = {
        "number": st.one_of(
            st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False)
        ),
        "integer": st.integers(-(2**70), 2**70),
        "string": st.text(max_size=8),
    }[base]
    return st.one_of(value, st.none()) if kind.endswith("?") else value


@st.composite
def _value(draw: st.DrawFn, kind: str, noise: int) -> Any:
    """A value of the field's kind, or (``noise`` % of the time) any JSON value."""
    if draw(st.integers(0, 99)) < noise:
        return draw(json_values)
    return draw(_good(kind))


@st.composite
def _unit(draw: st.DrawFn, list_name: str, noise: int) -> Any:
    table = upbit_fields.NESTED_FIELD_TYPES[list_name]
    if draw(st.integers(0, 99)) < noise:
        return draw(json_values)
    item = {name: draw(_value(kind, noise)) for name, kind in table.items() if draw(st.booleans())}
    if draw(st.integers(0, 99)) < noise:
        item.update(draw(st.dictionaries(st.text(max_size=4), json_values, max_size=2)))
    return item


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Event objects: mostly well-formed (the typed path must accept some), each part wrong
    ``noise`` % of the time, plus duplicated keys, legacy markets and unknown fields."""
    noise = draw(st.sampled_from([0, 2, 10, 40]))

    def wrong() -> bool:
        return draw(st.integers(0, 99)) < noise

    type_name = draw(st.sampled_from([*TOPIC_TYPES, "bogus"]))
    obj: dict[str, Any] = {"type": draw(json_values) if wrong() else type_name}
    code: Any = "KRW-BTC"
    if wrong():
        code = draw(st.one_of(st.sampled_from(["", "KRW-BTC.5", "KRW-\u00e9"]), json_values))
    if not wrong():
        obj["code"] = code
    obj["stream_type"] = (
        draw(json_values) if wrong() else draw(st.sampled_from(["SNAPSHOT", "REALTIME"]))
    )
    for name, kind in upbit_fields.field_types(type_name).items():
        if draw(st.integers(0, 3)):
            obj[name] = draw(_value(kind, noise))
    for list_name in upbit_fields.nested_tables(type_name):
        if not wrong():
            obj[list_name] = (
                draw(json_values)
                if wrong()
                else draw(st.lists(_unit(list_name, noise), max_size=4))
            )
    if wrong():
        obj["market"] = "KRW-BTC"
    if draw(st.booleans()):
        obj["sequential_id"] = draw(json_values) if wrong() else draw(st.integers(0, 2**70))
    if wrong():
        obj.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)))
    keys = draw(st.permutations(list(obj)))
    text = json.dumps({key: obj[key] for key in keys}, ensure_ascii=draw(st.booleans()))
    if wrong() and len(obj) > 1:  # a duplicated key, as a hostile peer might send
        key = draw(st.sampled_from(keys))
        text = text[:-1] + f", {json.dumps(key)}: {json.dumps(draw(json_values))}}}"
    return text.encode("utf-8", "surrogatepass")


def _fields(frame: decode.Frame) -> tuple[object, ...]:
    return (
        frame.kind,
        frame.type,
        frame.code,
        frame.stream_type,
        frame.raw,
        frame.sequential_id,
        frame.error,
        frame.units,
    )


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=frames())
def test_what_the_typed_path_accepts_the_ordinary_decoder_accepts_alike(data: bytes) -> None:
    typed = decode._typed_event(data)
    if typed is None:
        return  # refused: the ordinary path decides (tests/collector/test_decode.py)
    try:
        ordinary, errors = decode._decode_report(data)
    except FrameError as exc:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"the typed path accepted what the decoder refuses ({exc}): {data!r}")
    assert errors == []
    assert [_fields(frame) for frame in ordinary] == [_fields(typed)]


def test_upbit_samples_of_every_default_type_take_the_typed_path() -> None:
    taken = set()
    for path in SAMPLES.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            data = line.encode()
            typed = decode._typed_event(data)
            if typed is not None:
                taken.add(typed.type)
                ordinary, _ = decode._decode_report(data)
                assert [_fields(frame) for frame in ordinary] == [_fields(typed)]
    assert {"ticker", "trade", "orderbook"} <= taken


def test_a_wrong_field_type_is_left_to_the_ordinary_decoder_which_refuses_it() -> None:
    bad = b'{"type":"ticker","code":"KRW-BTC","trade_price":"abc"}'
    assert decode._typed_event(bad) is None
    with pytest.raises(decode.InvalidEvent):
        decode.decode_frame_report(bad)
