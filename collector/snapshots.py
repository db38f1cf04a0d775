"""Cold snapshots from REST: the leader answers ``P:snapshot`` requests without a WebSocket message.

A client that wants the current value of topics nobody streams (docs/client.md, "Snapshots")
subscribes to their channels, then PUBLISHes a request on ``P:snapshot``::

    {"id": "<request id>", "client": "<client id>", "topics": ["ticker:KRW-ETH", ...]}

The leader (only it listens) validates the request (:func:`parse_request`: size, count, the
contract's topic rules, public topics only, known markets), bounds what each client may have
waiting, and answers every topic that is **not live** with one REST call per group of topics
(:func:`collector.quotation.plan_calls`): the answer, in the stream's shape with ``stream_type``
``REST``, is published on the topic's channel through the outbox and the fenced publisher, like any
event, but not written to ``P:last:{topic}``: the requester is subscribed to the channel, and a
request must not create keys (grouped-book topics alone are countless). What it cannot answer (a
refused topic, a live one, a REST failure, a client with too many requests waiting) is said in a
``snapshot`` notice on ``P:notices`` (``{"event":"snapshot","id":...,"client":..., "failed":{topic:
reason}}``), so the client falls back to its transient intent at once rather than at its timeout.
Live topics are left to the stream: the client reads them from the last-value cache.

Bounds (hostile input is normal input): a request over ``max_request_bytes`` or naming more than
``max_topics`` topics is refused whole; each client id may have ``per_client`` requests waiting (a
client that asks one after the other never has more than one; a flood from one id is refused beyond
it); at most ``max_pending`` requests wait (beyond that a request is refused with a notice), and
requests waiting together are answered together (their topics merged, so a burst of clients asking
for the same market costs one REST call), with at most ``max_calls`` REST calls per such batch (the
topics beyond fail with "busy" and their clients fall back at once). Refusal notices are themselves
limited to ``notices_per_second``. REST pacing is :class:`collector.quotation.QuotationClient`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from redis.asyncio import Redis

from upbit_fanout.collector._log import log
from upbit_fanout.collector.budget import RateBudget
from upbit_fanout.collector.exchange import ExchangeError
from upbit_fanout.collector.outbox import Outbox
from upbit_fanout.collector.quotation import REST, QuotationClient, answers, plan_calls
from upbit_fanout.collector.routing import Outgoing
from upbit_fanout.collector.status import LogLimiter, Status
from upbit_fanout.subscriptions.backoff import backoff
from upbit_fanout.subscriptions.codec import encode_event
from upbit_fanout.subscriptions.connection import REDIS_FAILURES
from upbit_fanout.subscriptions.errors import CodecError, InvalidTopicError
from upbit_fanout.subscriptions.keys import MAX_CLIENT_ID, Keys, is_client_id
from upbit_fanout.subscriptions.topics import Topic, parse_topic

__all__ = ["SnapshotRequest", "SnapshotServer", "parse_request"]


MAX_REQUEST_BYTES: Final = 8192
MAX_TOPICS: Final = 100


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A parsed request: ``topics`` valid, ``refused`` ``{topic text: reason}``."""

    id: str
    client: str
    topics: tuple[Topic, ...]
    refused: Mapping[str, str]


def _word(value: Any, limit: int) -> str | None:
    """``value`` when it is a client id (the contract's alphabet) of at most ``limit``."""
    if not isinstance(value, str) or len(value) > limit or not is_client_id(value):
        return None
    return value


def parse_request(
    data: bytes,
    *,
    max_bytes: int = MAX_REQUEST_BYTES,
    max_topics: int = MAX_TOPICS,
    markets: Container[str] | None = None,
) -> SnapshotRequest | str:
    """The request in ``data``, or why it is refused whole (a string).

    Each topic is checked as an intent is (:func:`subscriptions.topics.parse_topic`), must be a
    public quotation topic and, when ``markets`` is known, name a listed market; a topic that
    fails is refused alone, with its reason.
    """
    if len(data) > max_bytes:
        return f"request of {len(data)} bytes, more than {max_bytes}"
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(body, dict):
        return "not a JSON object"
    request_id = _word(body.get("id"), MAX_CLIENT_ID)
    client = _word(body.get("client"), MAX_CLIENT_ID)
    if request_id is None or client is None:
        return "id and client must be 1-128 of A-Z a-z 0-9 _ . - @"
    texts = body.get("topics")
    if not isinstance(texts, list) or not texts:
        return "topics must be a non-empty list"
    if len(texts) > max_topics:
        return f"{len(texts)} topics, more than the {max_topics} a request may name"
    topics: list[Topic] = []
    refused: dict[str, str] = {}
    for text in texts:
        if not isinstance(text, str) or len(text) > 64:
            refused[str(text)[:64]] = "not a topic"
            continue
        try:
            topic = parse_topic(text)
        except InvalidTopicError as exc:
            refused[text] = exc.reason
            continue
        if topic.is_private or topic.code is None:
            refused[text] = "private topics have no REST snapshot"
        elif markets is not None and topic.code not in markets:
            refused[text] = f"unknown market {topic.code}"
        else:
            topics.append(topic)
    return SnapshotRequest(request_id, client, tuple(dict.fromkeys(topics)), refused)


