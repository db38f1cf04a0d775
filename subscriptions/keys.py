"""Every Redis key and channel name of the contract, built in one place (docs/contract.md, "Keys and
channels"). Nobody else formats ``f"upbit:..."``: ask a :class:`Keys` instead.

``P`` below is the key prefix (setting ``key_prefix``, default ``upbit``):

=====================  ===========================  =========================================
name                   kind                         meaning
=====================  ===========================  =========================================
P:intents:{client_id}  SET with TTL (the lease)     topics one client wants
P:control              channel                      "my intents changed" (payload: client_id)
P:union                SET                          what the collector last requested upstream
P:status               HASH                         collector state and counters
P:notices              channel (JSON)               connected/disconnected/subscribed/error/gap
P:last:{topic}         STRING                       last payload of the topic
P:{topic}              channel                      the events, e.g. upbit:ticker:KRW-BTC
P:stream:{type}        STREAM (capped)              durable copy of myOrder / myAsset events
P:stream:{type}:seen   ZSET (capped, TTL)           recent event identities of that stream
P:private:mark         STRING (epoch ms)            the private socket was recording until then
P:leader               STRING with PX TTL           "{token} {collector_id}" of the lease holder
P:leader:token         STRING (counter)             fencing token, incremented on every takeover
P:invalid              HASH                         "client_id topic" -> why it was refused
P:canary               channel                      the leader's delivery probe (collector only)
P:snapshot             channel (JSON)               a client asks for cold snapshots from REST
P:standby:{id}         STRING with PX TTL           a standby collector saying it is there
=====================  ===========================  =========================================

In Redis Cluster mode (``Keys(prefix, cluster=True)``, docs/contract.md "Redis Cluster") the
channels, intents, streams and ``P:control`` / ``P:notices`` keep their names; the collector's own
keys share one hash slot (``{P}:leader``, ``{P}:leader:token``, ``{P}:status``, ``{P}:union``,
``{P}:invalid``, ``{P}:private:mark``, ``{P}:standby:{id}``) so that its scripts and transactions
stay in one slot; a topic's last value carries its channel as hash tag
(``P:last:{P:ticker:KRW-BTC}``) and a stream's seen set its stream's name
(``P:stream:{P:stream:myOrder}:seen``), so each lives on the node of what it belongs to; and
``P:fence:{N}`` are the per-node copies of the leader's fencing value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from upbit_fanout.subscriptions.topics import Topic

__all__ = [
    "CANARY_TOPIC",
    "CLIENT_ID_CHARS",
    "MAX_CLIENT_ID",
    "Keys",
    "invalid_field",
    "is_client_id",
    "split_invalid_field",
]

CANARY_TOPIC = "canary"
"""The pseudo-topic of the canary: published like any topic (``P:canary``, ``P:last:canary``);
never a valid market topic (no ``type:code`` form), so no client can ask for it."""

CLIENT_ID_CHARS = r"A-Za-z0-9_.\-@"
"""The characters of a client id (a regex character-class body): letters, digits and ``_.-@``."""
MAX_CLIENT_ID = 128
"""The longest client id the contract allows."""
_CLIENT_ID = re.compile(f"[{CLIENT_ID_CHARS}]{{1,{MAX_CLIENT_ID}}}")


def is_client_id(text: str) -> bool:
    """True when ``text`` is a client id of the contract (1-128 of A-Z a-z 0-9 _ . - @)."""
    return _CLIENT_ID.fullmatch(text) is not None


def invalid_field(client_id: str, topic: str | None = None) -> str:
    """A field of ``P:invalid``: ``"{client_id}"`` (the client's summary) or
    ``"{client_id} {topic}"`` (why that topic was refused)."""
    return client_id if topic is None else f"{client_id} {topic}"


def split_invalid_field(field: str) -> tuple[str, str | None]:
    """``(client_id, topic)`` of a ``P:invalid`` field; topic None for the client's summary."""
    client_id, space, topic = field.partition(" ")
    return client_id, (topic if space else None)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key and channel names under one prefix."""

    prefix: str = "upbit"
    cluster: bool = False
    """Redis Cluster names (see the module docstring and docs/contract.md, "Redis Cluster")."""
    _intents_prefix: str = field(init=False, repr=False, compare=False)
    _own: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            not self.prefix
            or ":" in self.prefix
            or any(ch.isspace() or ch in "{}" for ch in self.prefix)
        ):
            raise ValueError(
                f"key prefix {self.prefix!r} must be non-empty, without ':', braces or spaces"
            )
        object.__setattr__(self, "_intents_prefix", f"{self.prefix}:intents:")
        # The collector's own keys: one hash slot in a cluster ({P}), the plain prefix otherwise.
        object.__setattr__(self, "_own", f"{{{self.prefix}}}" if self.cluster else self.prefix)

    def clustered(self) -> Keys:
        """The same prefix with Redis Cluster names."""
        return self if self.cluster else Keys(self.prefix, cluster=True)

    # -- written by clients -------------------------------------------------------------------
    def intents(self, client_id: str) -> str:
        """The intent SET of one client (its lease is the key's TTL)."""
        if not is_client_id(client_id):
            raise ValueError(
                f"client id {client_id!r} must be 1-128 characters of letters, digits and _.-@"
            )
        return f"{self._intents_prefix}{client_id}"

    @property
    def intents_pattern(self) -> str:
        """``SCAN MATCH`` / ``PSUBSCRIBE`` pattern for every intent key."""
        return f"{self._intents_prefix}*"

    def client_id_of(self, intents_key: str) -> str | None:
        """The client id in an intent key, or None if the key is not one."""
        if intents_key.startswith(self._intents_prefix):
            client_id = intents_key[len(self._intents_prefix) :]
            return client_id or None
        return None

    @property
    def control(self) -> str:
        return f"{self.prefix}:control"

    @property
    def snapshot_requests(self) -> str:
        """Channel of cold-snapshot requests (JSON; docs/contract.md, "Cold snapshots")."""
        return f"{self.prefix}:snapshot"

    # -- written by the collector -------------------------------------------------------------
    @property
    def union(self) -> str:
        return f"{self._own}:union"

    @property
    def status(self) -> str:
        return f"{self._own}:status"

    @property
    def notices(self) -> str:
        return f"{self.prefix}:notices"

    @property
    def leader(self) -> str:
        return f"{self._own}:leader"

    @property
    def leader_token(self) -> str:
        """The fencing-token counter (``INCR`` on every takeover; never expires)."""
        return f"{self._own}:leader:token"

    @property
    def invalid(self) -> str:
        return f"{self._own}:invalid"

    @property
    def canary(self) -> str:
        """The channel of the collector's delivery probe (``channel(CANARY_TOPIC)``)."""
        return self.channel(CANARY_TOPIC)

    def standby(self, collector_id: str) -> str:
        """Where a standby collector says it is alive (a STRING with a TTL)."""
        return f"{self._own}:standby:{collector_id}"

    @property
    def standby_pattern(self) -> str:
        return f"{self._own}:standby:*"

    def channel(self, topic: Topic | str) -> str:
        """The pub/sub channel carrying a topic's events, e.g. ``upbit:ticker:KRW-BTC``."""
        return f"{self.prefix}:{topic}"

    def last(self, topic: Topic | str) -> str:
        """The last-value key of a topic, e.g. ``upbit:last:ticker:KRW-BTC``; in a cluster
        ``upbit:last:{upbit:ticker:KRW-BTC}``, in the slot of the topic's channel."""
        if self.cluster:
            return f"{self.prefix}:last:{{{self.prefix}:{topic}}}"
        return f"{self.prefix}:last:{topic}"

    def stream(self, type_name: str) -> str:
        """The capped STREAM keeping private events of one type (myOrder, myAsset)."""
        return f"{self.prefix}:stream:{type_name}"

    def stream_seen(self, type_name: str) -> str:
        """The recent-identity ZSET of a stream (member: identity, score: epoch ms), for dedupe;
        in a cluster ``P:stream:{P:stream:TYPE}:seen``, in the slot of its stream."""
        if self.cluster:
            return f"{self.prefix}:stream:{{{self.prefix}:stream:{type_name}}}:seen"
        return f"{self.prefix}:stream:{type_name}:seen"

    def fence(self, tag: str) -> str:
        """A cluster node's copy of the leader's fencing value, ``P:fence:{tag}`` (the tag is
        chosen so that the key lives on that node; docs/contract.md, "Redis Cluster")."""
        return f"{self.prefix}:fence:{{{tag}}}"

    @property
    def fence_pattern(self) -> str:
        return f"{self.prefix}:fence:*"

    @property
    def private_mark(self) -> str:
        """Epoch ms until which the leader's private socket was known up and recording."""
        return f"{self._own}:private:mark"

    def keyspace_pattern(self, db: int) -> str:
        """PSUBSCRIBE pattern for keyspace notifications about intent keys in database ``db``."""
        return f"__keyspace@{db}__:{self.intents_pattern}"

    @staticmethod
    def keyevent_channel(db: int, event: str) -> str:
        """The channel of keyevent notifications ``event`` in database ``db`` (its messages
        carry the key's name); Redis's name, not under the prefix."""
        return f"__keyevent@{db}__:{event}"

    def keyspace_key(self, channel: str) -> str | None:
        """The key a keyspace-notification channel is about (``__keyspace@0__:KEY`` -> KEY)."""
        if not channel.startswith("__keyspace@"):
            return None
        _, sep, key = channel.partition("__:")
        return key if sep else None
