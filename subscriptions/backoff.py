"""Reconnect delays: capped exponential backoff with FULL jitter, as a plain generator.

Shaped like websockets' ``backoff()`` (``websockets/client.py``): the caller takes ``next()`` after
each failed attempt and starts a new generator once a connection has proved stable. Full jitter
(each delay uniform in ``[0, min(maximum, initial * factor**n))``) spreads the reconnects of many
processes after a shared outage. The collector (Upbit and Redis reconnects) and the client library
(Redis reconnects) both use it; in the collector the connect rate limit (``collector.budget``)
keeps even a run of near-zero delays within Upbit's 5 connections per second.

The random source is injectable (``rng`` returns floats in ``[0, 1)``), so tests are exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = ["backoff", "ceiling"]


def ceiling(attempt: int, *, initial: float, maximum: float, factor: float = 2.0) -> float:
    """Upper bound of the ``attempt``-th delay (0-based): ``min(maximum, initial*factor**n)``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    bound = initial
    for _ in range(attempt):
        bound *= factor
        if bound >= maximum:
            return maximum
    return min(bound, maximum)


def backoff(
    initial: float = 0.5,
    maximum: float = 30.0,
    factor: float = 2.0,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield delays forever: ``rng() * min(maximum, initial * factor**n)`` for n = 0, 1, 2, ...

    Every delay is in ``[0, maximum]``; the bound doubles (``factor``) until it reaches the cap.
    """
    if initial <= 0 or maximum < initial or factor < 1:
        raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
    bound = initial
    while True:
        jitter = rng()
        yield max(0.0, min(maximum, jitter * bound))
        bound = min(maximum, bound * factor)
