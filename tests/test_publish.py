import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
import redis

from core import graph, keys
from core.graph import one_user_feeds, user_inputs
from core.manifest import Manifest, validate_manifest
from core.redis_conn import connect_redis
from core.row_store import BUCKET_ROWS, locate, read_rows
from core.rows import decode_rows, encode_rows
from devtools.local_redis import LocalRedis
from export import buckets, gc, publish
from export.publish import PublishError, publish_bundle
from export.synthetic import synthetic_bundle
from export.to_onnx import cpu_session
from export.train import predict
from export.update import update_rows
from export.versions import activate_version, list_versions, read_manifest


def fetch_rows(client, ns, version, table, ids, manifest: Manifest) -> np.ndarray:
    values = read_rows(client, ns, manifest, {table: ids})
    assert all(v is not None for v in values)
    return decode_rows(values, manifest.row_dtype, manifest.tables[table].dim)


def raw_values(samples, field: str, indices) -> list[str]:
    return [str(v) for v in samples.vocab.fields[field][indices]]


def fetch_side(client, ns, manifest, samples, kind: str, indices) -> np.ndarray | None:
    """One sample's user or context vector, from each field's own table in Redis."""
    specs = manifest.schema.fields_of(kind)
    if not specs:
        return None
    parts = [
        fetch_rows(
            client,
            ns,
            manifest.version,
            keys.field_table(spec.name),
            raw_values(samples, spec.name, [indices[j]]),
            manifest,
        )[0]
        for j, spec in enumerate(specs)
    ]
    return np.concatenate(parts)


@pytest.mark.parametrize("layout", ["keys", "buckets"])
def test_scores_from_redis_rows_and_onnx_equal_pytorch(
    redis_client, ns, bundle, trained, samples, layout
):
    manifest = publish_bundle(redis_client, ns, bundle, row_layout=layout, progress=False)
    assert manifest.row_layout == layout
    session = cpu_session(redis_client.get(keys.onnx_key(ns, manifest.version)))
    test, item = samples.read("test", limit=400), manifest.schema.item_field.name
    chosen = np.random.default_rng(1).choice(len(test), 40, replace=False)
    worst = 0.0
    for row in chosen:
        slate = test.slate(row, chosen)
        want = predict(trained.model, slate)
        v = manifest.version
        cands = fetch_rows(
            redis_client, ns, v, "item", raw_values(samples, item, slate.item), manifest
        )
        behaviours = raw_values(samples, item, test.hist[row, : test.hist_len[row]])
        hist = fetch_rows(redis_client, ns, v, "item", behaviours, manifest)
        hist, mask = user_inputs(hist.reshape(-1, manifest.schema.item_dim))
        inputs = {graph.CANDIDATES: cands, graph.HISTORY: hist, graph.MASK: mask}
        inputs[graph.USER] = fetch_side(
            redis_client, ns, manifest, samples, "user", test.user_fields[row]
        )
        inputs[graph.CONTEXT] = fetch_side(
            redis_client, ns, manifest, samples, "context", test.context[row]
        )
        got = session.run(None, one_user_feeds(manifest.onnx_inputs, inputs))[0][0]
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-5


def test_manifest_is_written_last_and_describes_the_bundle(redis_client, ns, bundle):
    manifest = publish_bundle(redis_client, ns, bundle, activate=False, progress=False)
    stored = read_manifest(redis_client, ns, manifest.version)
    assert stored.tables["item"].rows == len(bundle.tables["item"].ids)
    assert stored.schema == bundle.schema and stored.tables["item"].dim == bundle.schema.item_dim
    assert stored.onnx_inputs == ["candidates", "history", "history_mask", "user", "context"]
    assert stored.metrics["onnx_parity_max_abs_diff"] <= 1e-5
    assert redis_client.get(keys.active_key(ns)) is None
    assert not redis_client.exists(keys.lease_key(ns, manifest.version))
    assert not redis_client.exists(keys.history_key(ns, "1"))  # publishing leaves live state


