"""Fetching the rows of one request: key building, two round trips at most, decoding.

First the user's stored history and profile values, only those the request lacks, in one
pipeline. Then every row the request needs (item rows of candidates and history, side-field
overrides, user and context field rows) in one MGET, or one EVAL for a version published in
hash buckets (core/row_store.py; on a cluster: one pipelined round trip per node), pinned to
the request's bundle version. Duplicated values are fetched once; hot
rows come from the in-process cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from app.bundle import LoadedBundle
from app.cache import RowCache
from core import keys
from core.events import decode_behaviours
from core.redis_conn import RedisClient, get_many
from core.row_store import check_uid, read_version_rows
from core.schema import ITEM_ID


@dataclass
class FetchStats:
    cache_hits: int = 0
    cache_misses: int = 0
    unknown: dict[str, int] = field(default_factory=dict)  # table -> distinct unknown values


@dataclass
class StoredUser:
    history: list[str] | None  # raw item ids, oldest first; None when not read
    sides: list[dict[str, str]]  # each behaviour's item-side field values, as ingested
    profile: dict[str, str]  # profile field -> stored raw value, for the fields asked


class RowFetcher:
    def __init__(self, client: RedisClient, ns: str, cache: RowCache) -> None:
        self.client = client
        self.ns = ns
        self.cache = cache

    def read_user(
        self, bundle: LoadedBundle, user_id: str, history: int | None, profile: list[str]
    ) -> StoredUser:
        """The last `history` behaviours (None: not read) and the `profile` fields' stored
        values, in one round trip; nothing is sent when nothing is asked. The bundle's uid
        key rides along: a user read from a Redis that lost the bundle (or holds another
        under its name) raises VersionMissing, even when every row is cached."""
        if history is None and not profile:
            return StoredUser(None, [], {})
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.uid_key(self.ns, bundle.version))
        if history is not None:
            pipe.lrange(keys.history_key(self.ns, user_id), -history, -1)
        if profile:
            pipe.hmget(keys.profile_key(self.ns, user_id), profile)
        uid, *replies = pipe.execute()
        check_uid(bundle.manifest, uid)
        items, sides = decode_behaviours(replies[0]) if history is not None else (None, [])
        values = replies[-1] if profile else []
        stored = {k: v.decode() for k, v in zip(profile, values, strict=True) if v is not None}
        return StoredUser(items, sides, stored)

    def item_metadata(self, bundle: LoadedBundle, ids: list[str]) -> dict[str, dict]:
        """Title and side-field values of each id the version describes (one round trip)."""
        if not bundle.manifest.item_metadata or not ids:
            return {}
        values = get_many(self.client, keys.item_meta_keys(self.ns, bundle.version, ids))
        found = {i: read_record(v) for i, v in zip(ids, values, strict=True) if v is not None}
        return {i: record for i, record in found.items() if record is not None}

    def fetch_tables(
        self, bundle: LoadedBundle, wanted: dict[str, list[str]]
    ) -> tuple[dict[str, list[bytes]], FetchStats]:
        """Row bytes for unique ids per table, in the order asked; unknown -> default row.
        Raises VersionMissing when the version's rows are not in Redis (read_version_rows)."""
        epoch = self.cache.epoch  # read before the fetch: see RowCache.put_many
        found = {t: self.cache.get_many(bundle.version, t, ids) for t, ids in wanted.items()}
        holes = {t: [k for k, v in enumerate(rows) if v is None] for t, rows in found.items()}
        stats = FetchStats(cache_misses=sum(map(len, holes.values())))
        stats.cache_hits = sum(map(len, wanted.values())) - stats.cache_misses
        if stats.cache_misses:
            missing = {t: [wanted[t][k] for k in positions] for t, positions in holes.items()}
            values = iter(read_version_rows(self.client, self.ns, bundle.manifest, missing))
            for table, positions in holes.items():
                fetched = [next(values) for _ in positions]
                self._fill(bundle, table, wanted[table], found[table], positions, fetched, epoch)
        for table, rows in found.items():  # unknown ids are cached as the default row itself
            stats.unknown[table] = rows.count(bundle.default_bytes[table])
        return found, stats

    def _fill(self, bundle, table, ids, rows, positions, fetched, epoch) -> None:
        """Put fetched rows (the default row for unknown ids) in place, and in the cache."""
        default = bundle.default_bytes[table]
        fetched = [default if v is None else v for v in fetched]
        for k, value in zip(positions, fetched, strict=True):
            rows[k] = value
        self.cache.put_many(bundle.version, table, [ids[k] for k in positions], fetched, epoch)


def read_record(raw: bytes) -> dict | None:
    """A metadata record; a corrupt one is dropped (the item is shown without a title)."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def field_of(table: str) -> str:
    """The request's name for a table's field: item_id for item rows, else the field."""
    return ITEM_ID if table == keys.ITEM_TABLE else table.removeprefix(keys.field_table(""))


def unknown_by_field(stats: FetchStats) -> dict[str, int]:
    return {field_of(table): count for table, count in stats.unknown.items() if count}
