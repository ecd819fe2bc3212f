"""A request's row fetch on a 3-master Redis Cluster against one Redis, the cache off.

The benchmark's bundle is published to both; RowFetcher.fetch_tables then reads every row of
one request (C=100 candidates, T=50 behaviours, one row per user and context field), as the
service does: one MGET on one node, one MGET per slot on the cluster, in one overlapped
round trip per node (core/slot_reads.py). On the cluster it is published twice more, with
rows hash-tagged into ROW_GROUPS slot groups (`--row-groups`), so that a request touches at
most that many slots. Timed like every other figure (median over repeats of each repeat's
p50), with the one node and the cluster layouts taking turns in each of 7 rounds, so that
the VM's drift does not fall between them. The ratio reported is the cluster with
RECOMMENDED_GROUPS against one node.

    python -m bench.cluster_fetch

Prints a table and writes bench/results/cluster_fetch.json.
"""

from __future__ import annotations

from contextlib import ExitStack

from app.bundle import load_version
from app.cache import RowCache
from app.features import RowFetcher
from bench.common import Latency, interleaved, ms, write_json
from bench.redis_bench import all_keys, request_rows
from bench.report import print_table
from bench.servers import redis_binaries
from bench.workload import Catalogue, catalogue_of, random_slates, score_request
from core.redis_conn import connect_redis, is_cluster
from devtools.local_redis import LocalRedis, LocalRedisCluster
from export.bundle import Bundle
from export.publish import publish_bundle

NAMESPACE = "bench"
ROW_GROUPS = (6, 12)  # two and four slots per master of three
RECOMMENDED_GROUPS = 6
ROUND_CALLS = 60  # per layout and round; the rounds alternate the layouts


def prepare_fetch(client, bundle: Bundle, catalogue: Catalogue, row_groups: int = 0):
    """(fetch_tables of one request's rows as a call, how many keys, slots and nodes it
    reads), on the bundle published with `row_groups`."""
    published = publish_bundle(client, NAMESPACE, bundle, row_groups=row_groups, progress=False)
    loaded = load_version(client, NAMESPACE, published.version, "cpu", 1)
    fetcher = RowFetcher(client, NAMESPACE, RowCache(0))
    wanted = request_rows(score_request(random_slates(catalogue, 1, seed=2)[0]), loaded)
    row_keys = all_keys(NAMESPACE, published.version, wanted, row_groups)
    layout = {"row_groups": row_groups, **layout_of(client, row_keys)}
    return (lambda: fetcher.fetch_tables(loaded, wanted)), layout


def layout_of(client, row_keys: list[str]) -> dict:
    if not is_cluster(client):
        return {"keys": len(row_keys), "slots": 1, "nodes": 1}
    slots = {client.keyslot(k) for k in row_keys}
    nodes = {client.nodes_manager.get_node_from_slot(s).name for s in slots}
    return {"keys": len(row_keys), "slots": len(slots), "nodes": len(nodes)}


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
        prepared = {"single": prepare_fetch(one, bundle, catalogue)}
        for groups in (0, *ROW_GROUPS):
            prepared[groups] = prepare_fetch(many, bundle, catalogue, groups)
        timed = interleaved({name: call for name, (call, _) in prepared.items()}, n=ROUND_CALLS)
    entries = {name: {"latency": timed[name], **layout} for name, (_, layout) in prepared.items()}
    single_fetch = entries.pop("single")
    layouts = entries
    recommended = layouts[RECOMMENDED_GROUPS]["latency"]
    return {
        "redis_server": binary.version,
        "single": single_fetch,
        "cluster": layouts,
        "recommended_groups": RECOMMENDED_GROUPS,
        "ratio": recommended.p50_ms / single_fetch["latency"].p50_ms,
        "ratio_untagged": layouts[0]["latency"].p50_ms / single_fetch["latency"].p50_ms,
    }


def cluster_table(result: dict) -> tuple:
    single = result["single"]["latency"]
    rows = []
    for groups, entry in result["cluster"].items():
        layout = "one key per row" if not int(groups) else f"--row-groups {groups}"
        label = f"{layout}: {entry['keys']} keys, {entry['slots']} slots"
        rows.append(_row(label, single, entry["latency"]))
    title = (
        f"A request's row fetch (RowFetcher.fetch_tables), cache off, one node vs 3-master "
        f"cluster (redis {result['redis_server']}): cluster with --row-groups "
        f"{result['recommended_groups']} / one node p50 = {result['ratio']:.2f}"
    )
    header = ["cluster layout", "one node p50", "cluster p50", "cluster p99", "cluster / one"]
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