def test_live_histories_and_profiles_load_from_the_samples(redis_client, ns, samples):
    from export.live import load_from_samples

    assert load_from_samples(redis_client, ns, samples, progress=False) == len(samples.vocab.users)
    users, histories, profiles = next(samples.latest())
    stored = redis_client.lrange(keys.history_key(ns, users[0]), 0, -1)
    assert [v.decode() for v in stored] == histories[0][-samples.schema.max_history :]
    profile = redis_client.hgetall(keys.profile_key(ns, users[0]))
    assert {k.decode(): v.decode() for k, v in profile.items()} == {
        field: values[0] for field, values in profiles.items() if values[0] is not None
    }
    assert set(profiles) == {"age", "gender", "occupation"}


def test_versions_are_immutable_and_activate_is_also_rollback(redis_client, ns, bundle):
    v1 = publish_bundle(redis_client, ns, bundle, progress=False).version
    v2 = publish_bundle(redis_client, ns, bundle, progress=False).version
    assert [e["version"] for e in list_versions(redis_client, ns)] == [v1, v2]
    assert redis_client.get(keys.active_key(ns)) == v2.encode()
    with pytest.raises(PublishError, match="immutable"):
        publish_bundle(redis_client, ns, bundle, version=v1, progress=False)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.events_channel(ns))
    pubsub.get_message(timeout=1)
    assert activate_version(redis_client, ns, v1) == v2
    assert redis_client.get(keys.active_key(ns)) == v1.encode()
    assert keys.parse_event(pubsub.get_message(timeout=1)["data"])["version"] == v1
    with pytest.raises(PublishError, match="no manifest"):
        activate_version(redis_client, ns, "v999")


def test_fp16_rows_are_half_the_bytes(redis_client, ns, bundle):
    manifest = publish_bundle(redis_client, ns, bundle, row_dtype="float16", progress=False)
    item_id = str(bundle.tables["item"].ids[0])
    raw = redis_client.get(keys.row_key(ns, manifest.version, "item", item_id))
    width = bundle.schema.item_dim
    assert len(raw) == width * 2
    decoded = decode_rows([raw], "float16", width)[0]
    assert np.abs(decoded - bundle.tables["item"].rows[0]).max() < 1e-2


def test_row_groups_are_recorded_and_rows_live_under_their_group_tags(redis_client, ns, bundle):
    manifest = publish_bundle(redis_client, ns, bundle, row_groups=6, progress=False)
    assert (
        Manifest.from_json(redis_client.get(keys.manifest_key(ns, manifest.version))).row_groups
        == 6
    )
    ids = [str(i) for i in bundle.tables["item"].ids[:20]]
    grouped = keys.row_keys(ns, manifest.version, "item", ids, 6)
    assert redis_client.mget(grouped) == encode_rows(bundle.tables["item"].rows[:20], "float32")
    assert redis_client.exists(*keys.row_keys(ns, manifest.version, "item", ids)) == 0


@contextmanager
def server_setting(client, name: str, value):
    """A redis-server setting changed for the block, then put back as it was."""
    [before] = client.config_get(name).values()
    client.config_set(name, value)
    try:
        yield
    finally:
        client.config_set(name, before)


