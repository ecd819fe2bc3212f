"""Run the real service as a uvicorn process on a loopback port (tests, benchmarks, the demo).

service = LocalService(redis_url, "din", log_path=Path("service.log")).start()
service.wait_ready()            # the /readyz body once it answers 200
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from devtools.local_redis import free_port, stop_process


def wait_ready(
    get: Callable[[str], httpx.Response],
    timeout_s: float = 30.0,
    version: str | None = None,
    alive: Callable[[], bool] = lambda: True,
) -> dict:
    """Poll GET /readyz (any client's `get`) until 200, on `version` when one is named."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline and alive():
        try:
            response = get("/readyz")
            body = response.json()
            if response.status_code == 200 and (version is None or body["version"] == version):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"service not ready (last /readyz: {body})")


class LocalService:
    """`uvicorn app.main:app`, configured by CTR_* variables built from keyword settings."""

    def __init__(
        self,
        redis_url: str,
        ns: str,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        python: list[str] | None = None,
        detached: bool = False,
        **settings: object,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path, self.python, self.detached = log_path, python, detached
        self.env = {
            **os.environ,
            "CTR_REDIS_URL": redis_url,
            "CTR_NAMESPACE": ns,
            "CTR_LOG_LEVEL": "WARNING",
        }
        self.env |= {f"CTR_{name.upper()}": str(value) for name, value in settings.items()}
        self.process: subprocess.Popen | None = None
        self.ready: dict | None = None  # the last /readyz body seen by wait_ready

    def command(self) -> list[str]:
        """`python` replaces the interpreter, e.g. to run uvicorn under a profiler."""
        return [
            *(self.python or [sys.executable]),
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
        ]

    def start(self) -> LocalService:
        """Start without waiting; a detached service outlives this process (the demo)."""
        if self.log_path is None:
            self.process = subprocess.Popen(
                self.command(), env=self.env, start_new_session=self.detached
            )
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detached,
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0, version: str | None = None) -> dict:
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            try:
                self.ready = wait_ready(client.get, timeout_s, version, alive=self.running)
                return self.ready
            except TimeoutError as error:
                state = "exited" if not self.running() else "not ready"
                raise TimeoutError(f"service {state}; see {self.log_path}: {error}") from None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process, timeout_s=20)
