"""Build a Redis client (single node or cluster) from a URL; both sides use this."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from core.slot_reads import read_per_slot

RedisClient = redis.Redis | RedisCluster
# Everything a Redis call can raise when Redis is down, slow or reshaping; on a cluster
# redis-py also raises RedisClusterException, which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)


def connect_redis(
    url: str,
    *,
    cluster: bool = False,
    password: str | None = None,
    timeout_s: float = 1.0,
    max_connections: int = 64,
) -> RedisClient:
    """A client whose every command fails within timeout_s instead of hanging.

    Nothing is retried inside the client: RedisCluster would otherwise retry a timed-out
    command up to 10 times with backoff. The caller answers 503 and its own client retries.
    """
    options = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
    }
    if password:
        options["password"] = password
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections, **options)
    return redis.Redis.from_url(url, max_connections=max_connections, **options)


def redis_address(url: str) -> str:
    """HOST:PORT of a redis:// or rediss:// URL, never its credentials."""
    parsed = urlsplit(url)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"


def unreachable_message(url: str, error: BaseException) -> str:
    """One line for an operator: where, what to set, and redis-py's reason."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot reach Redis at {redis_address(url)} (set CTR_REDIS_URL): {reason}"


MIN_REDIS_VERSION = (7, 0)  # XINFO GROUPS' lag (the worker's metrics), Lua errors as strings


class RedisTooOld(RuntimeError):
    """The server answers, but is older than MIN_REDIS_VERSION."""


def server_versions(client: RedisClient) -> dict[str, str]:
    """The redis_version each server reports (Valkey reports the Redis version it speaks),
    by address; on a cluster every primary's."""
    if not is_cluster(client):
        kwargs = client.connection_pool.connection_kwargs
        address = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        return {address: str(client.info("server")["redis_version"])}
    replies = client.info("server", target_nodes=RedisCluster.PRIMARIES)
    if "redis_version" in replies:  # redis-py answers one node's reply without its name
        replies = {client.get_primaries()[0].name: replies}
    return {name: str(info["redis_version"]) for name, info in replies.items()}


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def require_redis_version(client: RedisClient) -> None:
    """Raises RedisTooOld naming the first server below MIN_REDIS_VERSION."""
    for address, version in server_versions(client).items():
        if version_tuple(version) < MIN_REDIS_VERSION:
            needed = ".".join(map(str, MIN_REDIS_VERSION))
            raise RedisTooOld(
                f"Redis at {address} is version {version}; din-serving needs Redis {needed} "
                "or newer (or Valkey 7.2 or newer)"
            )


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def get_many(client: RedisClient, names: list[str]) -> list[bytes | None]:
    """GET of many keys in one round trip (on a cluster one MGET per slot, every node
    written to before any reply is read); none asked, none sent."""
    if not names:
        return []
    if not is_cluster(client):
        return client.mget(names)

    def mget(positions: list[int]) -> tuple:
        return ("MGET", *[names[p] for p in positions])

    return read_per_slot(client, names, mget)


def read_password(
    password: str | None = None, password_file: str | Path | None = None, env=os.environ
) -> str | None:
    """The Redis password: a file (a mounted Secret) wins over the value; either may come
    from CTR_REDIS_PASSWORD_FILE / CTR_REDIS_PASSWORD. The one place both sides resolve it."""
    password_file = password_file or env.get("CTR_REDIS_PASSWORD_FILE")
    if password_file:
        return Path(password_file).read_text().strip()
    return password or env.get("CTR_REDIS_PASSWORD") or None
