"""Every setting of the service, read from CTR_* environment variables. The settings every
process that talks to the store shares (the service and the ingest worker) are written once,
in StoreSettings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.redis_conn import read_password


class StoreSettings(BaseSettings):
    """Where the store is and how its keys and ids look: one value for every process."""

    model_config = SettingsConfigDict(env_prefix="CTR_", extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0", description="redis:// or rediss:// URL")
    redis_cluster: bool = Field(False, description="treat redis_url as a Redis Cluster node")
    redis_password: SecretStr | None = Field(None, description="Redis AUTH password")
    redis_password_file: Path | None = Field(None, description="file holding the password")
    redis_timeout_s: float = Field(0.5, gt=0, description="per-command Redis timeout")
    namespace: str = Field("din", min_length=1, description="key prefix of the bundles")
    max_id_length: int = Field(64, ge=1, description="characters per raw id or field value")
    stream_partitions: int = Field(
        1, ge=1, le=1024, description="behaviour streams (the same for the service and worker)"
    )
    log_level: str = Field("INFO", description="root log level")

    def password(self) -> str | None:
        secret = self.redis_password.get_secret_value() if self.redis_password else None
        return read_password(secret, self.redis_password_file, env={})  # already read above


class Settings(StoreSettings):
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="onnxruntime device")
    ort_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads")
    worker_threads: int = Field(4, ge=1, description="threads running Redis and inference")
    max_candidates: int = Field(2000, ge=1, description="candidates per request")
    explain_max_candidates: int = Field(50, ge=1, description="candidates per explain request")
    max_history: int = Field(200, ge=1, description="behaviours per explicit history")
    max_events: int = Field(1000, ge=1, description="events per POST /v1/events")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="request body limit")
    cache_rows: int = Field(100_000, ge=0, description="hot-row cache size, 0 disables it")
    pubsub: bool = Field(True, description="follow activations by pub/sub (else poll only)")
    batching: Literal["auto", "on", "off"] = Field(
        "auto", description="micro-batching: auto turns it on when serving on CUDA"
    )
    batch_max_requests: int = Field(16, ge=1, description="requests per coalesced run")
    batch_wait_ms: float = Field(0.5, ge=0, description="how long a run waits for company")
    poll_interval_s: float = Field(2.0, gt=0, description="active-pointer poll fallback")
    request_timeout_s: float = Field(2.0, gt=0, description="whole-request deadline")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins a browser may call the API from (JSON list); none by default",
    )
    api_token: SecretStr | None = Field(
        None,
        description="when set, POST /v1/events and GET /v1/versions* need "
        "'Authorization: Bearer <token>'",
    )
