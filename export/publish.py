"""Write a bundle to Redis as a new immutable version, verify it, and flip the pointer.

Order of writes: lease, ONNX, rows, item metadata and report files, verification, manifest,
versions set; then, only if asked, the `active` pointer, an event and an activation record.
A writer killed anywhere before the manifest leaves no listed version, and the active one is
untouched. Publishing touches no live state: histories and profiles are loaded by
export/live.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
from typing import TYPE_CHECKING

import numpy as np

from core import graph, keys
from core.manifest import (
    BUCKETS_FORMAT,
    FORMAT,
    PROBE_ROWS,
    Manifest,
    TableSpec,
    new_uid,
    validate_manifest,
)
from core.redis_conn import RedisClient, is_cluster
from core.row_store import bucket_count
from core.rows import encode_rows, row_nbytes
from export.buckets import TablePlan, check_listpack_limits, verify_buckets, write_buckets
from export.bulk import write_batches
from export.versions import PublishError, point_to, stored_probe_digest

if TYPE_CHECKING:  # the bundle module imports torch; publishing a saved bundle does not need it
    from export.bundle import Bundle

__all__ = ["PublishError", "publish_bundle", "write_rows"]

log = logging.getLogger(__name__)
LEASE_SECONDS = 120
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BATCH_ROWS = 1000
ROUND_TRIP_ROWS = 20_000


def next_version(client: RedisClient, ns: str) -> str:
    """v1, v2, ...: the counter in Redis. When it is gone (a new namespace, or a Redis that
    lost its data) it restarts after the highest vN the registry still lists. A name may so
    come back after a loss; replicas tell bundles apart by the manifest's uid, never by name."""
    counter = keys.sequence_key(ns)
    number = client.incr(counter)
    if number == 1:  # the counter was not there
        highest = max(numbered_versions(client, ns), default=0)
        log.warning(
            "the registry %s:* had no version counter (new, or Redis lost its data); "
            "numbering starts after v%d, the highest version it lists",
            ns,
            highest,
        )
        number = client.incrby(counter, highest) if highest else number
    return f"v{number}"


def numbered_versions(client: RedisClient, ns: str) -> list[int]:
    """The N of every vN listed as published, active or previous."""
    pipe = client.pipeline(transaction=False)
    pipe.zrange(keys.versions_key(ns), 0, -1)
    pipe.get(keys.active_key(ns))
    pipe.get(keys.previous_key(ns))
    listed, *pointers = pipe.execute()
    names = [raw.decode() for raw in [*listed, *pointers] if raw]
    return [int(name[1:]) for name in names if re.fullmatch(r"v\d+", name)]


def publish_bundle(
    client: RedisClient,
    ns: str,
    bundle: Bundle,
    *,
    version: str | None = None,
    row_dtype: str = "float32",
    row_groups: int = 0,
    row_layout: str = "keys",
    activate: bool = True,
    progress: bool = True,
) -> Manifest:
    if not 0 <= row_groups <= keys.MAX_GROUPS:
        raise PublishError(f"row_groups must be in 0..{keys.MAX_GROUPS}, not {row_groups}")
    plans = plan_tables(client, bundle, row_dtype, row_layout)
    version = version or next_version(client, ns)
    claim_version(client, ns, version)
    client.set(keys.onnx_key(ns, version), bundle.onnx)
    for name, table in bundle.tables.items():
        write_table(
            client,
            (ns, version, name),
            plans[name],
            encode_rows(table.rows, row_dtype),
            row_groups,
            progress=progress,
            lease=(keys.lease_key(ns, version), LEASE_SECONDS),
        )
    meta_keys = write_extras(client, ns, version, bundle)
    manifest = make_manifest(bundle, version, row_dtype, row_groups, plans)
    renew_lease(client, ns, version)
    verify_version(client, ns, manifest, plans, meta_keys)
    manifest.probe_sha256 = stored_probe_digest(client, ns, manifest)
    renew_lease(client, ns, version)  # a writer that lost its lease may have been collected
    client.set(keys.uid_key(ns, version), manifest.uid)
    client.set(keys.manifest_key(ns, version), manifest.to_json())
    client.zadd(keys.versions_key(ns), {version: manifest.created_at})
    client.delete(keys.lease_key(ns, version))
    log.info(
        "published %s (%s rows, %s layout)",
        version,
        {name: spec.rows for name, spec in manifest.tables.items()},
        row_layout,
    )
    if activate:
        point_to(client, ns, version)  # verified above, moments ago
    return manifest


