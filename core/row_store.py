"""Where a version's rows live in Redis, and the one round trip that reads a request's rows.

Two layouts, chosen at publish (`ctr-export publish --row-layout`) and recorded per table in
the manifest (TableSpec.buckets):

keys (default)  one string per row. One MGET reads a request's rows, about 0.1 µs of Redis
                time per row; each key costs about 100 bytes of Redis overhead, so a
                float32 row of 44 values takes about 1.6× its raw bytes.
buckets         hashes of about BUCKET_ROWS rows each (field = raw id, value = the row),
                small enough for Redis's compact listpack encoding: about 1.2× raw bytes.
                One EVAL reads a request's rows, one HGET per row inside Redis (about
                2 µs each). The server must allow listpack values as wide as a row
                (`hash-max-listpack-value`, 64 bytes by default); the exporter checks.

On a cluster both read one slot at a time: the keys layout with one MGET per slot, the
buckets layout with one EVAL per slot, every node written to before any reply is read
(core/slot_reads.py). With --row-groups G a request touches at most G slots.
"""

from __future__ import annotations

import math

from core import keys
from core.manifest import Manifest, probe_digest
from core.redis_conn import RedisClient, get_many, is_cluster
from core.slot_reads import read_per_slot

LAYOUTS = ("keys", "buckets")
BUCKET_ROWS = 32  # mean rows per bucket: far below listpack's default 128 entries

# One HGET per row; a missing field comes back as false, which Redis replies as nil. An
# empty field (ids are never empty) marks a plain string key: the version's uid.
GATHER_LUA = """
local rows = {}
for i, key in ipairs(KEYS) do
  if ARGV[i] == '' then rows[i] = redis.call('GET', key)
  else rows[i] = redis.call('HGET', key, ARGV[i]) end
end
return rows
"""


class VersionMissing(RuntimeError):
    """The version's uid key is gone or names another bundle: its rows are not there (Redis
    lost its data) or belong to a bundle published later under the same name."""

    def __init__(self, manifest: Manifest, found: bytes | None) -> None:
        self.why = "is gone from Redis" if found is None else "was replaced in Redis"
        super().__init__(f"version {manifest.version} ({manifest.uid[:12]}) {self.why}")


def bucket_count(rows: int, layout: str) -> int:
    """The buckets a table of `rows` rows gets in `layout` (0: a key per row)."""
    if layout not in LAYOUTS:
        raise ValueError(f"row layout {layout!r} is not one of {LAYOUTS}")
    return max(1, math.ceil(rows / BUCKET_ROWS)) if layout == "buckets" else 0


def locate(ns: str, manifest: Manifest, table: str, ids: list[str]) -> list[str]:
    """The key holding each row (for buckets: the hash whose field is the id)."""
    buckets = manifest.tables[table].buckets
    return keys.row_keys(ns, manifest.version, table, ids, manifest.row_groups, buckets)


def read_version_rows(
    client: RedisClient, ns: str, manifest: Manifest, wanted: dict[str, list[str]]
) -> list[bytes | None]:
    """read_rows, with the version's uid key read in the same round trip: raises
    VersionMissing unless it holds the manifest's uid, so rows that are gone are never
    taken for unknown ids, nor another bundle's rows for this one's."""
    values = read_rows(client, ns, manifest, wanted, with_uid=True)
    check_uid(manifest, values.pop())
    return values


def check_uid(manifest: Manifest, found: bytes | None) -> None:
    """Raises VersionMissing unless `found`, the value of the version's uid key, is the
    manifest's uid: the one comparison every reader of a served version makes."""
    if found != manifest.uid.encode():
        raise VersionMissing(manifest, found)


def read_rows(
    client: RedisClient,
    ns: str,
    manifest: Manifest,
    wanted: dict[str, list[str]],
    with_uid: bool = False,
) -> list[bytes | None]:
    """Every row asked, tables in the order given; None where an id has no row. With
    `with_uid`, the value of the version's uid key follows them."""
    row_keys = [key for t, ids in wanted.items() for key in locate(ns, manifest, t, ids)]
    if with_uid:
        row_keys.append(keys.uid_key(ns, manifest.version))
    if manifest.row_layout == "keys" or not row_keys:
        return get_many(client, row_keys)
    ids = [i for table_ids in wanted.values() for i in table_ids]
    if with_uid:
        ids.append("")  # the GATHER_LUA mark of a plain key
    if not is_cluster(client):
        return client.eval(GATHER_LUA, len(row_keys), *row_keys, *ids)
    return gather_per_slot(client, row_keys, ids)


def gather_per_slot(client: RedisClient, row_keys: list[str], ids: list[str]) -> list:
    """One EVAL per hash slot (a script may only touch one), one round trip per node."""

    def gather(positions: list[int]) -> tuple:
        keys_here = [row_keys[p] for p in positions]
        return ("EVAL", GATHER_LUA, len(positions), *keys_here, *[ids[p] for p in positions])

    return read_per_slot(client, row_keys, gather)


def read_probe_digest(client: RedisClient, ns: str, manifest: Manifest) -> str | None:
    """sha256 over a version's probe rows as stored (one round trip), or None when any of
    them is missing. The exporter writes it into the manifest; the service checks it."""
    values = iter(read_rows(client, ns, manifest, manifest.probe_ids))
    rows = {table: [next(values) for _ in ids] for table, ids in manifest.probe_ids.items()}
    if any(v is None for found in rows.values() for v in found):
        return None
    return probe_digest(rows)
