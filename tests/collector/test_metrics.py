"""Prometheus metrics: after events flowed, ``/metrics`` says what a consumer received; every
expression of docs/grafana-dashboard.json uses only names the registry exports.

Real parts: Redis, the emulator over loopback, the collector, its HTTP port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.collector.service_support import Listener, running_collector
from tests.collector.test_health_canary import http_get, metric
from tests.helpers import until
from upbit_fanout.collector.metrics import MetricsServer
from upbit_fanout.commands.collector import configure
from upbit_fanout.emulator import Emulator
from upbit_fanout.settings import Settings
from upbit_fanout.subscriptions.keys import Keys

pytestmark = pytest.mark.usefixtures("real_redis_url")

TOPICS = ("ticker:KRW-BTC", "trade:KRW-ETH")
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def labelled(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{wanted}}} not in the metrics")


def sample_names(text: str) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_the_counters_match_what_a_consumer_received(
    real_redis_url: str, keys: Keys, r: aioredis.Redis
) -> None:
    channels = [keys.channel(topic) for topic in TOPICS]
    async with (
        Emulator(port=0, seed=21, rate=300) as emu,
        Listener(real_redis_url, channels) as consumer,
    ):
        await r.sadd(keys.intents("bot"), *TOPICS)
        await r.expire(keys.intents("bot"), 60)
        # Long keep-alive timings: the stall below must not look like a dead socket.
        async with (
            running_collector(
                real_redis_url, keys, emu.public_url, ping_interval=60, ping_timeout=60,
                canary_interval=0.2,
            ) as c,
            MetricsServer(c) as metrics,
        ):  # fmt: skip
            await c.wait_subscribed(lambda union: union == frozenset(TOPICS), timeout=15)
            await until(
                lambda: min(len(consumer.messages[ch]) for ch in channels) >= 5,
                within=20,
                what="events flowing on every channel",
            )
            emu.stall()  # no more events: let everything in flight arrive, then compare
            previous = -1
            while True:
                await asyncio.sleep(0.5)
                by_type = c.status.published_by_type
                published = sum(n for name, n in by_type.items() if name != "canary")
                if published == previous and c.canary.book.received > 0:
                    break
                previous = published
            code, text = await http_get(metrics.port, "/metrics")
            assert code == 200
            # Counted before the resume: the pacer then sends a second's worth at once, and
            # what the consumer gets after the /metrics read would not be in it.
            received = {topic: len(consumer.messages[keys.channel(topic)]) for topic in TOPICS}
            emu.resume()
        assert consumer.reconnects == 0, "another test killed the listener's connection"
    assert (
        labelled(text, "upbit_fanout_events_published_total", type="ticker")
        == received["ticker:KRW-BTC"]
    )
    assert (
        labelled(text, "upbit_fanout_events_published_total", type="trade")
        == received["trade:KRW-ETH"]
    )
    # one frame per event here (no fan-out to several topics), so received == published
    assert (
        labelled(text, "upbit_fanout_events_received_total", type="ticker")
        == received["ticker:KRW-BTC"]
    )
    assert (
        labelled(text, "upbit_fanout_events_received_total", type="trade")
        == received["trade:KRW-ETH"]
    )
    assert metric(text, "upbit_fanout_publish_batch_seconds_count") >= 1
    assert metric(text, "upbit_fanout_union_size") == len(TOPICS)
    assert metric(text, "upbit_fanout_leader") == 1
    assert metric(text, "upbit_fanout_canary_ok") == 1
    assert metric(text, "upbit_fanout_dropped_events_total") == 0
    assert labelled(text, "upbit_fanout_upstream_state", connection="public", state="subscribed")
    # every expression of the dashboard names only metrics this output has
    names = sample_names(text)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 15
    used = {name for expr in exprs for name in re.findall(r"\bupbit_fanout_[a-z_]+\b", expr)}
    assert used, "the dashboard uses no metric"
    assert used - names == set(), f"dashboard names not exported: {sorted(used - names)}"
    templating = dashboard["templating"]["list"][0]["query"]
    assert set(re.findall(r"\bupbit_fanout_[a-z_]+\b", templating)) <= names


async def test_metrics_are_off_unless_asked_and_loopback_by_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.metrics_port == 0
    assert settings.metrics_host == "127.0.0.1"
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--metrics-port", "9108"])
    assert args.metrics_port == 9108
    assert args.metrics_host is None
