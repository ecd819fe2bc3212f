"""Fetching and decoding the rows of one request: key building, one round trip, decoding.

Every row a request needs (candidates, history, explicit categories) comes back in one MGET
(on a cluster: one pipelined round trip per node), pinned to the request's bundle version.
Duplicated ids are fetched once; hot rows come from the in-process cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.bundle import LoadedBundle
from app.cache import RowCache
from core import keys
from core.redis_conn import RedisClient, is_cluster
from core.rows import DTYPES


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

    def fetch_tables(
        self, bundle: LoadedBundle, wanted: dict[str, list[str]]
    ) -> tuple[dict[str, list[bytes]], FetchStats]:
        """Row bytes for unique ids per table, in the order asked; unknown -> default row."""
        version = bundle.version
        epoch = self.cache.epoch  # read before the fetch: see RowCache.put_many
        found = {t: self.cache.get_many(version, t, ids) for t, ids in wanted.items()}
        missing = [
            (t, i)
            for t, ids in wanted.items()
            for i, v in zip(ids, found[t], strict=True)
            if v is None
        ]
        stats = FetchStats(cache_misses=len(missing), unknown=_cached_unknown(bundle, found))
        stats.cache_hits = sum(len(ids) for ids in wanted.values()) - len(missing)
        if missing:
            values = self._mget([keys.row_key(self.ns, version, t, i) for t, i in missing])
            self._fill(bundle, wanted, found, missing, values, stats, epoch)
        return found, stats

    def _fill(self, bundle, wanted, found, missing, values, stats, epoch) -> None:
        fetched: dict[str, dict[str, bytes]] = {t: {} for t in wanted}
        for (table, raw_id), value in zip(missing, values, strict=True):
            if value is None:
                stats.unknown[table] += 1
                value = bundle.default_bytes[table]
            fetched[table][raw_id] = value
        for table, rows in fetched.items():
            if rows:
                self.cache.put_many(bundle.version, table, list(rows), list(rows.values()), epoch)
                found[table] = [
                    v if v is not None else rows[i]
                    for i, v in zip(wanted[table], found[table], strict=True)
                ]


def _cached_unknown(bundle: LoadedBundle, found: dict[str, list]) -> dict[str, int]:
    """Unknown ids are cached as the default row itself, so a hit on one still counts."""
    return {t: sum(v is bundle.default_bytes[t] for v in rows) for t, rows in found.items()}


def decode(values: list[bytes], bundle: LoadedBundle, table: str) -> np.ndarray:
    dim = bundle.manifest.tables[table].dim
    flat = np.frombuffer(b"".join(values), dtype=DTYPES[bundle.manifest.row_dtype])
    return flat.reshape(len(values), dim).astype(np.float32, copy=False)


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