def plan_tables(
    client: RedisClient, bundle: Bundle, row_dtype: str, row_layout: str
) -> dict[str, TablePlan]:
    """How each table is written; for buckets, refuses a server that would
    not keep them compact, before anything is written."""
    try:
        counts = {n: bucket_count(len(t.ids), row_layout) for n, t in bundle.tables.items()}
    except ValueError as error:
        raise PublishError(str(error)) from error
    plans = {name: TablePlan.of(t.ids, counts[name]) for name, t in bundle.tables.items()}
    if row_layout == "keys":
        return plans
    widest = max(row_nbytes(t.rows.shape[1], row_dtype) for t in bundle.tables.values())
    longest_id = max(len(str(i).encode()) for t in bundle.tables.values() for i in t.ids)
    fullest = max(int(plan.sizes().max(initial=0)) for plan in plans.values())
    check_listpack_limits(client, max(widest, longest_id), fullest)
    return plans


def write_table(
    client: RedisClient,
    table: tuple[str, str, str],
    plan: TablePlan,
    values: list[bytes],
    groups: int,
    **options,
) -> None:
    """The row bytes of one table, (namespace, version, table name), in its plan's layout."""
    if plan.count:
        write_buckets(client, keys.row_prefix(*table), plan, values, groups, **options)
    else:
        write_rows(client, keys.row_keys(*table, plan.ids, groups), values, **options)


def claim_version(client: RedisClient, ns: str, version: str) -> None:
    """Take the writer lease of a new version name, or refuse: versions are immutable."""
    if not VERSION_NAME.fullmatch(version):
        raise PublishError(f"version {version!r} must match {VERSION_NAME.pattern}")
    if not client.set(keys.lease_key(ns, version), "writing", ex=LEASE_SECONDS, nx=True):
        raise PublishError(f"version {version} is being written by another publisher")
    if client.exists(keys.manifest_key(ns, version)) or client.exists(keys.onnx_key(ns, version)):
        client.delete(keys.lease_key(ns, version))
        raise PublishError(f"version {version} already exists; versions are immutable")


def write_extras(client: RedisClient, ns: str, version: str, bundle: Bundle) -> list[str]:
    """What explanations and the UI show: item titles and categories, the training report.
    Returns the metadata keys written."""
    ids = list(bundle.item_metadata)
    meta_keys = keys.item_meta_keys(ns, version, ids)
    write_rows(client, meta_keys, [json.dumps(bundle.item_metadata[i]).encode() for i in ids])
    for name, content in bundle.report.items():
        client.set(keys.report_key(ns, version, name), content)
    return meta_keys


def renew_lease(client: RedisClient, ns: str, version: str) -> None:
    if not client.expire(keys.lease_key(ns, version), LEASE_SECONDS):
        raise PublishError(f"the lease on {version} expired; it may have been collected")


def make_manifest(
    bundle: Bundle,
    version: str,
    row_dtype: str,
    row_groups: int = 0,
    plans: dict[str, TablePlan] | None = None,
) -> Manifest:
    plans = plans or {}
    tables = {
        name: TableSpec(
            rows=len(t.ids),
            dim=t.rows.shape[1],
            default_row=t.default.tolist(),
            buckets=plans[name].count if name in plans else 0,
        )
        for name, t in bundle.tables.items()
    }
    buckets = any(plan.count for plan in plans.values())
    manifest = Manifest(
        format=BUCKETS_FORMAT if buckets else FORMAT,
        version=version,
        created_at=time.time(),
        row_dtype=row_dtype,
        row_groups=row_groups,
        tables=tables,
        schema=bundle.schema,
        onnx_sha256=hashlib.sha256(bundle.onnx).hexdigest(),
        onnx_inputs=list(graph.input_names(bundle.schema)),
        onnx_output=graph.OUTPUT,
        onnx_attention=graph.ATTENTION if graph.ATTENTION in output_names(bundle.onnx) else "",
        model=bundle.model_config,
        metrics=bundle.metrics,
        probe_ids=choose_probes(bundle),
        item_metadata=len(bundle.item_metadata),
        report={name: hashlib.sha256(data).hexdigest() for name, data in bundle.report.items()},
        demo_users=bundle.demo_users,
        demo_items=bundle.demo_items,
        uid=new_uid(),
    )
    validate_manifest(manifest)
    return manifest


