"""The one strict exact-JSON policy: exact numbers both ways, NaN and Infinity refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upbit_fanout.subscriptions.jsontext import (
    EXACT_CONTEXT,
    INT64_MIN,
    UINT64_MAX,
    RawNumber,
    dumps_exact,
    exact_decoder,
    loads_exact,
    replace_wide_ints,
)


@pytest.mark.parametrize(
    "text",
    [
        '{"trade_price":NaN}',
        '{"trade_price":Infinity}',
        '{"trade_price":-Infinity}',
        '[1,{"a":[NaN]}]',
        "NaN",
    ],
)
def test_loads_exact_refuses_nan_and_infinity(text: str) -> None:
    # json's extensions, not JSON (RFC 8259 section 6): before, loads_exact made them floats.
    with pytest.raises(ValueError, match="is not a JSON number"):
        loads_exact(text)
    with pytest.raises(ValueError, match="is not a JSON number"):
        loads_exact(text.encode())


def test_every_exact_decoder_refuses_nan_whatever_its_number_type() -> None:
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        exact_decoder(Decimal).decode('{"a":NaN}')
    assert exact_decoder(Decimal).decode('{"a":1.50}') == {"a": Decimal("1.50")}


@pytest.mark.parametrize(
    "obj",
    [
        {"trade_price": float("nan")},
        {"trade_price": float("inf")},
        {"units": [{"ask_size": -float("inf")}], "delisting_date": None},
        [1, (2, float("nan"))],
        {"trade_price": Decimal("NaN")},
        {"trade_price": Decimal("-Infinity")},
        {"n": 2**70, "trade_price": float("nan")},  # the wide-integer path checks it too
    ],
)
def test_dumps_exact_refuses_non_finite_numbers(obj: Any) -> None:
    # Before, a float NaN or Infinity was written as null: a price that silently became "none".
    with pytest.raises(TypeError, match="not a finite number"):
        dumps_exact(obj)


def test_nulls_and_the_text_null_are_still_written() -> None:
    obj = {"delisting_date": None, "name": "null", "price": 1.5, "n": [None]}
    assert dumps_exact(obj) == b'{"delisting_date":null,"name":"null","price":1.5,"n":[null]}'


def test_numbers_keep_their_text_and_integers_are_ints_at_any_size() -> None:
    obj = loads_exact('{"a":1.16539E8,"b":0.00077720,"c":123456789012345678901234567890,"d":-1}')
    assert obj == {
        "a": RawNumber("1.16539E8"),
        "b": RawNumber("0.00077720"),
        "c": 123456789012345678901234567890,
        "d": -1,
    }
    assert type(obj["a"]) is RawNumber
    assert type(obj["c"]) is int
    assert dumps_exact(obj) == (
        b'{"a":1.16539E8,"b":0.00077720,"c":123456789012345678901234567890,"d":-1}'
    )


def test_wide_integers_are_handed_to_the_writer_and_64_bit_ones_are_not() -> None:
    obj = {"a": [UINT64_MAX + 1, UINT64_MAX], "b": (INT64_MIN - 1, INT64_MIN), "t": True}
    assert replace_wide_ints(obj, lambda value: f"wide {value}") == {
        "a": [f"wide {UINT64_MAX + 1}", UINT64_MAX],
        "b": [f"wide {INT64_MIN - 1}", INT64_MIN],
        "t": True,
    }


def test_the_exact_context_adds_without_rounding() -> None:
    balance = Decimal("1386929.37231066771348207123")
    locked = Decimal("0.00000000000000000001")  # 1E-20: the last of its 20 decimals
    assert str(EXACT_CONTEXT.add(balance, locked)) == "1386929.37231066771348207124"
    assert str(EXACT_CONTEXT.add(Decimal("1E+400"), Decimal("1E-400"))).startswith("1000")


_finite_decimals = st.decimals(allow_nan=False, allow_infinity=False).filter(
    lambda d: not (d.is_zero() and d.is_signed())  # JSON reads "-0" as the integer 0
)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=UINT64_MAX - 3, max_value=2**90),
    _finite_decimals,
    st.from_regex(r"\A-?[1-9][0-9]{0,6}\.[0-9]{1,8}([eE][+-]?[0-9]{1,3})?\Z").map(RawNumber),
)
_values = st.recursive(
    st.none() | st.booleans() | st.text(max_size=6) | _numbers,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _texts(value: Any) -> Any:
    """Numbers as ("num", their text): equal exactly when the written digits are the same."""
    if isinstance(value, dict):
        return {key: _texts(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_texts(item) for item in value]
    if isinstance(value, RawNumber | Decimal) or (
        isinstance(value, int) and not isinstance(value, bool)
    ):
        return ("num", str(value))
    return value


@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_round_trip_keeps_every_number_s_text(obj: dict[str, Any]) -> None:
    written = dumps_exact(obj)
    parsed = loads_exact(written)
    assert _texts(parsed) == _texts(obj)
    assert dumps_exact(parsed) == written  # and writing it again gives the same bytes
