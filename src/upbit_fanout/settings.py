"""Settings for the command line, read from ``UPBIT_FANOUT_*`` variables and an optional ``.env``.

Only the CLI builds a :class:`Settings`; library classes take typed keyword arguments instead
(STYLE.md: configuration at the edge). Secrets are :class:`pydantic.SecretStr`, so printing a
``Settings`` object, or logging it, shows ``**********`` instead of the key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the ``upbit-fanout`` commands can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="UPBIT_FANOUT_",
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
    private_down_threshold: float = Field(default=60.0, gt=0)  # check: private socket down
    connect_per_second: int = Field(default=5, ge=1)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    queue_size: int = Field(default=10_000, ge=1)
    leader_lease: float = Field(default=10.0, ge=0)  # 0: no leadership (no hot standby)
    collector_id: str | None = None

    # Client defaults (see client/).
    lease_seconds: float = Field(default=30.0, gt=0)

    def has_private_keys(self) -> bool:
        """True when both Upbit keys are configured (private streams possible)."""
        return self.access_key is not None and self.secret_key is not None
