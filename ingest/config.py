"""Every setting of the ingest worker, read from CTR_* environment variables.

The Redis connection, namespace, id length and partition count share their names (and so
their values, e.g. the ctr-config ConfigMap) with the service's settings.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field

from app.config import StoreSettings
from core.events import DEFAULT_GROUP

DAY_S = 86_400


def default_consumer() -> str:
    """hostname-pid: a container restarted in place (pid 1 again) keeps its name and so reads
    back its own unacknowledged entries at once, without waiting to claim them."""
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestSettings(StoreSettings):
    """The store's settings (shared with the service) and the worker's own."""

    redis_timeout_s: float = Field(
        2.0, gt=0, description="per-command Redis timeout (a blocking read adds its block time)"
    )
    ingest_group: str = Field(DEFAULT_GROUP, min_length=1, description="consumer group")
    ingest_consumer: str = Field(
        default_factory=default_consumer, min_length=1, description="this worker's name"
    )
    ingest_batch: int = Field(500, ge=1, description="entries per read")
    ingest_block_ms: int = Field(2000, ge=1, description="how long a read waits for entries")
    ingest_claim_idle_ms: int = Field(
        60_000, ge=1, description="claim another consumer's entries once idle this long"
    )
    history_ttl_s: int = Field(30 * DAY_S, ge=0, description="user keys expire; 0 = never")
    dedupe_window: int = Field(1000, ge=1, description="event ids remembered per user (at least)")
    ingest_metrics_port: int = Field(
        9100, ge=0, le=65535, description="Prometheus /metrics and /healthz; 0 = off"
    )
    ingest_max_history_fallback: int = Field(
        200, ge=1, description="history length kept while no version is listed"
    )
    ingest_refresh_s: float = Field(
        30.0, gt=0, description="how often the listed versions' manifests are re-read"
    )
    ingest_dead_letter_maxlen: int = Field(
        1_000_000, ge=1, description="dead-letter stream length kept (approximately)"
    )
