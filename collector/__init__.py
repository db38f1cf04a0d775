"""The Upbit side of upbit-fanout: one upstream subscription for every live intent in Redis.

Public API (everything else is internal and may change)::

    from upbit_fanout.collector import Collector

    async with Collector(redis=redis, key_prefix="upbit", upstream_url=URL) as collector:
        await collector.run()          # until collector.stop()

Modules: :mod:`collector.service` (the :class:`Collector` and its tasks), :mod:`collector.intents`
(intent tracking), :mod:`collector.leadership` (the fenced leader lease, ``P:leader``),
:mod:`collector.upstream` (one connection's life), :mod:`collector.status`
(``P:status``, ``P:notices``, ``P:union``, ``P:invalid``), :mod:`collector.decode`,
:mod:`collector.routing`, :mod:`collector.publisher` (the data path), and the pure helpers
:mod:`collector.budget`, :mod:`collector.auth`, :mod:`collector.outbox` (reconnect delays come
from :mod:`subscriptions.backoff`, shared with the client library).
See docs/collector.md.
"""

from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.intents import Plan, plan
from upbit_fanout.collector.service import Collector
from upbit_fanout.collector.status import State

__all__ = ["Collector", "Plan", "RateBudget", "State", "plan"]
