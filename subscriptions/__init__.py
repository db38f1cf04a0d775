"""The contract both sides share: topics, Redis names, codecs, leases and reconciliation.

Pure code, plus the small helpers both sides need (backoff, redaction, Redis URLs, the version):
nothing here runs a task or opens a socket by itself. The collector (``collector``) and the client
library (``client``) both build on it, so they cannot disagree about a key name or a topic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upbit_fanout.subscriptions.codec import (
        CODECS,
        CodecName,
        decode_event,
        detect_codec,
        encode_event,
    )
    from upbit_fanout.subscriptions.errors import (
        CodecError,
        FrameError,
        InvalidTopicError,
        UpbitErrorFrame,
        UpbitFanoutError,
        UpstreamError,
    )
    from upbit_fanout.subscriptions.keys import Keys
    from upbit_fanout.subscriptions.lease import heartbeat_commands, lease_ms, release_commands
    from upbit_fanout.subscriptions.reconcile import (
        DesiredState,
        Entry,
        Subscription,
        desired_state,
        next_message,
        subscription_for,
    )
    from upbit_fanout.subscriptions.topics import (
        TOPIC_TYPES,
        Topic,
        parse_topic,
        parse_topics,
        split_valid,
    )

__all__ = [
    "CODECS",
    "TOPIC_TYPES",
    "CodecError",
    "CodecName",
    "DesiredState",
    "Entry",
    "FrameError",
    "InvalidTopicError",
    "Keys",
    "Subscription",
    "Topic",
    "UpbitErrorFrame",
    "UpbitFanoutError",
    "UpstreamError",
    "decode_event",
    "desired_state",
    "detect_codec",
    "encode_event",
    "heartbeat_commands",
    "lease_ms",
    "next_message",
    "parse_topic",
    "parse_topics",
    "release_commands",
    "split_valid",
    "subscription_for",
]

# Imported on first use: a module of this package (``subscriptions.version`` for ``--version``)
# must not pay for the codecs' imports (orjson, msgpack) when it needs none of them.
_WHERE: dict[str, str] = {
    "CODECS": "upbit_fanout.subscriptions.codec",
    "CodecError": "upbit_fanout.subscriptions.errors",
    "CodecName": "upbit_fanout.subscriptions.codec",
    "DesiredState": "upbit_fanout.subscriptions.reconcile",
    "Entry": "upbit_fanout.subscriptions.reconcile",
    "FrameError": "upbit_fanout.subscriptions.errors",
    "InvalidTopicError": "upbit_fanout.subscriptions.errors",
    "Keys": "upbit_fanout.subscriptions.keys",
    "Subscription": "upbit_fanout.subscriptions.reconcile",
    "TOPIC_TYPES": "upbit_fanout.subscriptions.topics",
    "Topic": "upbit_fanout.subscriptions.topics",
    "UpbitErrorFrame": "upbit_fanout.subscriptions.errors",
    "UpbitFanoutError": "upbit_fanout.subscriptions.errors",
    "UpstreamError": "upbit_fanout.subscriptions.errors",
    "decode_event": "upbit_fanout.subscriptions.codec",
    "desired_state": "upbit_fanout.subscriptions.reconcile",
    "detect_codec": "upbit_fanout.subscriptions.codec",
    "encode_event": "upbit_fanout.subscriptions.codec",
    "heartbeat_commands": "upbit_fanout.subscriptions.lease",
    "lease_ms": "upbit_fanout.subscriptions.lease",
    "next_message": "upbit_fanout.subscriptions.reconcile",
    "parse_topic": "upbit_fanout.subscriptions.topics",
    "parse_topics": "upbit_fanout.subscriptions.topics",
    "release_commands": "upbit_fanout.subscriptions.lease",
    "split_valid": "upbit_fanout.subscriptions.topics",
    "subscription_for": "upbit_fanout.subscriptions.reconcile",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'upbit_fanout.subscriptions' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
