"""Writing and verifying a table published in hash buckets (`--row-layout buckets`).

Each bucket is one HSET of all its rows (field = raw id). On one node the commands are
packed by hiredis and sent down one connection, BUCKET_BATCH_ROWS rows per round trip; on a
cluster a pipeline groups them per node. The server must keep the buckets in listpack
encoding, or they cost more than one key per row: `check_listpack_limits` refuses before
anything is written, and `verify_buckets` checks the fullest bucket's encoding afterwards
(where CONFIG is not allowed, that is the only check).
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import hiredis
import numpy as np
import redis
from tqdm import tqdm

from core import keys
from core.redis_conn import RedisClient, is_cluster
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
        crcs = np.fromiter((zlib.crc32(i.encode()) for i in ids), np.int64, len(ids))
        return cls(ids, count, crcs % count)

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
    ids = plan.ids
    order = np.argsort(plan.numbers, kind="stable")
    bounds = np.searchsorted(plan.numbers[order], np.arange(plan.count + 1)).tolist()
    order = order.tolist()
    sorted_ids, sorted_values = [ids[k] for k in order], [values[k] for k in order]
    bucket_names = keys.bucket_keys(prefix, list(range(plan.count)), groups)
    bar = tqdm(total=len(ids), unit="row", disable=not progress, leave=False)
    commands, queued = [], 0
    for n, (low, high) in enumerate(itertools.pairwise(bounds)):
        if low == high:
            continue
        fields = [None] * (2 * (high - low))
        fields[0::2], fields[1::2] = sorted_ids[low:high], sorted_values[low:high]
        commands.append(("HSET", bucket_names[n], *fields))
        queued += high - low
        if queued >= BUCKET_BATCH_ROWS or high == len(ids):
            send_commands(client, commands + ([("EXPIRE", *lease)] if lease else []))
            bar.update(queued)
            commands, queued = [], 0
    bar.close()


def send_commands(client: RedisClient, commands: list[tuple]) -> list:
    """Every command in one round trip (one per node on a cluster); the first error raises."""
    if is_cluster(client):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()
    pool = client.connection_pool
    connection = pool.get_connection()
    try:  # hiredis packs a command in C; redis-py's own packing walks every argument
        connection.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
        replies = [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()  # no reply is left unread on a pooled connection
        raise
    finally:
        pool.release(connection)
    return replies


def check_listpack_limits(client: RedisClient, row_bytes: int, rows_per_bucket: int) -> None:
    """Refuse, naming the setting, when the server would not keep buckets compact. A server
    that forbids CONFIG (managed Redis) is checked after writing, by verify_buckets."""
    for kind, needed in (("value", row_bytes), ("entries", rows_per_bucket)):
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
    the fullest bucket left listpack encoding."""
    bucket_names = keys.bucket_keys(prefix, list(range(plan.count)), groups)
    found = sum(send_commands(client, [("HLEN", name) for name in bucket_names]))
    sizes = plan.sizes()
    fullest = bucket_names[int(sizes.argmax())]
    encoding = client.object("encoding", fullest) if len(plan.ids) else b"listpack"
    if encoding not in COMPACT_ENCODINGS:
        raise PublishError(
            f"bucket {fullest} ({sizes.max()} rows) is stored as {encoding.decode()}, not "
            f"listpack: raise hash-max-listpack-value and hash-max-listpack-entries on the "
            f"server, or publish with --row-layout keys"
        )
    return found
