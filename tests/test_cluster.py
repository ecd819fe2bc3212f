"""Redis Cluster: publish, serve, hot-swap and gc against three real cluster-enabled masters."""

from __future__ import annotations

import time

import numpy as np
import pytest
from redis.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError

from app.bundle import load_version
from app.cache import RowCache
from app.features import RowFetcher
from core import keys
from core.redis_conn import connect_redis
from core.rows import encode_rows
from core.slot_reads import slot_of
from devtools.local_redis import free_port
from export import gc
from export.live import load_from_samples
from export.publish import publish_bundle
from export.versions import list_versions
from tests.factories import synthetic_bundle
from tests.service import in_process, wait_ready


def payloads(bundle, n: int = 6, size: int = 150, seed: int = 3) -> list[dict]:
    """Users with stored histories and profiles; every other one sends its own history with
    categories, and its age and the hour."""
    rng = np.random.default_rng(seed)
    items, cats = bundle.tables["item"].ids, bundle.tables["f:cat"].ids
    out = []
    for k in range(n):
        candidates = [{"item_id": str(i)} for i in rng.choice(items, size, replace=False)]
        payload = {"user_id": str(k + 1), "candidates": [*candidates, {"item_id": "no-such"}]}
        if k % 2:
            history = zip(rng.choice(items, 20), rng.choice(cats, 20), strict=True)
            payload["history"] = [{"item_id": str(i), "cat": str(c)} for i, c in history]
            payload |= {"user": {"age": "35-44"}, "context": {"hour": str(k)}}
        out.append(payload)
    return out


def keys_per_node(cluster) -> list[int]:
    return [node.client().dbsize() for node in cluster.nodes]


@pytest.mark.parametrize(
    ("row_groups", "single_layout", "cluster_layout"),
    [(0, "keys", "keys"), (6, "keys", "keys"), (6, "keys", "buckets"), (0, "buckets", "keys")],
)
def test_cluster_serves_the_same_scores_as_a_single_node(
    redis_server,
    redis_client,
    cluster,
    cluster_client,
    ns,
    bundle,
    samples,
    row_groups,
    single_layout,
    cluster_layout,
):
    single_version = publish_bundle(
        redis_client, ns, bundle, row_layout=single_layout, progress=False
    ).version
    publish_bundle(
        cluster_client,
        ns,
        bundle,
        row_groups=row_groups,
        row_layout=cluster_layout,
        progress=False,
    )
    for client in (redis_client, cluster_client):
        load_from_samples(client, ns, samples, progress=False)
    assert all(count > 20 for count in keys_per_node(cluster)), "rows are not spread"
    with (
        in_process(redis_server.url, ns) as single,
        in_process(cluster.url, ns, redis_cluster=True) as clustered,
    ):
        for payload in payloads(bundle):
            one = single.post("/v1/score", json=payload)
            many = clustered.post("/v1/score", json=payload)
            assert one.status_code == many.status_code == 200, many.text
            assert one.json() == many.json()
        detail = single.get(f"/v1/versions/{single_version}").json()
        assert detail["row_layout"] == single_layout


