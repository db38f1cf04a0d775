"""upbit-fanout: one Upbit connection shared by many processes through Redis.

This package holds the command line (``upbit-fanout``) and its settings. The library parts live in
the top-level packages ``subscriptions`` (the Redis contract), ``collector`` (the Upbit side),
``client`` (the consumer library) and ``emulator`` (a local stand-in for Upbit).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("upbit-fanout")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
