"""Reading and moving the version pointers: what a version is, activation (and rollback),
the activation log, the listing. Light on purpose: the operations commands import only this,
Redis and the key scheme, so they start in a fraction of a second.
"""

from __future__ import annotations

import logging
import time

from core import keys
from core.canary import Canary
from core.manifest import Manifest
from core.redis_conn import RedisClient
from core.row_store import read_probe_digest

log = logging.getLogger(__name__)
ACTIVATIONS_KEPT = 100


class PublishError(RuntimeError):
    pass


def read_manifest(client: RedisClient, ns: str, version: str) -> Manifest:
    raw = client.get(keys.manifest_key(ns, version))
    if raw is None:
        raise PublishError(f"version {version} is not complete (no manifest) or does not exist")
    return Manifest.from_json(raw)


def check_complete(client: RedisClient, ns: str, version: str) -> Manifest:
    """The version's manifest, once its probe rows match it; else PublishError."""
    manifest = read_manifest(client, ns, version)
    if client.get(keys.uid_key(ns, version)) != manifest.uid.encode():
        raise PublishError(f"{version}: its uid key is missing or names another bundle")
    if stored_probe_digest(client, ns, manifest) != manifest.probe_sha256:
        raise PublishError(f"{version}: probe rows do not match the manifest checksum")
    return manifest


def activate_version(client: RedisClient, ns: str, version: str) -> str | None:
    """Point the service at a complete version; also how a rollback is done. A running canary
    keeps running against the new active version, unless the version activated is the canary
    itself: then the canary has been promoted, and ends."""
    check_complete(client, ns, version)
    previous = point_to(client, ns, version)
    canary = Canary.from_json(client.get(keys.canary_key(ns)))
    if canary is not None and canary.version == version:
        client.delete(keys.canary_key(ns))
        client.publish(keys.events_channel(ns), keys.canary_event(None))
    return previous


def point_to(client: RedisClient, ns: str, version: str) -> str | None:
    """Flip the active pointer and announce it; the caller has checked the version."""
    previous = decode(client.get(keys.active_key(ns)))
    if previous and previous != version:
        client.set(keys.previous_key(ns), previous)
    client.set(keys.active_key(ns), version)
    client.publish(keys.events_channel(ns), keys.activated_event(version))
    record_activation(client, ns, version)
    log.info("activated %s (was %s)", version, previous)
    return previous


def record_activation(client: RedisClient, ns: str, version: str) -> None:
    """Append to the activation log the UI shows (newest first, bounded)."""
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.activations_key(ns), keys.activation_record(version, time.time()))
    pipe.ltrim(keys.activations_key(ns), 0, ACTIVATIONS_KEPT - 1)
    pipe.execute()


def list_versions(client: RedisClient, ns: str) -> list[dict]:
    active = decode(client.get(keys.active_key(ns)))
    listed = client.zrange(keys.versions_key(ns), 0, -1, withscores=True)
    return [
        {"version": decode(v), "published_at": score, "active": decode(v) == active}
        for v, score in listed
    ]


def decode(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def stored_probe_digest(client: RedisClient, ns: str, manifest: Manifest) -> str:
    digest = read_probe_digest(client, ns, manifest)
    if digest is None:
        raise PublishError(f"{manifest.version}: probe rows are missing")
    return digest