@pytest.mark.parametrize(
    ("row_groups", "layout", "command"),
    [(0, "keys", "mget"), (6, "keys", "mget"), (6, "buckets", "eval")],
)
def test_cluster_fetch_sends_one_call_per_slot_to_the_owning_node(
    cluster, cluster_client, ns, row_groups, layout, command
):
    small = synthetic_bundle(400)
    manifest = publish_bundle(
        cluster_client, ns, small, row_groups=row_groups, row_layout=layout, progress=False
    )
    version = manifest.version
    loaded = load_version(cluster_client, ns, version, "cpu", 1)
    fetcher = RowFetcher(cluster_client, ns, RowCache(0))
    ids = [str(i) for i in small.tables["item"].ids[:150]]
    for node in cluster.nodes:
        node.client().config_resetstat()
    rows, stats = fetcher.fetch_tables(loaded, {"item": ids})
    assert rows["item"] == encode_rows(small.tables["item"].rows[:150], "float32")
    assert stats.cache_misses == 150 and stats.unknown == {"item": 0}
    buckets = manifest.tables["item"].buckets
    row_keys = keys.row_keys(ns, version, "item", ids, row_groups, buckets)
    if row_groups:  # the groups' slots are spread evenly: two on each of the three masters
        assert sorted(slots_per_node(cluster_client, row_keys).values()) == [2, 2, 2]
    # the version's uid key rides in the same per-slot commands (its slot's, or one more)
    expected = slots_per_node(cluster_client, [*row_keys, keys.uid_key(ns, version)])
    for node in cluster.nodes:
        calls = node.client().info("commandstats")
        assert calls.get(f"cmdstat_{command}", {}).get("calls", 0) == expected[node.port]
        gets = calls.get("cmdstat_get", {}).get("calls", 0)
        uid_here = cluster_client.keyslot(keys.uid_key(ns, version)) in slots_of(cluster, node)
        # no row read one by one; in the buckets layout the uid key is a GET inside the EVAL
        assert gets == (1 if layout == "buckets" and uid_here else 0)


@pytest.mark.parametrize("layout", ["keys", "buckets"])
def test_a_fetch_on_a_stale_slot_map_follows_the_redirect(cluster, cluster_client, ns, layout):
    """A slot the client places on the wrong node (as after a resharding) answers MOVED; the
    fetch is then done through redis-py's path, which follows it and corrects the map."""
    small = synthetic_bundle(400)
    manifest = publish_bundle(
        cluster_client, ns, small, row_groups=6, row_layout=layout, progress=False
    )
    stale = connect_redis(cluster.url, cluster=True, timeout_s=5.0)
    try:
        loaded = load_version(stale, ns, manifest.version, "cpu", 1)
        ids = [str(i) for i in small.tables["item"].ids[:150]]
        buckets = manifest.tables["item"].buckets
        row_keys = keys.row_keys(ns, manifest.version, "item", ids, 6, buckets)
        slot = slot_of(row_keys[0])
        owner = stale.nodes_manager.get_node_from_slot(slot)
        wrong = next(node for node in stale.get_primaries() if node.name != owner.name)
        stale.nodes_manager.slots_cache[slot] = [wrong]
        fetcher = RowFetcher(stale, ns, RowCache(0))
        expected = encode_rows(small.tables["item"].rows[:150], "float32")
        assert fetcher.fetch_tables(loaded, {"item": ids})[0]["item"] == expected
        assert stale.nodes_manager.get_node_from_slot(slot).name == owner.name
        # the connections that held unread replies were dropped, not reused
        for _ in range(3):
            assert fetcher.fetch_tables(loaded, {"item": ids[::-1]})[0]["item"] == expected[::-1]
    finally:
        stale.close()


def test_a_fetch_from_a_node_that_is_gone_fails_then_the_map_is_corrected(
    cluster, cluster_client, ns
):
    """A slot the client places on a node that no longer answers (as after a failover): that
    read fails (the service answers 503), redis-py's path refreshes the slot map on the way,
    and the next read is served by the slot's owner."""
    small = synthetic_bundle(400)
    manifest = publish_bundle(cluster_client, ns, small, row_groups=6, progress=False)
    stale = connect_redis(cluster.url, cluster=True, timeout_s=5.0)
    try:
        loaded = load_version(stale, ns, manifest.version, "cpu", 1)
        ids = [str(i) for i in small.tables["item"].ids[:150]]
        slot = slot_of(keys.row_keys(ns, manifest.version, "item", ids, 6)[0])
        owner = stale.nodes_manager.get_node_from_slot(slot)
        stale.nodes_manager.slots_cache[slot] = [ClusterNode("127.0.0.1", free_port())]
        fetcher = RowFetcher(stale, ns, RowCache(0))
        with pytest.raises(RedisConnectionError):
            fetcher.fetch_tables(loaded, {"item": ids})
        assert stale.nodes_manager.get_node_from_slot(slot).name == owner.name
        expected = encode_rows(small.tables["item"].rows[:150], "float32")
        assert fetcher.fetch_tables(loaded, {"item": ids})[0]["item"] == expected
    finally:
        stale.close()