def output_names(onnx_bytes: bytes) -> list[str]:
    """A bundle saved by an older exporter has no attention output: publish it as it is."""
    import onnx

    return [output.name for output in onnx.load_model_from_string(onnx_bytes).graph.output]


def choose_probes(bundle: Bundle, seed: int = 0) -> dict[str, list[str]]:
    """A few random ids per table whose rows the service checks before serving a version."""
    rng = np.random.default_rng(seed)
    probes = {}
    for name, table in bundle.tables.items():
        size = min(PROBE_ROWS, len(table.ids))
        probes[name] = [str(i) for i in rng.choice(table.ids, size=size, replace=False)]
    return probes


def write_rows(
    client: RedisClient,
    row_keys: list[str],
    values: list[bytes],
    *,
    progress: bool = False,
    lease: tuple[str, int] | None = None,
) -> int:
    """MSETs of BATCH_ROWS keys, ROUND_TRIP_ROWS keys per round trip (export/bulk.py); on a
    cluster SETs, grouped per node. The lease is renewed with every round trip."""
    spans = (slice(k, k + ROUND_TRIP_ROWS) for k in range(0, len(row_keys), ROUND_TRIP_ROWS))
    batches = (
        (set_commands(client, row_keys[span], values[span]), len(row_keys[span])) for span in spans
    )
    write_batches(client, batches, len(row_keys), progress=progress, lease=lease)
    return len(row_keys)


def set_commands(client: RedisClient, row_keys: list[str], values: list[bytes]) -> list[tuple]:
    """Commands writing row_keys[i] = values[i]: one SET each on a cluster (MSET cannot span
    slots), else MSETs of BATCH_ROWS keys."""
    pairs = list(zip(row_keys, values, strict=True))
    if is_cluster(client):
        return [("SET", key, value) for key, value in pairs]
    return [
        ("MSET", *itertools.chain.from_iterable(pairs[start : start + BATCH_ROWS]))
        for start in range(0, len(pairs), BATCH_ROWS)
    ]


def count_existing(client: RedisClient, row_keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    if is_cluster(client):
        for key in row_keys:
            pipe.exists(key)
    else:
        for start in range(0, len(row_keys), BATCH_ROWS):
            pipe.exists(*row_keys[start : start + BATCH_ROWS])
    return int(sum(pipe.execute()))


def verify_version(
    client: RedisClient,
    ns: str,
    manifest: Manifest,
    plans: dict[str, TablePlan],
    meta_keys: list[str],
) -> None:
    """Refuse to write the manifest unless every row and metadata record written, and the
    exact ONNX and report bytes, are there."""
    version = manifest.version
    stored = client.get(keys.onnx_key(ns, version)) or b""
    if hashlib.sha256(stored).hexdigest() != manifest.onnx_sha256:
        raise PublishError(f"ONNX of {version} does not match its checksum")
    for name, plan in plans.items():  # every row written, and no other, is counted
        expected = manifest.tables[name].rows
        found = count_rows(client, (ns, version, name), plan, manifest.row_groups)
        if found != expected:
            raise PublishError(f"{name}: {found} of {expected} rows present")
    if (found := count_existing(client, meta_keys)) != len(meta_keys):
        raise PublishError(f"item metadata: {found} of {len(meta_keys)} records present")
    for name, digest in manifest.report.items():
        content = client.get(keys.report_key(ns, version, name)) or b""
        if hashlib.sha256(content).hexdigest() != digest:
            raise PublishError(f"report file {name} of {version} does not match its checksum")


def count_rows(client: RedisClient, table: tuple[str, str, str], plan: TablePlan, groups) -> int:
    """Rows present of one table, (namespace, version, table name), in its plan's layout."""
    if plan.count:
        return verify_buckets(client, keys.row_prefix(*table), plan, groups)
    return count_existing(client, keys.row_keys(*table, plan.ids, groups))
