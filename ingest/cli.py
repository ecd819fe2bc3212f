"""ctr-ingest: apply behaviour events from the Redis streams to users' histories, until
SIGTERM or SIGINT (the current batch is finished and acknowledged first).

    ctr-ingest                 # or: python -m ingest.cli
    CTR_REDIS_URL=redis://127.0.0.1:6379/0 CTR_NAMESPACE=din ctr-ingest

Every setting is a CTR_* environment variable (ingest/config.py). GET :9100/metrics serves
Prometheus metrics and GET :9100/healthz answers 200 while every consumer loop turns.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import redis
from pydantic import ValidationError

from app.logs import configure_logging
from core.redis_conn import (
    REDIS_ERRORS,
    RedisTooOld,
    require_redis_version,
    unreachable_message,
)
from ingest.config import IngestSettings
from ingest.metrics import serve_http
from ingest.worker import Worker

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="ctr-ingest", description=__doc__.split("\n\n")[0]).parse_args(
        argv
    )
    try:
        settings = IngestSettings()
    except ValidationError as error:
        return fail(f"invalid setting: {error.errors()[0]['loc'][0]}: {error.errors()[0]['msg']}")
    configure_logging(settings.log_level)
    worker = Worker(settings)
    try:
        require_redis_version(worker.client)
    except RedisTooOld as error:
        return fail(str(error))
    except redis.AuthenticationError as error:  # waiting would not fix it
        return fail(unreachable_message(settings.redis_url, error))
    except REDIS_ERRORS as error:  # checked again once it answers
        log.warning("Redis does not answer yet (%s); waiting for it", type(error).__name__)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    server = None
    if settings.ingest_metrics_port:
        server = serve_http(settings.ingest_metrics_port, worker.metrics.registry, worker.alive)
    log.info(
        "ingesting",
        extra={
            "consumer": settings.ingest_consumer,
            "group": settings.ingest_group,
            "streams": worker.streams,
        },
    )
    try:
        worker.run(stop)
    finally:
        if server is not None:
            server.shutdown()
    log.info("stopped", extra={"consumer": settings.ingest_consumer, "failed": worker.failed})
    return 1 if worker.failed else 0


def fail(reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
