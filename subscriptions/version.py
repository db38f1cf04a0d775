"""The installed distribution's version, in one place for every layer.

``upbit_fanout.__version__`` (the command's ``--version``) and the collector's ``P:status``
field ``version`` both read it from here, so the collector needs nothing from the package above it.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "package_version"]

DISTRIBUTION = "upbit-fanout"


@cache
def package_version() -> str:
    """The installed version of ``upbit-fanout``; ``0.0.0`` in a source tree never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "0.0.0"
