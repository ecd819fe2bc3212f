"""A fresh redis-server holding the benchmark's bundle, published and activated.

python -m bench.stack          # publishes, prints the version, stops
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.model import BenchModel
from bench.servers import RedisBinary, redis_binaries, redis_server
from devtools.local_redis import LocalRedis
from export.publish import publish_bundle

NAMESPACE = "bench"


@dataclass
class Stack:
    server: LocalRedis
    client: object
    ns: str
    version: str

    def args(self) -> tuple:
        """(client, url, ns, version), the arguments of the sections that use Redis."""
        return self.client, self.server.url, self.ns, self.version


@contextmanager
def published_stack(bench: BenchModel, binary: RedisBinary | None = None) -> Iterator[Stack]:
    with redis_server(binary or redis_binaries()[0]) as (server, client):
        manifest = publish_bundle(client, NAMESPACE, bench.bundle, progress=False)
        yield Stack(server, client, NAMESPACE, manifest.version)


if __name__ == "__main__":
    from bench.model import load_bench_model

    with published_stack(load_bench_model()) as stack:
        print(stack.server.url, stack.version, stack.client.dbsize(), "keys")
