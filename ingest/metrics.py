"""Prometheus metrics of one ingest worker (its own registry), the consumer lag, and the HTTP
endpoint serving /metrics and /healthz."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from core.events import stream_id_ms
from core.redis_conn import RedisClient

log = logging.getLogger(__name__)
DELAY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.applied = Counter("ctr_ingest_events", "Events applied to histories", registry=r)
        self.dead_letters = Counter(
            "ctr_ingest_dead_letters", "Entries sent to dead-letter", ["reason"], registry=r
        )
        self.duplicates = Counter("ctr_ingest_duplicates", "Duplicate events skipped", registry=r)
        self.late = Counter("ctr_ingest_late", "Events older than the dedupe window", registry=r)
        self.redis_errors = Counter(
            "ctr_ingest_redis_errors", "Redis errors, by step", ["op"], registry=r
        )
        self.lag_entries = Gauge(
            "ctr_ingest_lag_entries",
            "Entries not yet delivered to the group",
            ["stream"],
            registry=r,
        )
        self.pending_entries = Gauge(
            "ctr_ingest_pending_entries",
            "Entries delivered, not yet acknowledged",
            ["stream"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "ctr_ingest_lag_seconds",
            "Age of the oldest entry not yet acknowledged",
            ["stream"],
            registry=r,
        )
        self.apply_delay = Histogram(
            "ctr_ingest_apply_delay_seconds",
            "From XADD to applied",
            buckets=DELAY_BUCKETS,
            registry=r,
        )


@dataclass
class GroupLag:
    lag: int | None  # undelivered entries; None when Redis cannot tell (before 7.0, or trimmed)
    pending: int
    oldest_ms: int | None  # XADD time of the oldest entry not yet acknowledged


def group_lag(client: RedisClient, stream: str, group: dict) -> GroupLag:
    """The lag of one group (an XINFO GROUPS entry), with one more command to date it."""
    pending, lag = int(group["pending"]), group.get("lag")
    oldest = client.xpending(stream, _text(group["name"]))["min"] if pending else None
    if oldest is None and (lag is None or lag):  # nothing pending: the next undelivered
        after = f"({_text(group['last-delivered-id'])}"
        first = client.xrange(stream, min=after, count=1)
        oldest = first[0][0] if first else None
    return GroupLag(None if lag is None else int(lag), pending, oldest and stream_id_ms(oldest))


def record_lag(metrics: IngestMetrics, stream: str, lag: GroupLag, now_ms: int) -> None:
    metrics.pending_entries.labels(stream=stream).set(lag.pending)
    if lag.lag is not None:
        metrics.lag_entries.labels(stream=stream).set(lag.lag)
    behind = 0.0 if lag.oldest_ms is None else max(0.0, (now_ms - lag.oldest_ms) / 1000)
    metrics.lag_seconds.labels(stream=stream).set(behind)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Heartbeat:
    """Each consumer loop beats once per pass; the worker is alive while every loop does."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._beats: dict[str, float] = {}

    def beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def alive(self) -> bool:
        now = time.monotonic()
        return all(now - beat < self.max_age_s for beat in self._beats.values())


def serve_http(
    port: int, registry: CollectorRegistry, alive: Callable[[], bool]
) -> ThreadingHTTPServer:
    """GET /metrics (Prometheus text) and GET /healthz (200 while alive(), else 503) on a
    daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = alive()
                self._answer(200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # probes would flood the log
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on port %d", server.server_address[1])
    return server
