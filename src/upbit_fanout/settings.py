"""Settings for the command line, read from ``UPBIT_FANOUT_*`` variables and an optional ``.env``.

Only the CLI builds a :class:`Settings`; library classes take typed keyword arguments instead
(configuration at the edge). Secrets are :class:`pydantic.SecretStr`, so printing a
``Settings`` object, or logging it, shows ``**********`` instead of the key.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from upbit_fanout import validate
from upbit_fanout.subscriptions.coalesce import MAX_READ_COALESCE
from upbit_fanout.subscriptions.lease import MIN_LEASE_SECONDS

ENV_PREFIX = "UPBIT_FANOUT_"


class Settings(BaseSettings):
    """Everything the ``upbit-fanout`` commands can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    redis_url: str = "redis://localhost:6379/0"
    key_prefix: str = "upbit"
    upbit_ws_url: str = "wss://api.upbit.com/websocket/v1"
    upbit_private_ws_url: str = "wss://api.upbit.com/websocket/v1/private"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    codec: Literal["json", "msgpack"] = "json"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Metrics and /healthz (see docs/collector.md, "Metrics"); 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # Collector tuning (see docs/collector.md).
    sweep_interval: float = Field(default=2.0, gt=0)
    ping_interval: float = Field(default=15.0, gt=0)
    ping_timeout: float = Field(default=10.0, gt=0)
    max_messages_per_second: int = Field(default=5, ge=1)
    max_messages_per_minute: int = Field(default=100, ge=1)
    private_stream_maxlen: int = Field(default=10_000, ge=1)
    # Private streams (docs/collector.md, "Private streams").
    record_private: bool = True  # with keys: myOrder (all markets) + myAsset always recorded
    upbit_rest_url: str | None = None  # default: next to the private WebSocket URL
    reconcile_lookback: float = Field(default=3600.0, ge=0)
    # Upbit's REST quotation API (docs/collector.md, "REST: cold snapshots and back-fill").
    rest_snapshots: bool = True  # answer cold snapshots from REST (no WebSocket message)
    backfill_max_trades: int = Field(default=2000, ge=0)  # per trade topic and gap; 0: off
    snapshot_requests_per_client: int = Field(default=10, ge=1)  # waiting at once
    private_down_threshold: float = Field(default=60.0, gt=0)  # check: private socket down
    connect_per_second: int = Field(default=5, ge=1)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)  # rate limited (HTTP 429/418)
    backoff_fast_max: float = Field(default=2.0, gt=0)  # refused, reset, 503: back quickly
    queue_size: int = Field(default=10_000, ge=1)
    leader_lease: float = Field(default=10.0, ge=0)  # 0: no leadership (no hot standby)
    collector_id: str | None = None
    redis_grace: float = Field(default=30.0, ge=0)  # intents kept after a Redis outage (s)
    # Upstream protocol (docs/collector.md, "Upstream protocol").
    upstream_format: Literal["DEFAULT", "SIMPLE"] = "DEFAULT"  # republished as DEFAULT anyway
    # the upstream WebSocket client (docs/collector.md, "Upstream transport"); picows: extra fast
    upstream_transport: Literal["websockets", "picows"] = "websockets"
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"  # the collector's; uvloop: extra fast
    # a busy upstream socket's reading rests this long after a read (s; 0: off; docs/collector.md,
    # "Read coalescing")
    read_coalesce: float = Field(default=0.0, ge=0, le=MAX_READ_COALESCE)
    verify_subscriptions: bool = True  # LIST_SUBSCRIPTIONS after sends, within the budget
    verify_delay: float = Field(default=1.0, ge=0)
    warm_seconds: float = Field(default=60.0, ge=0)  # an emptied union keeps its socket this long
    # Hostile-intent limits and the market list (see docs/collector.md, "Limits").
    max_topics_per_client: int = Field(default=1000, ge=1)
    max_union_topics: int = Field(default=5000, ge=1)
    max_request_bytes: int = Field(default=128 * 1024, ge=1024)
    max_topic_length: int = Field(default=64, ge=8)
    max_client_id_length: int = Field(default=128, ge=1, le=128)
    max_lease: float = Field(default=300.0, gt=0)
    lease_grace: float = Field(default=10.0, ge=0)
    invalid_examples: int = Field(default=5, ge=1)
    max_invalid_clients: int = Field(default=1000, ge=1)
    validate_markets: bool = True
    markets_url: str | None = None  # default: derived from the public WebSocket URL
    markets_refresh: float = Field(default=600.0, gt=0)

    # Client defaults (see client/).
    lease_seconds: float = Field(default=30.0, ge=MIN_LEASE_SECONDS)

    # -- checks: each message says what would be right (the CLI prints it on one line) ----------
    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return validate.redis_url(value)

    @field_validator("upbit_ws_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        return validate.ws_url(value)

    @field_validator("upbit_private_ws_url")
    @classmethod
    def _private_ws_url(cls, value: str) -> str:
        # Empty (compose passes empty variables): derived from the public URL.
        return validate.ws_url(value) if value.strip() else ""

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        return validate.host(value)

    @field_validator("upbit_rest_url", "markets_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Unset or empty: derived from the WebSocket URLs.
        return validate.http_url(value) if value else None

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        return validate.key_prefix(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return validate.log_level(value)

    @field_validator("collector_id")
    @classmethod
    def _collector_id(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # a generated host-pid id
        return validate.client_id(value)

    @field_validator("leader_lease")
    @classmethod
    def _leader_lease(cls, value: float) -> float:
        if 0 < value < MIN_LEASE_SECONDS:
            raise ValueError(f"must be 0 (no leadership) or at least {MIN_LEASE_SECONDS:g} s")
        return value

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> Self:
        access = self.access_key is not None and bool(self.access_key.get_secret_value())
        secret = self.secret_key is not None and bool(self.secret_key.get_secret_value())
        if access != secret:
            have, missing = ("ACCESS", "SECRET") if access else ("SECRET", "ACCESS")
            raise ValueError(
                f"{ENV_PREFIX}{have}_KEY is set but {ENV_PREFIX}{missing}_KEY is not: "
                "set both Upbit API keys (private streams) or neither"
            )
        return self

    def has_private_keys(self) -> bool:
        """True when both Upbit keys are configured (private streams possible)."""
        return bool(
            self.access_key is not None
            and self.access_key.get_secret_value()
            and self.secret_key is not None
            and self.secret_key.get_secret_value()
        )
