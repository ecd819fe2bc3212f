"""Fetching and decoding the rows of one request: key building, one round trip, decoding.

Every row a request needs (candidates, history, explicit categories) comes back in one MGET
(on a cluster: one pipelined round trip per node), pinned to the request's bundle version.
Duplicated ids are fetched once; hot rows come from the in-process cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from app.bundle import LoadedBundle
from app.cache import RowCache
from core import keys
from core.redis_conn import RedisClient, is_cluster
from core.rows import decode_rows


@dataclass
class FetchStats:
    cache_hits: int = 0
    cache_misses: int = 0
    unknown: dict[str, int] | None = None


@dataclass
class UserInputs:
    candidates: np.ndarray  # (C, D) float32
    history: np.ndarray  # (T, D) float32, T may be 0
    stats: FetchStats


class RowFetcher:
    def __init__(self, client: RedisClient, ns: str, cache: RowCache) -> None:
        self.client = client
        self.ns = ns
        self.cache = cache
        self._mget = client.mget_nonatomic if is_cluster(client) else client.mget

    def history(self, user_id: str, limit: int) -> list[str]:
        """The user's most recent `limit` behaviours, oldest first ([] for a new user)."""
        values = self.client.lrange(keys.history_key(self.ns, user_id), -limit, -1)
        return [v.decode() for v in values]

    def item_metadata(self, bundle: LoadedBundle, ids: list[str]) -> dict[str, dict]:
        """Title and category of each id the version describes (one round trip)."""
        if not bundle.manifest.item_metadata or not ids:
            return {}
        values = self._mget(keys.item_meta_keys(self.ns, bundle.version, ids))
        found = {i: read_record(v) for i, v in zip(ids, values, strict=True) if v is not None}
        return {i: record for i, record in found.items() if record is not None}

    def fetch_tables(
        self, bundle: LoadedBundle, wanted: dict[str, list[str]]
    ) -> tuple[dict[str, list[bytes]], FetchStats]:
        """Row bytes for unique ids per table, in the order asked; unknown -> default row."""
        epoch = self.cache.epoch  # read before the fetch: see RowCache.put_many
        found = {t: self.cache.get_many(bundle.version, t, ids) for t, ids in wanted.items()}
        holes = {t: [k for k, v in enumerate(rows) if v is None] for t, rows in found.items()}
        stats = FetchStats(cache_misses=sum(map(len, holes.values())), unknown={})
        stats.cache_hits = sum(map(len, wanted.values())) - stats.cache_misses
        if stats.cache_misses:
            row_keys = [
                keys.row_key(self.ns, bundle.version, t, wanted[t][k])
                for t, positions in holes.items()
                for k in positions
            ]
            values = iter(self._mget(row_keys))
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


def decode(values: list[bytes], bundle: LoadedBundle, table: str) -> np.ndarray:
    return decode_rows(values, bundle.manifest.row_dtype, bundle.manifest.tables[table].dim)


def gather_inputs(
    fetcher: RowFetcher,
    bundle: LoadedBundle,
    items: list[str],
    cats: list[str | None],
    n_candidates: int,
) -> UserInputs:
    """Goods vectors for candidates then history; an explicit category replaces the item's."""
    unique_items, item_index = np.unique(
        np.asarray(items, dtype=object).astype(str), return_inverse=True
    )
    explicit = [c for c in cats if c is not None]
    unique_cats = sorted(set(explicit))
    wanted = {"item": unique_items.tolist()}
    if unique_cats:
        wanted["cat"] = unique_cats
    rows, stats = fetcher.fetch_tables(bundle, wanted)
    goods = decode(rows["item"], bundle, "item")[item_index]  # (C + T, D)
    if unique_cats:
        _apply_categories(goods, decode(rows["cat"], bundle, "cat"), unique_cats, cats, bundle)
    return UserInputs(goods[:n_candidates], goods[n_candidates:], stats)


def _apply_categories(goods, cat_rows, unique_cats, cats, bundle: LoadedBundle) -> None:
    position = {c: k for k, c in enumerate(unique_cats)}
    has_cat = np.array([c is not None for c in cats])
    which = np.array([position[c] for c in cats if c is not None])
    goods[has_cat, bundle.manifest.item_dim :] = cat_rows[which]
