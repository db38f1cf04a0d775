"""The contract both sides share: topics, Redis names, codecs, leases and reconciliation.

Pure code, plus the small helpers both sides need (backoff, redaction, Redis URLs, the version):
nothing here runs a task or opens a socket by itself. The collector (``collector``) and the client
library (``client``) both build on it, so they cannot disagree about a key name or a topic.
"""

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
