"""Overwrite rows of a live version in place, and tell every replica to drop them from cache.

ctr-export update-rows --table item --file rows.npz     # whole item rows
ctr-export update-rows --table cat --file rows.npz      # one field's own table
"""

from __future__ import annotations

import logging

import numpy as np

from core import keys
from core.redis_conn import RedisClient
from core.rows import encode_rows
from export.buckets import TablePlan, bucket_state, loose_message
from export.publish import PublishError, write_table
from export.versions import decode, read_manifest, stored_probe_digest

log = logging.getLogger(__name__)


def warn_loose_buckets(client: RedisClient, names: list[str]) -> None:
    """Rows added to a bucket may push it past the server's listpack limits: the rows are
    right, the bucket just costs more memory. Say so."""
    _, loose = bucket_state(client, sorted(set(names)))
    if loose:
        log.warning("%s; the rows are updated all the same", loose_message(loose))


def resolve_table(name: str, tables: list[str]) -> str:
    """`item`, or a field's name (or its table name `f:{field}`)."""
    for candidate in (name, keys.field_table(name)):
        if candidate in tables:
            return candidate
    names = sorted(t.removeprefix(keys.field_table("")) for t in tables)
    raise PublishError(f"unknown table {name!r}; tables are {names}")


def update_rows(
    client: RedisClient,
    ns: str,
    table: str,
    ids: list[str],
    rows: np.ndarray,
    version: str | None = None,
) -> str:
    """Overwrite rows of a version (the active one by default) and announce them."""
    version = version or decode(client.get(keys.active_key(ns)))
    if not version:
        raise PublishError("no active version to update")
    manifest = read_manifest(client, ns, version)
    table = resolve_table(table, list(manifest.tables))
    dim = manifest.tables[table].dim
    if rows.ndim != 2 or rows.shape != (len(ids), dim):
        raise PublishError(f"{table} rows must be shaped ({len(ids)}, {dim}), got {rows.shape}")
    plan = TablePlan.of(ids, manifest.tables[table].buckets)
    write_table(
        client,
        (ns, version, table),
        plan,
        encode_rows(rows, manifest.row_dtype),
        manifest.row_groups,
    )
    if plan.count:
        warn_loose_buckets(
            client, keys.row_keys(ns, version, table, ids, manifest.row_groups, plan.count)
        )
    if set(ids) & set(manifest.probe_ids.get(table, [])):  # keep the version loadable
        manifest.probe_sha256 = stored_probe_digest(client, ns, manifest)
        client.set(keys.manifest_key(ns, version), manifest.to_json())
    client.incr(keys.rows_epoch_key(ns, version))
    client.publish(keys.events_channel(ns), keys.rows_updated_event(version, table, ids))
    return version
