"""Canary operations: send a share of users to a version, change the share, promote, abort.

ctr-export canary v9 --percent 10        # 10% of users on v9, the rest on the active version
ctr-export canary v9 --percent 50        # the same users plus more: never back
ctr-export promote                       # v9 becomes the active version, the canary ends
ctr-export abort                         # the canary ends, everyone on the active version
ctr-export status --json
"""

from __future__ import annotations

import logging
import secrets

from core import keys
from core.canary import Canary, end_canary
from core.redis_conn import RedisClient, is_cluster
from export.versions import PublishError, check_complete, decode, record_activation

log = logging.getLogger(__name__)


def read_canary(client: RedisClient, ns: str) -> Canary | None:
    return Canary.from_json(client.get(keys.canary_key(ns)))


def start_canary(
    client: RedisClient,
    ns: str,
    version: str,
    percent: float,
    *,
    max_error_rate: float | None = None,
    max_p99_ms: float | None = None,
) -> Canary:
    """Start a canary, or change its share: the same version keeps its salt, so raising the
    percent only adds users to it."""
    active = decode(client.get(keys.active_key(ns)))
    if active is None:
        raise PublishError("no active version: activate one before starting a canary")
    if version == active:
        raise PublishError(f"{version} is already the active version")
    check_complete(client, ns, version)
    running = read_canary(client, ns)
    salt = running.salt if running and running.version == version else secrets.token_hex(8)
    canary = Canary(version, percent, salt, max_error_rate, max_p99_ms)
    client.set(keys.canary_key(ns), canary.to_json())
    client.publish(keys.events_channel(ns), keys.canary_event(version))
    log.info("canary %s at %s%% (active %s)", version, percent, active)
    return canary


def promote(client: RedisClient, ns: str) -> str:
    """The canary becomes the active version and the canary ends. The active pointer moves
    first: in between, both arms name the same version, so no request sees a mix."""
    canary = read_canary(client, ns)
    if canary is None:
        raise PublishError("no canary to promote")
    previous = decode(client.get(keys.active_key(ns)))
    pipe = client.pipeline(transaction=not is_cluster(client))  # atomic on one node
    if previous:
        pipe.set(keys.previous_key(ns), previous)
    pipe.set(keys.active_key(ns), canary.version)
    pipe.delete(keys.canary_key(ns))
    pipe.execute()
    client.publish(keys.events_channel(ns), keys.activated_event(canary.version))
    client.publish(keys.events_channel(ns), keys.canary_event(None))
    record_activation(client, ns, canary.version)
    log.info("promoted %s (was %s)", canary.version, previous)
    return canary.version


def abort_canary(
    client: RedisClient, ns: str, reason: str = "aborted by an operator"
) -> str | None:
    """End the canary; everyone goes back to the active version. Returns its version."""
    canary = read_canary(client, ns)
    if not end_canary(client, ns):
        return None
    log.warning("canary %s ended: %s", canary.version if canary else "?", reason)
    return canary.version if canary else None


def status(client: RedisClient, ns: str) -> dict:
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.active_key(ns))
    pipe.get(keys.previous_key(ns))
    pipe.get(keys.canary_key(ns))
    active, previous, raw = pipe.execute()
    canary = Canary.from_json(raw)
    return {
        "active": decode(active),
        "previous": decode(previous),
        "canary": canary.version if canary else None,
        "percent": canary.percent if canary else 0,
        "guards": {"max_error_rate": canary.max_error_rate, "max_p99_ms": canary.max_p99_ms}
        if canary
        else None,
    }
