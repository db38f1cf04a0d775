"""Recorded frames: a JSONL file of Upbit frame payloads, served as they were recorded.

Each line of a replay file is one frame payload, as in tests/data/upbit-samples/*.jsonl: a
DEFAULT object, a SIMPLE object, or a ``*_LIST`` array of either; legacy 2018 frames (``market`` /
``mk``, no ``type``) are recognised with :func:`subscriptions.upbit_fields.infer_type`.
:class:`ReplayFrame` keeps the line's bytes and renders it for a connection's format:

- the same format as the line (object vs array, DEFAULT vs SIMPLE keys): the line's bytes,
  byte for byte;
- another format: keys converted with :func:`subscriptions.upbit_fields.to_simple` /
  ``to_default``, numbers written with exactly the text of the line
  (:func:`subscriptions.jsontext.loads_exact` / ``dumps_exact``).

Lines that are not data (error frames, ``{"status":"UP"}``, LIST_SUBSCRIPTIONS answers, blank
lines) are skipped. Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upbit_fanout.emulator.protocol import ConnectionSubscription, Format, wrap_list
from upbit_fanout.subscriptions import upbit_fields
from upbit_fanout.subscriptions.errors import UpbitFanoutError
from upbit_fanout.subscriptions.jsontext import dumps_exact, loads_exact
from upbit_fanout.subscriptions.upbit_fields import infer_type

__all__ = [
    "ReplayError",
    "ReplayFrame",
    "ReplayItem",
    "load_replay",
    "matching_items",
    "replay_codes",
]


class ReplayError(UpbitFanoutError, ValueError):
    """A replay file line that is not JSON; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One event of a frame: its type, code (None for myAsset) and own stream_type."""

    type: str
    code: str | None
    snapshot: bool
    obj: dict[str, Any] = field(repr=False)
    """Parsed with exact numbers (RawNumber), keys as recorded."""


@dataclass(slots=True)
class ReplayFrame:
    """One recorded frame (a line of the file, or a payload given to ``Emulator.inject``)."""

    raw: bytes
    listed: bool
    simple: bool
    items: tuple[ReplayItem, ...]
    _cache: dict[tuple[bool, bool, tuple[int, ...]], list[bytes]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def parse(cls, raw: bytes) -> ReplayFrame | None:
        """The frame for one payload; None when it is not a data frame (error, status, LIST
        answer, or anything whose type or code cannot be told). Raises ValueError if not JSON.
        """
        value = loads_exact(raw)
        listed = isinstance(value, list)
        objects = value if listed else [value]
        items: list[ReplayItem] = []
        simple = False
        for obj in objects:
            if not isinstance(obj, dict) or not obj:
                return None
            if {"error", "status", "method", "mthd"} & obj.keys():
                return None
            type_ = infer_type(obj)
            if type_ is None:
                return None
            simple = "ty" in obj or "cd" in obj or "mk" in obj or "st" in obj
            code = obj.get("cd", obj.get("mk")) if simple else obj.get("code", obj.get("market"))
            if type_ != "myAsset" and not isinstance(code, str):
                return None
            stream_type = obj.get("st" if simple else "stream_type")
            items.append(
                ReplayItem(
                    type=type_,
                    code=code if isinstance(code, str) else None,
                    snapshot=stream_type == "SNAPSHOT",
                    obj=obj,
                )
            )
        if not items:
            return None
        return cls(raw=raw, listed=listed, simple=simple, items=tuple(items))

    def render(self, fmt: Format, selected: Sequence[int]) -> list[bytes]:
        """The frames a connection in ``fmt`` gets for the items at ``selected`` (indexes).

        Byte for byte when the format is the frame's own and every item is selected. Otherwise
        converted: one array holding the selected items under ``*_LIST`` formats, else one
        object per item.
        """
        picked = tuple(selected)
        if (
            fmt.simple == self.simple
            and fmt.listed == self.listed
            and len(picked) == len(self.items)
        ):
            return [self.raw]
        key = (fmt.simple, fmt.listed, picked)
        frames = self._cache.get(key)
        if frames is None:
            objects = [self._convert(self.items[i], simple=fmt.simple) for i in picked]
            frames = [wrap_list(*objects)] if fmt.listed else objects
            self._cache[key] = frames
        return frames

    def _convert(self, item: ReplayItem, *, simple: bool) -> bytes:
        if simple == self.simple:
            return dumps_exact(item.obj)
        rename = upbit_fields.to_simple if simple else upbit_fields.to_default
        return dumps_exact(rename(item.type, item.obj))


def matching_items(frame: ReplayFrame, subscription: ConnectionSubscription | None) -> list[int]:
    """Indexes of the frame's items this subscription takes.

    A SNAPSHOT item goes to streams that did not ask ``is_only_realtime``, any other item to
    streams that did not ask ``is_only_snapshot``; myOrder and myAsset follow the private
    subscription. Recorded orderbooks are served as recorded, whatever depth was asked.
    """
    if subscription is None:
        return []
    picked: list[int] = []
    for index, item in enumerate(frame.items):
        if item.type in ("myOrder", "myAsset"):
            if subscription.wants(item.type, item.code):
                picked.append(index)
            continue
        if item.code is None:
            continue
        flags = subscription.replay.get((item.type, item.code))
        if flags is not None and flags[0 if item.snapshot else 1]:
            picked.append(index)
    return picked


def load_replay(path: str | Path) -> list[ReplayFrame]:
    """Every data frame of a JSONL file, in file order (non-data lines skipped)."""
    source = Path(path)
    frames: list[ReplayFrame] = []
    with source.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                frame = ReplayFrame.parse(raw)
            except ValueError as exc:
                raise ReplayError(f"{source}:{number}: not a JSON frame ({exc})") from exc
            if frame is not None:
                frames.append(frame)
    return frames


def replay_codes(frames: Iterable[ReplayFrame]) -> frozenset[str]:
    """Every market code the frames carry (they are all known markets in replay mode)."""
    return frozenset(item.code for frame in frames for item in frame.items if item.code)
