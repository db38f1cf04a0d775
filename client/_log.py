"""The client library's one logger, ``upbit_fanout.client`` (docs/logging.md).

Every module of the library logs through it, so the name a program configures is public and
stable, whatever private module the record comes from (the record's ``module`` and ``funcName``
still say where).
"""

from __future__ import annotations

import logging

__all__ = ["log"]

log = logging.getLogger("upbit_fanout.client")
