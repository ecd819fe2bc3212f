"""Run the real service for tests: in-process (TestClient) or as a uvicorn process."""

from __future__ import annotations

from contextlib import contextmanager

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from devtools.local_service import LocalService, wait_ready


@contextmanager
def in_process(redis_url: str, ns: str, ready: bool = True, **overrides):
    settings = Settings(
        **{"redis_url": redis_url, "namespace": ns, "poll_interval_s": 0.5} | overrides
    )
    with TestClient(create_app(settings)) as client:
        if ready:
            wait_ready(client.get)
        yield client


@contextmanager
def service_process(redis_url: str, ns: str, **settings):
    service = LocalService(redis_url, ns, **settings).start()
    try:
        yield service
    finally:
        service.stop()
