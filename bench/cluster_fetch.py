"""A request's row fetch on a 3-master Redis Cluster against one Redis, the cache off.

The benchmark's bundle is published to both; RowFetcher.fetch_tables then reads every row of
one request (C=100 candidates, T=50 behaviours, one row per user and context field), as the
service does: one MGET on one node, one MGET per slot pipelined in one round trip per node
on the cluster (redis-py's mget_nonatomic). Timed like every other figure (median over
repeats of each repeat's p50).

    python -m bench.cluster_fetch

Prints a table and writes bench/results/cluster_fetch.json.
"""

from __future__ import annotations

import zlib
from contextlib import ExitStack

from app.bundle import load_version
from app.cache import RowCache
from app.features import RowFetcher
from bench.common import Latency, ms, time_calls, write_json
from bench.redis_bench import all_keys, request_rows
from bench.report import print_table
from bench.servers import redis_binaries
from bench.workload import Catalogue, catalogue_of, random_slates, score_request
from core.redis_conn import connect_redis
from devtools.local_redis import LocalRedis, LocalRedisCluster
from export.bundle import Bundle
from export.publish import publish_bundle, write_rows

NAMESPACE = "bench"
BUCKETS = (16, 6)


def fetch_latency(client, bundle: Bundle, catalogue: Catalogue) -> tuple[Latency, dict]:
    """fetch_tables of one request's rows, and which tables and keys it read."""
    version = publish_bundle(client, NAMESPACE, bundle, progress=False).version
    loaded = load_version(client, NAMESPACE, version, "cpu", 1)
    fetcher = RowFetcher(client, NAMESPACE, RowCache(0))
    wanted = request_rows(score_request(random_slates(catalogue, 1, seed=2)[0]), loaded)
    return time_calls(lambda: fetcher.fetch_tables(loaded, wanted)), {
        "version": version,
        "keys": all_keys(NAMESPACE, version, wanted),
    }


def layout_of(cluster_client, row_keys: list[str]) -> dict:
    slots = {cluster_client.keyslot(k) for k in row_keys}
    nodes = {cluster_client.nodes_manager.get_node_from_slot(s).name for s in slots}
    return {"keys": len(row_keys), "slots": len(slots), "nodes": len(nodes)}


def bucketed(row_keys: list[str], n: int) -> list[str]:
    """Each key with a hash tag naming one of n buckets, chosen by the key."""
    return [f"{{b{zlib.crc32(k.encode()) % n}}}:{k}" for k in row_keys]


def bucket_variants(one, many, row_keys: list[str], row_bytes: int) -> dict[str, dict]:
    """Bare MGET on one node against mget_nonatomic on the cluster, per key layout."""
    layouts = {"service's keys": row_keys}
    layouts |= {f"{n} hash-tag buckets": bucketed(row_keys, n) for n in BUCKETS}
    found = {}
    for name, layout in layouts.items():
        for client in (one, many):
            write_rows(client, layout, [b"\0" * row_bytes] * len(layout))
        single = time_calls(lambda k=layout: one.mget(k))
        cluster = time_calls(lambda k=layout: many.mget_nonatomic(k))
        found[name] = {"single": single, "cluster": cluster, **layout_of(many, layout)}
    return found


def run_cluster_fetch(bundle: Bundle) -> dict:
    binary = redis_binaries()[0]
    catalogue = catalogue_of(bundle)
    with ExitStack() as stack:
        single = LocalRedis(binary=binary.path).start()
        stack.callback(single.stop)
        cluster = LocalRedisCluster(binary=binary.path).start()
        stack.callback(cluster.stop)
        one = stack.enter_context(connect_redis(single.url, timeout_s=30.0))
        many = stack.enter_context(connect_redis(cluster.url, cluster=True, timeout_s=30.0))
        single_latency, _ = fetch_latency(one, bundle, catalogue)
        cluster_latency, read = fetch_latency(many, bundle, catalogue)
        layout = layout_of(many, read["keys"])
        variants = bucket_variants(one, many, read["keys"], 4 * bundle.schema.item_dim)
    return {
        "redis_server": binary.version,
        "single": single_latency,
        "cluster": cluster_latency,
        "cluster_layout": layout,
        "ratio": cluster_latency.p50_ms / single_latency.p50_ms,
        "bare_mget_layouts": variants,
    }


def cluster_table(result: dict) -> tuple:
    layout = result["cluster_layout"]
    rows = [
        _row(
            f"RowFetcher.fetch_tables, {layout['keys']} keys in {layout['slots']} slots",
            result["single"],
            result["cluster"],
        )
    ]
    for name, entry in result["bare_mget_layouts"].items():
        label = f"bare MGET, {name} ({entry['slots']} slots)"
        rows.append(_row(label, entry["single"], entry["cluster"]))
    title = (
        f"A request's row fetch, cache off, one node vs 3-master cluster "
        f"(redis {result['redis_server']}): cluster / single p50 = {result['ratio']:.2f}"
    )
    header = ["fetch", "one node p50", "cluster p50", "cluster p99", "cluster / one"]
    return title, header, rows


def _row(label: str, single: Latency, cluster: Latency) -> list[str]:
    ratio = f"{cluster.p50_ms / single.p50_ms:.2f}"
    return [label, ms(single.p50_ms), ms(cluster.p50_ms), ms(cluster.p99_ms), ratio]


def main() -> None:
    from bench.model import load_bench_model

    result = run_cluster_fetch(load_bench_model().bundle)
    print_table(*cluster_table(result))
    print(f"wrote {write_json('cluster_fetch.json', result)}")


if __name__ == "__main__":
    main()
