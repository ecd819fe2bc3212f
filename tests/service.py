"""Run the real service for tests: in-process (TestClient) or as a uvicorn process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from core.local_redis import free_port


def wait_ready(get, timeout_s: float = 20.0, version: str | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            response = get("/readyz")
            body = response.json()
            if response.status_code == 200 and (version is None or body["version"] == version):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"service not ready (last /readyz: {body})")


@contextmanager
def in_process(redis_url: str, ns: str, ready: bool = True, **overrides):
    settings = Settings(
        **{"redis_url": redis_url, "namespace": ns, "poll_interval_s": 0.5} | overrides
    )
    with TestClient(create_app(settings)) as client:
        if ready:
            wait_ready(client.get)
        yield client


class ServiceProcess:
    """`uvicorn app.main:app` on a free port, configured through CTR_* variables."""

    def __init__(self, redis_url: str, ns: str, output: Path | None = None, **settings) -> None:
        self.port = free_port()
        self.output = output  # stdout and stderr go here when given
        self.env = {
            **os.environ,
            "CTR_REDIS_URL": redis_url,
            "CTR_NAMESPACE": ns,
            "CTR_LOG_LEVEL": "WARNING",
        }
        self.env |= {f"CTR_{k.upper()}": str(v) for k, v in settings.items()}
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
        ]
        log = open(self.output, "ab") if self.output else None  # noqa: SIM115
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        return self

    def wait_ready(self, timeout_s: float = 30.0, version: str | None = None) -> dict:
        with httpx.Client(base_url=self.url) as client:
            return wait_ready(client.get, timeout_s, version)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def service_process(redis_url: str, ns: str, **settings):
    service = ServiceProcess(redis_url, ns, **settings).start()
    try:
        yield service
    finally:
        service.stop()
