"""Bulk writes: batches of commands, one round trip each, the next batch built while Redis
applies the one before.

On one node the commands are packed by hiredis (in C; redis-py's own packing walks every
argument) and sent down one connection, and a batch's replies are read only after the next
batch is sent, so the client builds and packs while Redis works: bucket writes went from
0.48M to 0.9M rows/s on a 2-core box. On a cluster a redis-py pipeline groups each batch per
node, one batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import hiredis
from tqdm import tqdm

from core.redis_conn import RedisClient, is_cluster


def write_batches(
    client: RedisClient,
    batches: Iterable[tuple[list[tuple], int]],
    total: int,
    *,
    progress: bool = False,
    lease: tuple[str, int] | None = None,
) -> None:
    """Sends (commands, rows) batches overlapped, renewing the writer's lease (key, seconds)
    with each and counting rows on a progress bar."""
    renew = [("EXPIRE", *lease)] if lease else []
    with tqdm(total=total, unit="row", disable=not progress, leave=False) as bar:
        for rows in send_overlapped(client, ((c + renew, n) for c, n in batches)):
            bar.update(rows)


def send_overlapped(
    client: RedisClient, batches: Iterable[tuple[list[tuple], int]]
) -> Iterator[int]:
    """Sends each batch of commands and yields its count once its replies are read; an
    error reply raises. On one node the next batch is built and sent before the replies of
    the one before are read, so the client works while Redis does."""
    if is_cluster(client):
        for commands, count in batches:
            send_commands(client, commands)
            yield count
        return
    pool = client.connection_pool
    connection = pool.get_connection()
    pending = []
    try:
        for commands, count in batches:
            packed = b"".join(map(hiredis.pack_command, commands))
            connection.send_packed_command([packed], check_health=False)  # replies are unread
            pending.append((len(commands), count))
            if len(pending) > 1:
                yield read_replies(connection, *pending.pop(0))
        for sent, count in pending:
            yield read_replies(connection, sent, count)
    except BaseException:
        connection.disconnect()  # no reply is left unread on a pooled connection
        raise
    finally:
        pool.release(connection)


def read_replies(connection, sent: int, count: int) -> int:
    for _ in range(sent):
        connection.read_response()  # raises on an error reply
    return count


def send_commands(client: RedisClient, commands: list[tuple]) -> list:
    """Every command in one round trip (one per node on a cluster); the first error raises."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()
