"""One exception tree: every public exception class of every package derives from
``UpbitFanoutError`` and stands in the tree drawn in ``subscriptions/errors.py``'s docstring.

A new exception class fails here until it is placed in the tree (its root and its line), so the
documented picture cannot fall behind the code again.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import upbit_fanout
from upbit_fanout.collector.exchange import ExchangeError
from upbit_fanout.subscriptions import errors
from upbit_fanout.subscriptions.errors import UpbitErrorFrame, UpbitFanoutError, UpstreamError


def _public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(upbit_fanout.__path__, "upbit_fanout."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found[name] = value
    return found


EXCEPTIONS = _public_exceptions()


def test_the_walk_finds_the_tree() -> None:
    # a walk that found nothing would pass every test below
    assert {"UpbitFanoutError", "ClientError", "ExchangeError", "LeaseLost"} <= set(EXCEPTIONS)


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_exception_has_the_one_root_and_a_place_in_the_drawn_tree(name: str) -> None:
    cls = EXCEPTIONS[name]
    assert issubclass(cls, UpbitFanoutError), f"{cls.__module__}.{name} is outside the tree"
    drawn = re.search(rf"^ {{4}}[│ ]*(?:[├└]── )?{name} ", errors.__doc__ or "", re.MULTILINE)
    assert drawn, f"{name} is missing from the tree in subscriptions/errors.py"


def test_upbits_error_body_is_raised_as_upbit_error_frame() -> None:
    error = ExchangeError(400, "invalid_query_payload", "query parameter is wrong")
    assert isinstance(error, UpbitErrorFrame)
    assert isinstance(error, UpstreamError)
    assert (error.status, error.name, error.message) == (
        400,
        "invalid_query_payload",
        "query parameter is wrong",
    )
    assert str(error) == "invalid_query_payload (HTTP 400): query parameter is wrong"
    assert str(ExchangeError(0, "unreachable", "ConnectError")) == "unreachable: ConnectError"
