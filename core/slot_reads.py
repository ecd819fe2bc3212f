"""A multi-key read on a Redis Cluster: one command per hash slot, every owning node written to
before any reply is read, so a request costs one overlapped round trip per node.

redis-py's cluster pipeline (behind `mget_nonatomic`) computes the slot of every key twice, in
Python: once to group the keys and again to check each grouped command. For the 155 keys of
one request that is most of the fetch's client time. Here a key's slot is computed once, and
a hash tag's slot (every row key published with `--row-groups` has one) only once per tag.

A slot that moved (a resharding, a failover) answers MOVED or ASK, and a node that is gone
fails to connect or answer; the read is then done again by redis-py's own path, which
follows the redirect or refreshes its slot map (and after a failover reads from the new
primary). Each node's replies wait up to the client's socket timeout, so a read that fails
on a silent node takes that timeout once here and once more in redis-py's path.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import hiredis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

# The slot map may be out of date: redis-py's path refreshes it and tries again.
SLOT_MAP_STALE = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    SlotNotCoveredError,
    ConnectionError,
    TimeoutError,
)

Command = Callable[[list[int]], tuple]  # the positions of one slot's keys -> its command
REFRESH_INTERVAL_S = 1.0  # at most one refresh a second per client while reads keep failing
_refreshed_at: dict[int, float] = {}  # id(nodes_manager) -> when this module last refreshed it
_refresh_lock = threading.Lock()


@functools.lru_cache(maxsize=8192)
def tag_slot(tag: str) -> int:
    return key_slot(tag.encode())


def slot_of(name: str) -> int:
    """The hash slot Redis gives a key: its hash tag's (the text between the first "{" and
    the first "}" after it, when not empty), else the whole key's."""
    start = name.find("{")
    end = name.find("}", start + 1) if start >= 0 else -1
    if end > start + 1:
        return tag_slot(name[start + 1 : end])
    return key_slot(name.encode())


def read_per_slot(client: RedisCluster, names: list[str], command: Command) -> list:
    """One value per name, in order: `command` builds each slot's command from the
    positions of its keys, whose reply lists one value per key."""
    slots = by_slot(names)
    try:
        per_node: dict[str, tuple] = {}
        for slot, positions in slots.items():
            node = client.nodes_manager.get_node_from_slot(slot)
            per_node.setdefault(node.name, (node, []))[1].append(positions)
        replies = exchange(client, per_node.values(), command)
    except SLOT_MAP_STALE:
        replies = through_pipeline(client, slots, command)
    return in_order(replies, len(names))


def by_slot(names: list[str]) -> dict[int, list[int]]:
    """The positions of the names in each hash slot."""
    slots: dict[int, list[int]] = defaultdict(list)
    for position, name in enumerate(names):
        slots[slot_of(name)].append(position)
    return slots


def in_order(replies, count: int) -> list:
    """(positions, reply) pairs -> one value per position."""
    values: list = [None] * count
    for positions, reply in replies:
        for position, value in zip(positions, reply, strict=True):
            values[position] = value
    return values


def through_pipeline(client: RedisCluster, slots: dict[int, list[int]], command: Command):
    """The same commands through redis-py's cluster pipeline, which follows MOVED and ASK
    and refreshes its slot map when a node does not answer."""
    pipe = client.pipeline(transaction=False)
    for positions in slots.values():
        pipe.execute_command(*command(positions))
    try:
        return zip(slots.values(), pipe.execute(), strict=True)
    except SLOT_MAP_STALE:
        refresh_slot_map(client)
        raise


def refresh_slot_map(client: RedisCluster) -> None:
    """Read the slot map again now (at most once per REFRESH_INTERVAL_S); a cluster that does
    not answer keeps the map it had."""
    manager = client.nodes_manager
    with _refresh_lock:
        last = _refreshed_at.get(id(manager), float("-inf"))
        if time.monotonic() - last < REFRESH_INTERVAL_S:
            return
        _refreshed_at[id(manager)] = time.monotonic()
    with contextlib.suppress(RedisError, RedisClusterException, OSError):
        manager.initialize()


def exchange(client: RedisCluster, nodes, command: Command) -> list[tuple[list[int], list]]:
    """Writes every node's commands, then reads every reply: (positions, reply) pairs."""
    sent = []
    try:
        for node, groups in nodes:
            pool = client.get_redis_connection(node).connection_pool
            connection = pool.get_connection()
            sent.append((pool, connection, groups))
            packed = b"".join(hiredis.pack_command(command(g)) for g in groups)
            connection.send_packed_command([packed], check_health=False)
        return [(g, connection.read_response()) for _, connection, groups in sent for g in groups]
    except BaseException:
        for _, connection, _ in sent:
            connection.disconnect()  # replies may be left unread: never reuse it as it is
        raise
    finally:
        for pool, connection, _ in sent:
            pool.release(connection)
