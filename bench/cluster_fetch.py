"""Row fetch on a 3-master Redis Cluster against one Redis: the same request, the cache off.

RowFetcher.fetch_tables for one request of 150 distinct item rows, repeated; on the cluster it
is one MGET per slot, pipelined in one round trip per node (redis-py's mget_nonatomic).

    python -m bench.cluster_fetch                  # 200 timed fetches per layout
    python -m bench.cluster_fetch --repeats 1000 --rows 300

Prints a table and writes bench/results/cluster_fetch.json.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack

import numpy as np

from app.bundle import load_bundle
from app.cache import RowCache
from app.features import RowFetcher
from bench.common import write_json
from bench.report import print_table
from bench.servers import redis_binaries
from core import keys
from core.local_redis import LocalRedis, LocalRedisCluster
from core.redis_conn import connect_redis
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle

NAMESPACE = "bench"
N_ITEMS = 20_000
WARM_UP = 20


def fetch_seconds(client, ids: list[str], repeats: int) -> np.ndarray:
    """Per-call seconds of fetch_tables for one request, after a warm-up."""
    version = publish_bundle(client, NAMESPACE, synthetic_bundle(N_ITEMS), progress=False).version
    bundle = load_bundle(client, NAMESPACE, version, "cpu", 1)
    fetcher = RowFetcher(client, NAMESPACE, RowCache(0))
    wanted = {"item": ids}
    for _ in range(WARM_UP):
        fetcher.fetch_tables(bundle, wanted)
    seconds = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        fetcher.fetch_tables(bundle, wanted)
        seconds[i] = time.perf_counter() - started
    return seconds


def summary(seconds: np.ndarray) -> dict:
    ms = seconds * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def layout_of(cluster_client, ids: list[str]) -> dict:
    row_keys = keys.row_keys(NAMESPACE, "v1", "item", ids)
    slots = {cluster_client.keyslot(k) for k in row_keys}
    nodes = {cluster_client.nodes_manager.get_node_from_slot(s).name for s in slots}
    return {"slots": len(slots), "nodes": len(nodes)}


def run(rows: int, repeats: int) -> dict:
    binary = redis_binaries()[0]
    ids = np.random.default_rng(0).choice(N_ITEMS, rows, replace=False)
    ids = [f"s{i}" for i in ids]
    with ExitStack() as stack:
        single = LocalRedis(binary=binary.path).start()
        stack.callback(single.stop)
        cluster = LocalRedisCluster(binary=binary.path).start()
        stack.callback(cluster.stop)
        one = stack.enter_context(connect_redis(single.url, timeout_s=30.0))
        many = stack.enter_context(connect_redis(cluster.url, cluster=True, timeout_s=30.0))
        result = {
            "redis_server": binary.version,
            "rows": rows,
            "repeats": repeats,
            "single": summary(fetch_seconds(one, ids, repeats)),
            "cluster": summary(fetch_seconds(many, ids, repeats)),
            "cluster_layout": layout_of(many, ids),
        }
    result["cluster_over_single_p50"] = result["cluster"]["p50_ms"] / result["single"]["p50_ms"]
    return result


def table(result: dict) -> tuple:
    layout = result["cluster_layout"]
    rows = [
        ["one redis-server (1 MGET)", *_cells(result["single"])],
        [f"cluster, 3 masters ({layout['slots']} MGETs)", *_cells(result["cluster"])],
    ]
    title = (
        f"Row fetch, {result['rows']} rows, cache off, {result['repeats']} repeats "
        f"(redis {result['redis_server']}): cluster/single p50 = "
        f"{result['cluster_over_single_p50']:.1f}x"
    )
    return title, ["layout", "p50 ms", "p99 ms", "mean ms"], rows


def _cells(stats: dict) -> list[str]:
    return [f"{stats[k]:.3f}" for k in ("p50_ms", "p99_ms", "mean_ms")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    result = run(args.rows, args.repeats)
    print_table(*table(result))
    print(f"wrote {write_json('cluster_fetch.json', result)}")


if __name__ == "__main__":
    main()