def slots_of(cluster, node) -> set[int]:
    """The slots a node owns, from its own CLUSTER SLOTS reply."""
    ranges = node.client().execute_command("CLUSTER", "SLOTS")
    owned = [r for r in ranges if r[2][1] == node.port]
    return {slot for start, end, *_ in owned for slot in range(start, end + 1)}


def slots_per_node(client, row_keys: list[str]) -> dict[int, int]:
    slots = {client.keyslot(key) for key in row_keys}
    owners = [client.nodes_manager.get_node_from_slot(slot).port for slot in slots]
    return {port: owners.count(port) for port in set(owners)}


@pytest.mark.parametrize(
    "follow", [{"pubsub": True, "poll_interval_s": 60.0}, {"pubsub": False, "poll_interval_s": 0.3}]
)
def test_hot_swap_on_the_cluster_switches_every_request_to_the_new_version(
    cluster, cluster_client, ns, bundle, other_bundle, follow
):
    v1 = publish_bundle(cluster_client, ns, bundle, progress=False).version
    payload = payloads(bundle, n=2)[1]
    with in_process(cluster.url, ns, redis_cluster=True, **follow) as client:
        wait_ready(client.get, version=v1)
        before = client.post("/v1/score", json=payload).json()
        v2 = publish_bundle(cluster_client, ns, other_bundle, progress=False).version
        wait_ready(client.get, timeout_s=3.0, version=v2)
        after = client.post("/v1/score", json=payload).json()
    assert (before["version"], after["version"]) == (v1, v2)
    assert before["scores"] != after["scores"]


def test_gc_on_the_cluster_deletes_old_versions_from_every_node(cluster_client, ns):
    for seed in range(4):
        publish_bundle(cluster_client, ns, synthetic_bundle(300, seed=seed), progress=False)

    def count(version: str) -> int:
        pattern = keys.version_pattern(ns, version)
        return len(list(cluster_client.scan_iter(match=pattern, count=1000)))

    published = count("v1")  # rows, metadata records, manifest, onnx, ...
    assert published > 2 * 300
    deleted = gc.collect_garbage(cluster_client, ns, keep=1)  # v4 active, v3 previous
    assert deleted == {"v1": published, "v2": published}
    assert [e["version"] for e in list_versions(cluster_client, ns)] == ["v3", "v4"]
    for version, left in (("v1", 0), ("v2", 0), ("v3", published), ("v4", published)):
        assert count(version) == left


def test_slow_cluster_node_gives_503_by_the_request_deadline_then_scores(
    cluster, cluster_client, ns, bundle, samples
):
    publish_bundle(cluster_client, ns, bundle, progress=False)
    load_from_samples(cluster_client, ns, samples, progress=False)
    payload = payloads(bundle, n=2)[1]
    settings = {"redis_cluster": True, "redis_timeout_s": 0.2, "request_timeout_s": 1.0}
    with in_process(cluster.url, ns, cache_rows=0, **settings) as client:
        before = client.post("/v1/score", json=payload).json()
        slow = cluster.nodes[1].client()
        slow.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # below the node timeout
        started = time.perf_counter()
        response = client.post("/v1/score", json=payload)
        elapsed = time.perf_counter() - started
        assert response.status_code == 503 and elapsed < 1.0 + 0.7, (response.text, elapsed)
        slow.execute_command("CLIENT", "UNPAUSE")
        assert client.post("/v1/score", json=payload).json() == before
