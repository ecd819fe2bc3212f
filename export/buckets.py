"""Writing and verifying a table published in hash buckets (`--row-layout buckets`).

Each bucket is one HSET of all its rows (field = raw id), BUCKET_BATCH_ROWS rows per round
trip, sent by export/bulk.py (each batch built while Redis applies the one before). The
server must keep the buckets in listpack encoding, or they cost more than one key per row:
`check_listpack_limits` refuses before anything is written, and `verify_buckets` checks
every bucket's encoding afterwards (where CONFIG is not allowed, that is the only check).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import redis

from core import keys
from core.redis_conn import RedisClient
from export.bulk import send_commands, write_batches
from export.versions import PublishError

BUCKET_BATCH_ROWS = 20_000
COMPACT_ENCODINGS = {b"listpack", b"ziplist"}  # ziplist: Redis 6
# Redis 7 names first; Redis 6 knows only the ziplist ones (7 accepts both)
LIMITS = {
    "value": ("hash-max-listpack-value", "hash-max-ziplist-value"),
    "entries": ("hash-max-listpack-entries", "hash-max-ziplist-entries"),
}


@dataclass
class TablePlan:
    """A table's ids and buckets (count 0: a key per row), and which bucket each row goes
    to, as core/keys.py row_keys places it."""

    ids: list[str]
    count: int
    numbers: np.ndarray  # (N,) each row's bucket; empty for a key per row

    @classmethod
    def of(cls, ids: list[str], count: int) -> TablePlan:
        if not count:
            return cls(ids, 0, np.zeros(0, np.int64))
        return cls(ids, count, np.asarray(keys.bucket_numbers(ids, count), np.int64))

    def sizes(self) -> np.ndarray:
        return np.bincount(self.numbers, minlength=self.count)


def write_buckets(
    client: RedisClient,
    prefix: str,
    plan: TablePlan,
    values: list[bytes],
    groups: int = 0,
    *,
    progress: bool = False,
    lease: tuple[str, int] | None = None,
) -> None:
    """HSET every row into its bucket under a table's row prefix."""
    batches = bucket_batches(prefix, plan, values, groups)
    write_batches(client, batches, len(plan.ids), progress=progress, lease=lease)


def bucket_batches(
    prefix: str, plan: TablePlan, values: list[bytes], groups: int
) -> Iterator[tuple[list[tuple], int]]:
    """(HSET commands, rows) of about BUCKET_BATCH_ROWS rows at a time, one per bucket."""
    order = np.argsort(plan.numbers, kind="stable")
    bounds = np.searchsorted(plan.numbers[order], np.arange(plan.count + 1)).tolist()
    order = order.tolist()
    ids, values = list(map(plan.ids.__getitem__, order)), list(map(values.__getitem__, order))
    names = keys.bucket_keys(prefix, list(range(plan.count)), groups)
    commands, start = [], 0
    for n, (low, high) in enumerate(itertools.pairwise(bounds)):
        if low < high:
            fields = [None] * (2 * (high - low))
            fields[0::2], fields[1::2] = ids[low:high], values[low:high]
            commands.append(("HSET", names[n], *fields))
        if high - start >= BUCKET_BATCH_ROWS:
            yield commands, high - start
            commands, start = [], high
    if commands:
        yield commands, len(ids) - start


def check_listpack_limits(client: RedisClient, value_bytes: int, rows_per_bucket: int) -> None:
    """Refuse, naming the setting, when the server would not keep buckets compact (the
    longest row or id; the fullest bucket). A server that forbids CONFIG (managed Redis) is
    checked after writing, by verify_buckets."""
    for kind, needed in (("value", value_bytes), ("entries", rows_per_bucket)):
        name, limit = read_limit(client, LIMITS[kind])
        if limit is not None and limit < needed:
            raise PublishError(
                f"--row-layout buckets needs {name} >= {needed} on the Redis server (it is "
                f"{limit}): set it in redis.conf or with CONFIG SET, or publish with "
                f"--row-layout keys"
            )


def read_limit(client: RedisClient, names: tuple[str, ...]) -> tuple[str, int | None]:
    """(name, value) of the first setting the server knows; value None if unreadable."""
    for name in names:
        try:
            found = client.config_get(name)
        except redis.ResponseError:  # CONFIG renamed or forbidden
            return name, None
        if found:
            return name, int(next(iter(found.values())))
    return names[0], None


def verify_buckets(client: RedisClient, prefix: str, plan: TablePlan, groups: int) -> int:
    """Rows present in a table's buckets (every field written, and no other); refuses when
    any bucket left listpack encoding."""
    names = keys.bucket_keys(prefix, list(range(plan.count)), groups)
    fields, loose = bucket_state(client, names)
    if loose:
        raise PublishError(loose_message(loose))
    return fields


def bucket_state(client: RedisClient, names: list[str]) -> tuple[int, list[str]]:
    """(fields in all the buckets, the buckets not in a compact encoding), one round trip."""
    asked = [("HLEN", name) for name in names] + [("OBJECT", "ENCODING", n) for n in names]
    replies = send_commands(client, asked)
    lengths, encodings = replies[: len(names)], replies[len(names) :]
    pairs = zip(names, encodings, strict=True)
    loose = [name for name, found in pairs if found is not None and found not in COMPACT_ENCODINGS]
    return sum(lengths), loose


def loose_message(loose: list[str]) -> str:
    return (
        f"{len(loose)} buckets (the first {loose[0]}) are stored as hash tables, not "
        f"listpack: raise hash-max-listpack-value and hash-max-listpack-entries on the "
        f"server, or publish with --row-layout keys"
    )
