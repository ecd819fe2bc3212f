"""A bounded in-process cache of row bytes, keyed by (version, table, raw id)."""

from __future__ import annotations

import threading
from collections import OrderedDict

RowKey = tuple[str, str, str]


class RowCache:
    """LRU over row bytes; one lock per batch of lookups, not per row."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._rows: OrderedDict[RowKey, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.epoch = 0  # bumped by every invalidation: fills read before it are not stored

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, version: str, table: str, ids: list[str]) -> list[bytes | None]:
        if not self.max_rows:
            return [None] * len(ids)
        rows = self._rows
        with self._lock:
            found = [rows.get((version, table, i)) for i in ids]
            for i, value in zip(ids, found, strict=True):
                if value is not None:
                    rows.move_to_end((version, table, i))
        return found

    def put_many(
        self, version: str, table: str, ids: list[str], values: list[bytes], epoch: int
    ) -> None:
        """Store rows read while the cache was at `epoch`; skipped if rows were invalidated
        since, so a row read just before an update never outlives it in the cache."""
        if not self.max_rows:
            return
        with self._lock:
            if epoch != self.epoch:
                return
            for i, value in zip(ids, values, strict=True):
                self._rows[(version, table, i)] = value
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)

    def invalidate(self, version: str, table: str, ids: list[str]) -> int:
        with self._lock:
            self.epoch += 1
            return sum(self._rows.pop((version, table, i), None) is not None for i in ids)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self.epoch += 1

    def drop_other_versions(self, keep: set[str]) -> None:
        with self._lock:
            for key in [k for k in self._rows if k[0] not in keep]:
                del self._rows[key]
