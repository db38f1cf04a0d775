"""Prometheus metrics and ``GET /healthz`` for one collector, on one small HTTP port.

Off by default; the ``collector`` command starts a :class:`MetricsServer` with ``--metrics-port``
(setting ``UPBIT_FANOUT_METRICS_PORT``), bound to 127.0.0.1 unless ``--metrics-host`` says
otherwise. Nothing is counted here: at each scrape, :class:`CollectorMetrics` reads the counters
and fields the collector already keeps (:class:`collector.status.Status`), so the hot paths carry
no metric calls. Each server has its own ``CollectorRegistry`` (tests run several collectors in
one process).

Paths: ``/metrics`` (Prometheus text format), ``/healthz`` (200 or 503 with the one-line verdict
of ``upbit-fanout check``'s rules, judged on this process's own state: its canary, its
upstreams, the age of its last successful write to Redis). A standby answers 200 while it can
reach Redis. Every metric name is listed in docs/collector.md ("Metrics").
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as PrometheusCollector

from upbit_fanout.collector._log import log
from upbit_fanout.collector.status import COUNTER_SPECS, Histogram, State
from upbit_fanout.subscriptions.health import MAX_DELIVERY_AGE, STALE_STATUS, judge
from upbit_fanout.subscriptions.version import package_version

if TYPE_CHECKING:
    from upbit_fanout.collector.service import Collector

__all__ = ["CollectorMetrics", "MetricsServer", "health_report", "healthz"]


PREFIX: Final = "upbit_fanout"
_CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"
_MAX_REQUEST: Final = 8192
_READ_TIMEOUT: Final = 5.0

_STATES: Final = tuple(state.value for state in State)


def health_report(collector: Collector, now: float) -> dict[str, Any]:
    """A ``status``-command report (see :func:`upbit_fanout.commands.status.gather`) built
    from this process's own state, for :func:`upbit_fanout.subscriptions.health.judge`."""
    fields: dict[str, Any] = {
        name: int(value) if value.isdigit() else value
        for name, value in collector.status.snapshot().items()
    }
    written = collector.status.last_written_at
    event_at = fields.get("last_event_at")
    return {
        "key_prefix": collector.keys.prefix,
        "collector_listening": True,
        "collector": fields,
        "status_age_seconds": None if written is None else max(0.0, now - written),
        "last_event_age_seconds": max(0.0, now - event_at / 1000)
        if isinstance(event_at, int)
        else None,
        "union": sorted(collector.union),
    }


def healthz(collector: Collector, now: float, **thresholds: float) -> tuple[bool, str]:
    """(healthy, one-line reason) for ``/healthz``."""
    if not collector.is_leader:
        written = collector.status.last_written_at
        if written is None or now - written > STALE_STATUS:
            return False, "standby, and it cannot write to Redis"
        return True, "standby: another collector leads"
    return judge(health_report(collector, now), now=now, **thresholds)


