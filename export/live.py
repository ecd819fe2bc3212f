"""Live, unversioned state of users: recent behaviours and profile values, read by every
version. Loaded from a training log by `ctr-export load-histories`; publishing never writes it.

ctr-export load-histories --samples artifacts/samples
"""

from __future__ import annotations

import logging

from tqdm import tqdm

from core import keys
from core.redis_conn import RedisClient, is_cluster
from export.samples import SampleSet

log = logging.getLogger(__name__)
USERS_PER_ROUND_TRIP = 1000


def load_live_state(
    client: RedisClient,
    ns: str,
    histories: dict[str, list[str]],
    profiles: dict[str, dict[str, str]] | None = None,
) -> int:
    """Replace each user's behaviour list (raw item ids, most recent last) and profile hash.
    On one node each batch is a MULTI/EXEC, so no reader sees a user half replaced."""
    profiles = profiles or {}
    users = list(dict.fromkeys([*histories, *profiles]))
    for start in range(0, len(users), USERS_PER_ROUND_TRIP):
        pipe = client.pipeline(transaction=not is_cluster(client))
        for user in users[start : start + USERS_PER_ROUND_TRIP]:
            _queue_user(pipe, ns, user, histories.get(user), profiles.get(user))
        pipe.execute()
    return len(users)


def _queue_user(pipe, ns: str, user: str, history: list[str] | None, profile: dict | None):
    if history is not None:  # a reload also resets the ingest worker's dedupe window
        pipe.delete(keys.history_key(ns, user))  # one key per DEL: cluster pipelines need it
        pipe.delete(keys.seen_key(ns, user))
        if history:
            pipe.rpush(keys.history_key(ns, user), *history)
    if profile is not None:
        pipe.delete(keys.profile_key(ns, user))
        if profile:
            pipe.hset(keys.profile_key(ns, user), mapping=profile)


def load_from_samples(
    client: RedisClient, ns: str, samples: SampleSet, *, progress: bool = True
) -> int:
    """Every user's latest behaviours and profile values at the end of the training log."""
    loaded = 0
    bar = tqdm(unit="user", disable=not progress, desc="histories")
    for users, histories, profile_columns in samples.latest():
        profiles = {
            user: {f: col[k] for f, col in profile_columns.items() if col[k] is not None}
            for k, user in enumerate(users)
        }
        loaded += load_live_state(client, ns, dict(zip(users, histories, strict=True)), profiles)
        bar.update(len(users))
    bar.close()
    log.info("loaded the histories and profiles of %d users", loaded)
    return loaded