def memory_usage(client, row_keys: set[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in row_keys:
        pipe.memory_usage(key, samples=0)
    return sum(pipe.execute())


def test_bucket_layout_keeps_rows_compact_and_reads_them_back(redis_client, ns, monkeypatch):
    monkeypatch.setattr(buckets, "BUCKET_BATCH_ROWS", 300)  # 14 round trips, each overlapped
    monkeypatch.setattr(publish, "ROUND_TRIP_ROWS", 300)
    small = synthetic_bundle(4000)
    ids = [str(i) for i in small.tables["item"].ids]
    raw = small.tables["item"].rows.astype(np.float32).nbytes
    used = {}
    for layout in ("keys", "buckets"):
        manifest = publish_bundle(redis_client, ns, small, row_layout=layout, progress=False)
        row_keys = locate(ns, manifest, "item", ids)
        used[layout] = memory_usage(redis_client, set(row_keys)) / raw
        assert read_rows(redis_client, ns, manifest, {"item": [*ids, "no-such"]}) == [
            *encode_rows(small.tables["item"].rows, "float32"),
            None,
        ]
    assert manifest.tables["item"].buckets == 4000 // BUCKET_ROWS
    assert redis_client.object("encoding", row_keys[0]) in (b"listpack", b"ziplist")
    assert used["buckets"] <= 1.2 < used["keys"]


def test_an_error_reply_mid_write_raises_and_leaves_no_reply_unread(redis_client, ns, monkeypatch):
    monkeypatch.setattr(buckets, "BUCKET_BATCH_ROWS", 50)
    ids = [f"i{k}" for k in range(1000)]
    plan = buckets.TablePlan.of(ids, 32)
    prefix = keys.row_prefix(ns, "v1", "item")
    [taken] = keys.bucket_keys(prefix, [20])  # a bucket of a later round trip
    redis_client.set(taken, "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        buckets.write_buckets(redis_client, prefix, plan, [b"row"] * len(ids))
    assert redis_client.get(taken) == b"not a hash"  # each reply still matches its command
    assert redis_client.hlen(keys.bucket_keys(prefix, [0])[0]) == (plan.numbers == 0).sum()


def test_an_update_that_overfills_a_bucket_says_so_and_still_writes(redis_client, ns, caplog):
    manifest = publish_bundle(
        redis_client, ns, synthetic_bundle(30), row_layout="buckets", progress=False
    )
    assert manifest.tables["f:cat"].buckets == 1
    new_ids = [f"cat-new{k}" for k in range(200)]
    rows = np.full((200, manifest.tables["f:cat"].dim), 0.25, np.float32)
    with server_setting(redis_client, "hash-max-ziplist-entries", 128):  # 220 rows: past it
        update_rows(redis_client, ns, "cat", new_ids, rows)
    assert "stored as hash tables, not listpack" in caplog.text
    stored = read_rows(redis_client, ns, manifest, {"f:cat": new_ids})
    assert stored == encode_rows(rows, "float32")


def test_bucket_layout_is_refused_by_a_server_that_would_not_keep_them_compact(redis_client, ns):
    refused = r"hash-max-(listpack|ziplist)-value >= 144 .*64"
    with (
        server_setting(redis_client, "hash-max-ziplist-value", 64),
        pytest.raises(PublishError, match=refused),
    ):
        publish_bundle(redis_client, ns, synthetic_bundle(30), row_layout="buckets")
    assert redis_client.get(keys.sequence_key(ns)) is None  # refused before any write
    assert not list(redis_client.scan_iter(match=f"{ns}:*"))


def test_bucket_layout_without_config_access_is_checked_after_writing(tmp_path):
    server = LocalRedis(workdir=tmp_path, extra_args=["--hash-max-ziplist-value", "64"])
    server.extra_args += ["--rename-command", "CONFIG", ""]  # as managed Redis often does
    client = connect_redis(server.start().url)
    try:
        with pytest.raises(PublishError, match="stored as hash tables, not listpack"):
            publish_bundle(client, "t", synthetic_bundle(30), row_layout="buckets")
        assert list_versions(client, "t") == []
    finally:
        client.close()
        server.stop()


def test_a_manifest_mixing_row_layouts_is_refused(redis_client, ns):
    manifest = publish_bundle(
        redis_client, ns, synthetic_bundle(30), row_layout="buckets", progress=False
    )
    assert manifest.format == 3  # a reader that knows only format 2 refuses it
    manifest.tables["item"].buckets = 0
    with pytest.raises(ValueError, match="mix row layouts"):
        validate_manifest(manifest)
    for spec in manifest.tables.values():
        spec.buckets = 0
    with pytest.raises(ValueError, match="a keys manifest is format 2"):
        validate_manifest(manifest)
    with pytest.raises(PublishError, match="row layout 'blocks'"):
        publish_bundle(redis_client, ns, synthetic_bundle(5), row_layout="blocks")


def test_killed_writer_leaves_active_version_and_listing_untouched(redis_server, redis_client, ns):
    v1 = publish_bundle(redis_client, ns, synthetic_bundle(50), progress=False).version
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.factories", redis_server.url, ns, "400000"]
    )
    deadline = time.monotonic() + 60
    while not redis_client.exists(keys.row_key(ns, "v2", "item", "s1000")):
        assert time.monotonic() < deadline and writer.poll() is None
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert redis_client.get(keys.active_key(ns)) == v1.encode()
    assert [e["version"] for e in list_versions(redis_client, ns)] == [v1]
    assert not redis_client.exists(keys.manifest_key(ns, "v2"))
    with pytest.raises(PublishError):
        activate_version(redis_client, ns, "v2")
    redis_client.delete(keys.lease_key(ns, "v2"))  # as if the lease had expired
    assert gc.orphaned_versions(redis_client, ns) == ["v2"]
    gc.collect_garbage(redis_client, ns, keep=5)
    assert not list(redis_client.scan_iter(match=keys.version_pattern(ns, "v2")))


def test_gc_keeps_newest_plus_active_and_previous(redis_client, ns):
    small = synthetic_bundle(20)
    for _ in range(5):
        publish_bundle(redis_client, ns, small, progress=False)
    activate_version(redis_client, ns, "v2")
    activate_version(redis_client, ns, "v1")  # active v1, previous v2
    deleted = gc.collect_garbage(redis_client, ns, keep=1)
    assert sorted(deleted) == ["v3", "v4"]
    assert [e["version"] for e in list_versions(redis_client, ns)] == ["v1", "v2", "v5"]
    assert not list(redis_client.scan_iter(match=keys.version_pattern(ns, "v3")))
    assert redis_client.exists(keys.row_key(ns, "v1", "item", "s0"))


@pytest.mark.parametrize("layout", ["keys", "buckets"])
def test_update_rows_rewrites_rows_and_announces_them(redis_client, ns, layout):
    small = synthetic_bundle(30)
    version = publish_bundle(redis_client, ns, small, row_layout=layout, progress=False).version
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.events_channel(ns))
    pubsub.get_message(timeout=1)
    new_rows = np.full((2, 36), 0.5, np.float32)
    update_rows(redis_client, ns, "item", ["s3", "s4"], new_rows)
    manifest = read_manifest(redis_client, ns, version)
    assert np.array_equal(
        fetch_rows(redis_client, ns, version, "item", ["s3", "s4"], manifest), new_rows
    )
    assert read_rows(redis_client, ns, manifest, {"item": ["s2"]}) == encode_rows(
        small.tables["item"].rows[2:3], "float32"
    )
    event = keys.parse_event(pubsub.get_message(timeout=1)["data"])
    assert event == {
        "kind": "rows-updated",
        "version": version,
        "table": "item",
        "ids": ["s3", "s4"],
    }
    update_rows(redis_client, ns, "item", ["s-new"], new_rows[:1])
    assert fetch_rows(redis_client, ns, version, "item", ["s-new"], manifest)[0][0] == 0.5
    with pytest.raises(PublishError, match="shaped"):
        update_rows(redis_client, ns, "item", ["s1"], np.zeros((1, 5), np.float32))


def test_updating_a_probe_row_keeps_the_version_loadable(redis_client, ns):
    from app.bundle import load_version

    manifest = publish_bundle(redis_client, ns, synthetic_bundle(30), progress=False)
    probe = manifest.probe_ids["f:cat"][0]
    update_rows(redis_client, ns, "cat", [probe], np.full((1, 18), 2.0, np.float32))
    assert load_version(redis_client, ns, manifest.version, "cpu", 1).version == manifest.version
    activate_version(redis_client, ns, manifest.version)
    assert redis_client.get(keys.rows_epoch_key(ns, manifest.version)) == b"1"


def test_gc_never_mistakes_a_row_id_for_a_version(redis_client, ns):
    bundle = synthetic_bundle(10)
    bundle.tables["item"].ids = np.array([*bundle.tables["item"].ids[:-1], "odd:onnx"])
    version = publish_bundle(redis_client, ns, bundle, progress=False).version
    assert gc.orphaned_versions(redis_client, ns) == []
    gc.collect_garbage(redis_client, ns, keep=0)
    assert redis_client.exists(keys.row_key(ns, version, "item", "odd:onnx"))


def test_a_version_name_is_claimed_once_and_must_be_plain(redis_client, ns):
    redis_client.set(keys.lease_key(ns, "v7"), "writing")
    with pytest.raises(PublishError, match="another publisher"):
        publish_bundle(redis_client, ns, synthetic_bundle(5), version="v7", progress=False)
    with pytest.raises(PublishError, match="must match"):
        publish_bundle(redis_client, ns, synthetic_bundle(5), version="v:1", progress=False)