class CollectorMetrics(PrometheusCollector):
    """Reads one collector's counters at each scrape."""

    def __init__(self, collector: Collector, thresholds: Mapping[str, float] | None = None):
        self._collector = collector
        self._thresholds = dict(thresholds or {})

    def collect(self) -> Iterator[Metric]:
        c = self._collector
        status = c.status
        counters = status.current_counters()
        for spec in COUNTER_SPECS:
            if spec.metric is not None:
                value = counters.get(spec.field, 0)
                yield CounterMetricFamily(f"{PREFIX}_{spec.metric}", spec.help, value=value)
        received = CounterMetricFamily(
            f"{PREFIX}_events_received",
            "Event frames received from the upstream connections, by event type.",
            labels=["type"],
        )
        for type_name, count in sorted(status.received_by_type.items()):
            received.add_metric([type_name], count)
        yield received
        published = CounterMetricFamily(
            f"{PREFIX}_events_published",
            "Items published to Redis, by event type (after fan-out to topics).",
            labels=["type"],
        )
        for type_name, count in sorted(status.published_by_type.items()):
            published.add_metric([type_name], count)
        yield published
        yield _histogram(
            "publish_batch_seconds",
            "Seconds per publish round trip (one batch).",
            status.histograms["publish_batch"],
        )
        yield _histogram(
            "canary_latency_seconds",
            "Seconds from the outbox to the collector's own subscriber, per canary.",
            status.histograms["canary_latency"],
        )
        now = time.time()
        healthy, _ = healthz(c, now, **self._thresholds)
        yield _gauge("healthy", "1 when /healthz answers 200 (the check rules hold).", healthy)
        ok_at = _int(status.snapshot().get("canary_ok_at"))
        age = GaugeMetricFamily(
            f"{PREFIX}_canary_age_seconds",
            "Seconds since a canary last came back (delivery confirmed); absent before the first.",
        )
        if ok_at:
            age.add_metric([], max(0.0, now - ok_at / 1000))
        yield age
        last = c.canary.last_latency
        yield GaugeMetricFamily(
            f"{PREFIX}_canary_last_latency_seconds",
            "Latency of the latest canary that came back.",
            value=last if last is not None else float("nan"),
        )
        limit = self._thresholds.get("max_delivery_age", MAX_DELIVERY_AGE)
        ok = c.is_leader and ok_at is not None and now - ok_at / 1000 <= limit
        yield _gauge("canary_ok", "1 while the canary came back within the threshold.", ok)
        yield GaugeMetricFamily(
            f"{PREFIX}_union_size", "Topics requested upstream.", value=len(c.union)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Items waiting in the outbox.", value=len(c.outbox)
        )
        yield _gauge("leader", "1 while this collector leads (holds the upstream).", c.is_leader)
        upstream = GaugeMetricFamily(
            f"{PREFIX}_upstream_state",
            "1 for the current state of each upstream connection.",
            labels=["connection", "state"],
        )
        connections = [c.public] + ([c.private] if c.private is not None else [])
        for connection in connections:
            for state in _STATES:
                upstream.add_metric([connection.name, state], float(connection.state == state))
        yield upstream
        yield _gauge(
            "private_enabled", "1 when API keys and a private URL are configured.", c.private
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_uptime_seconds",
            "Seconds since the collector started.",
            value=_int(status.snapshot().get("uptime_seconds")) or 0,
        )
        info = GaugeMetricFamily(
            f"{PREFIX}_build_info",
            "Always 1; the labels say which build runs.",
            labels=["version", "python", "collector_id"],
        )
        info.add_metric([package_version(), platform.python_version(), c.collector_id], 1)
        yield info


def _gauge(name: str, text: str, flag: object) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", text, value=1.0 if flag else 0.0)


def _histogram(name: str, text: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in histogram.cumulative()
    ]
    return HistogramMetricFamily(f"{PREFIX}_{name}", text, buckets=buckets, sum_value=histogram.sum)


def _int(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class MetricsServer:
    """``/metrics`` and ``/healthz`` for one collector on ``host:port`` (``port=0``: any free
    port, see :attr:`port`). ``await start()``, ``await aclose()``; or ``async with``."""

    def __init__(
        self,
        collector: Collector,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.collector = collector
        self.host = host
        self.port = port
        self.thresholds = dict(thresholds or {})
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CollectorMetrics(collector, self.thresholds))
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("metrics and /healthz on http://%s:%d", self.host, self.port)

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def answer(self, method: str, path: str) -> tuple[int, bytes, bytes]:
        """(HTTP status, content type, body) for one request (pure apart from the clock)."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, b"text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, _CONTENT_TYPE, self.render()
        if path == "/healthz":
            healthy, reason = healthz(self.collector, time.time(), **self.thresholds)
            body = f"{'ok' if healthy else 'unhealthy'}: {reason}\n".encode()
            return (200 if healthy else 503), b"text/plain; charset=utf-8", body
        return 404, b"text/plain", b"not found: try /metrics or /healthz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_REQUEST:
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                return
            status, content_type, body = self.answer(parts[0], parts[1])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                b"".join(
                    _lines(
                        f"HTTP/1.1 {status} {reason}",
                        f"Content-Type: {content_type.decode()}",
                        f"Content-Length: {len(body)}",
                        "Connection: close",
                    )
                )
                + b"\r\n"
                + (b"" if parts[0] == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:  # one bad scrape must never stop the server
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            if task is not None:
                self._handlers.discard(task)


def _lines(*lines: str) -> Iterable[bytes]:
    for line in lines:
        yield line.encode("latin-1") + b"\r\n"
