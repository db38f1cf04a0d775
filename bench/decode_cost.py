"""What decoding an event costs a consumer: ``Event.data`` and ``Event.typed`` per data type.

    .venv/bin/python bench/decode_cost.py          # ~20 s; writes bench/results/decode_cost.json

For the first DEFAULT sample of each type (tests/data/upbit-samples), as the collector publishes
it with the json codec (Upbit's bytes) and with msgpack, this times (best of ``--repeat`` runs of
``--number`` calls, in microseconds per call):

- ``decode_event``: what ``Event.data`` runs (JSON through msgspec with ``float_hook=Decimal``,
  msgpack through msgpack);
- ``stdlib json``: ``json.loads(payload, parse_float=Decimal)``, what ``decode_event`` ran before
  msgspec (the baseline in the same run, for JSON payloads);
- ``parse_event``: building the typed event from the decoded mapping (``Event.typed`` on top of
  ``Event.data``);
- ``Event()``: making the lazy event itself (what every received message costs, decoded or not).

Both decoders give the same value (checked here on every sample before timing). The machine is
small and usually shared: compare the columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import timeit
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from upbit_fanout.client import Event, parse_event
from upbit_fanout.subscriptions.codec import decode_event, encode_event
from upbit_fanout.subscriptions.jsontext import loads_exact
from upbit_fanout.subscriptions.topics import parse_topic

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "upbit-samples"
RESULTS = ROOT / "bench" / "results" / "decode_cost.json"
TYPES = ("ticker", "trade", "orderbook", "candle", "myOrder", "myAsset")


def sample(type_name: str) -> bytes:
    for raw in (SAMPLES / f"{type_name}.jsonl").read_bytes().splitlines():
        line = raw.strip()
        if line.startswith(b"{") and b'"type"' in line:
            return line
    raise LookupError(type_name)


def best_us(call: Callable[[], Any], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only")
    opts = parser.parse_args()
    rows = []
    print(
        f"{'type':<10} {'codec':<8} {'bytes':>6} {'decode_event':>13} {'stdlib json':>12} "
        f"{'ratio':>6} {'parse_event':>12} {'Event()':>8}   (us per call)"
    )
    for type_name in TYPES:
        line = sample(type_name)
        for codec in ("json", "msgpack"):
            payload = line if codec == "json" else encode_event(loads_exact(line), "msgpack")
            value = decode_event(payload)
            topic = parse_topic(
                {"myAsset": "myAsset", "myOrder": "myOrder:*"}.get(type_name)
                or f"{value['type']}:{value['code']}"
            )
            if codec == "json":
                assert repr(value) == repr(json.loads(payload, parse_float=Decimal))
            fast = best_us(lambda p=payload: decode_event(p), opts.number, opts.repeat)
            stdlib = (
                best_us(
                    lambda p=payload: json.loads(p, parse_float=Decimal), opts.number, opts.repeat
                )
                if codec == "json"
                else None
            )
            typed = best_us(lambda v=value: parse_event(v), opts.number, opts.repeat)
            make = best_us(
                lambda t=topic, p=payload: Event("x", t, p), opts.number * 5, opts.repeat
            )
            row = {
                "type": type_name,
                "codec": codec,
                "payload_bytes": len(payload),
                "decode_event_us": round(fast, 2),
                "stdlib_json_us": round(stdlib, 2) if stdlib is not None else None,
                "decode_vs_stdlib": round(fast / stdlib, 3) if stdlib else None,
                "parse_event_us": round(typed, 2),
                "event_init_us": round(make, 3),
            }
            rows.append(row)
            ratio = f"{row['decode_vs_stdlib']:.2f}" if stdlib else "-"
            std = f"{stdlib:.1f}" if stdlib is not None else "-"
            print(
                f"{type_name:<10} {codec:<8} {len(payload):>6} {fast:>13.1f} {std:>12} "
                f"{ratio:>6} {typed:>12.1f} {make:>8.2f}"
            )
    report = {
        "bench": "decode_cost",
        "command": "python bench/decode_cost.py",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, shared with other work (load average "
        f"{os.getloadavg()[0]:.2f})",
        "method": f"best of {opts.repeat} runs of {opts.number} calls",
        "rows": rows,
    }
    if not opts.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