class SnapshotServer:
    """Listens on ``P:snapshot`` while leader and answers cold topics from REST.

    Counters: ``requests``, ``refused`` (requests refused whole or not queued), ``answered`` (topics
    answered from REST), ``failed`` (topics not answered), ``rest_calls``.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        client: QuotationClient,
        outbox: Outbox[Outgoing],
        status: Status,
        codec: Literal["json", "msgpack"],
        live: Callable[[], frozenset[str]],
        markets: Callable[[], Container[str] | None],
        per_client: int = 10,
        max_pending: int = 100,
        max_calls: int = 50,
        notices_per_second: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._client = client
        self._outbox = outbox
        self._status = status
        self._codec: Literal["json", "msgpack"] = codec
        self._live = live
        self._markets = markets
        self._per_client = per_client
        self._max_pending = max_pending
        self._max_calls = max_calls
        self._clock = clock
        self._waiting: dict[str, int] = {}  # client id -> its requests waiting (bounded)
        self._notices = RateBudget([(notices_per_second, 1.0)])
        self._pending: list[SnapshotRequest] = []
        self._wake = asyncio.Event()
        self._logs = LogLimiter(10.0)
        self.requests = 0
        self.refused = 0
        self.answered = 0
        self.failed = 0
        self.rest_calls = 0

    async def run(self) -> None:
        """Listen and answer until cancelled; a crash of either half ends both (and reaches the
        service's supervisor, which logs it and restarts the task)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(), name="collector-snapshots-listener")
            group.create_task(self._work(), name="collector-snapshots-worker")

    # -- requests in ----------------------------------------------------------------------------
    async def _listen(self) -> None:
        delays = backoff(0.2, 5.0)
        channel = self._keys.snapshot_requests
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None:
                        continue
                    if message.get("type") == "subscribe":
                        delays = backoff(0.2, 5.0)
                        continue
                    data = message.get("data")
                    if message.get("type") == "message" and isinstance(data, bytes | str):
                        self.receive(data.encode() if isinstance(data, str) else data)
            except REDIS_FAILURES as exc:
                allowed, held = self._logs.allow("listen")
                if allowed:
                    log.warning(
                        "snapshots: cannot listen on %s (%s; %d similar held back)",
                        channel,
                        exc,
                        held,
                    )
            finally:
                try:
                    async with asyncio.timeout(2.0):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                except (*REDIS_FAILURES, TimeoutError):
                    pass
            await asyncio.sleep(next(delays))

    def receive(self, data: bytes) -> None:
        """One request from the channel: validate, bound, queue (never raises)."""
        self.requests += 1
        request = parse_request(data, markets=self._markets())
        if isinstance(request, str):
            self.refused += 1
            allowed, held = self._logs.allow("refused")
            if allowed:
                log.warning(
                    "snapshots: refused a request (%s; %d similar held back)", request, held
                )
            return
        waiting = self._waiting.get(request.client, 0)
        if waiting >= self._per_client:
            self.refused += 1
            self._answer_failed(request, "too many snapshot requests waiting from this client")
            return
        if len(self._pending) >= self._max_pending:
            self.refused += 1
            self._answer_failed(request, "too many snapshot requests waiting")
            return
        self._waiting[request.client] = waiting + 1
        self._pending.append(request)
        self._wake.set()

    # -- answers out ----------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._answer(batch)
                finally:
                    for request in batch:
                        left = self._waiting.pop(request.client, 1) - 1
                        if left > 0:
                            self._waiting[request.client] = left

    async def _answer(self, batch: list[SnapshotRequest]) -> None:
        live = self._live()
        wanted = {t for request in batch for t in request.topics if str(t) not in live}
        done: dict[Topic, bytes] = {}
        errors: dict[Topic, str] = {}
        calls = plan_calls(wanted)
        for call in calls[self._max_calls :]:  # bounded work per batch: the rest fall back
            for topic in call.topics:
                errors[topic] = "busy: too many REST calls at once"
        for call in calls[: self._max_calls]:
            self.rest_calls += 1
            try:
                body = await self._client.get(call)
            except ExchangeError as exc:
                for topic in call.topics:
                    errors[topic] = f"REST: {exc}"
                continue
            for topic, payload in answers(call, body, stream_type=REST).items():
                try:
                    done[topic] = encode_event(payload, self._codec)
                except CodecError:
                    errors[topic] = "REST answer not encodable"
        live = self._live()  # a topic that went live meanwhile is left to the stream
        items = [
            # published only: the requester is subscribed, and a request must not create keys
            # (grouped-book topics are countless: P:last would grow without bound)
            Outgoing(str(topic), payload, topic.type, last=False)
            for topic, payload in done.items()
            if str(topic) not in live
        ]
        self._outbox.put_many(items)
        self.answered += len(items)
        if items:
            self._status.count("rest_snapshots", len(items))
        for request in batch:
            failed = dict(request.refused)
            for topic in request.topics:
                text = str(topic)
                if topic in done and text not in live:
                    continue
                if text in live:
                    failed[text] = "live: read its last value"
                else:
                    failed[text] = errors.get(topic, "not in Upbit's REST answer")
            if failed:
                self.failed += len(failed)
                self._notice(request, failed)

    def _answer_failed(self, request: SnapshotRequest, reason: str) -> None:
        failed = dict(request.refused)
        failed.update({str(topic): reason for topic in request.topics})
        self.failed += len(failed)
        self._notice(request, failed)

    def _notice(self, request: SnapshotRequest, failed: Mapping[str, str]) -> None:
        now = self._clock()
        if not self._notices.allowed(now):
            return  # the client falls back at its own deadline
        self._notices.record(now)
        self._status.notice("snapshot", id=request.id, client=request.client, failed=dict(failed))
