"""The emulator's one logger, ``upbit_fanout.emulator`` (docs/logging.md): every module of the
package logs through it; the record's ``module`` and ``funcName`` say where."""

from __future__ import annotations

import logging

__all__ = ["log"]

log = logging.getLogger("upbit_fanout.emulator")
