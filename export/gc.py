"""Delete old versions without blocking Redis: SCAN in pages, UNLINK in batches.

The active version, the one active before it and a running canary are never deleted, whatever
--keep says.
Versions left half-written by a dead writer (no manifest, lease expired) are deleted too.
"""

from __future__ import annotations

import logging

from core import keys
from core.canary import Canary
from core.redis_conn import RedisClient, is_cluster

log = logging.getLogger(__name__)
SCAN_COUNT = 1000


def protected_versions(client: RedisClient, ns: str) -> set[str]:
    """The versions that serve or may serve again at once: active, previous, the canary."""
    pointers = [client.get(keys.active_key(ns)), client.get(keys.previous_key(ns))]
    canary = Canary.from_json(client.get(keys.canary_key(ns)))
    return {p.decode() for p in pointers if p} | ({canary.version} if canary else set())


def versions_to_delete(client: RedisClient, ns: str, keep: int) -> list[str]:
    listed = [v.decode() for v in client.zrange(keys.versions_key(ns), 0, -1)]  # oldest first
    kept = set(listed[-keep:]) if keep > 0 else set()
    protected = protected_versions(client, ns)
    return [v for v in listed if v not in kept and v not in protected]


def orphaned_versions(client: RedisClient, ns: str) -> list[str]:
    """Versions with an ONNX key but no manifest and no live writer lease."""
    found = []
    suffix = ":onnx"
    for key in client.scan_iter(match=f"{ns}:*{suffix}", count=SCAN_COUNT):
        version = key.decode()[len(ns) + 1 : -len(suffix)]
        if ":" in version:  # a row whose raw id ends in ":onnx", not a version's graph
            continue
        manifest, lease = keys.manifest_key(ns, version), keys.lease_key(ns, version)
        if not client.exists(manifest) and not client.exists(lease):
            found.append(version)
    return found


def delete_version(client: RedisClient, ns: str, version: str) -> int:
    """Unlist and unload first (no one can activate or load it), then the rows."""
    client.zrem(keys.versions_key(ns), version)
    deleted = int(client.unlink(keys.manifest_key(ns, version), keys.uid_key(ns, version)))
    batch: list[bytes] = []
    for key in client.scan_iter(match=keys.version_pattern(ns, version), count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= SCAN_COUNT:
            deleted += _unlink(client, batch)
            batch = []
    deleted += _unlink(client, batch) if batch else 0
    return deleted


def _unlink(client: RedisClient, batch: list[bytes]) -> int:
    if is_cluster(client):  # one key per command, grouped per node by the cluster pipeline
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.unlink(key)
        return int(sum(pipe.execute()))
    return int(client.unlink(*batch))


def collect_garbage(client: RedisClient, ns: str, keep: int) -> dict[str, int]:
    """Delete all but the newest `keep` versions (and orphans); returns keys deleted per version."""
    doomed = versions_to_delete(client, ns, keep) + orphaned_versions(client, ns)
    report = {}
    for version in dict.fromkeys(doomed):
        if version not in protected_versions(client, ns):  # re-read: activations go on
            report[version] = delete_version(client, ns, version)
            log.info("deleted %s (%d keys)", version, report[version])
    return report
