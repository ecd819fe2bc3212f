"""A canary: a second version that a fixed share of users is sent to, the same share on every
replica. A user's arm is a pure function of (user id, salt, percent), so every replica agrees,
a user stays on their arm across requests, and raising the percent only moves users from the
active version to the canary, never back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from core import keys

BUCKETS = 10_000  # assignment resolution: 0.01% of users


@dataclass(frozen=True)
class Canary:
    version: str
    percent: float  # 0 < percent <= 100
    salt: str  # a new salt for each new canary version: a fresh draw of users
    max_error_rate: float | None = None  # replicas abort the canary above this (0..1)
    max_p99_ms: float | None = None  # ... or when its p99 latency passes this

    def __post_init__(self) -> None:
        if not 0 < self.percent <= 100:
            raise ValueError(f"percent must be in (0, 100], got {self.percent}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Canary | None:
        """The stored canary, or None when there is none (or it cannot be read)."""
        if raw is None:
            return None
        try:
            found = json.loads(raw)
            known = {k: found[k] for k in cls.__dataclass_fields__ if k in found}
            return cls(**known)
        except (ValueError, TypeError, KeyError):
            return None

    def takes(self, user_id: str) -> bool:
        """Whether this user is sent to the canary."""
        return bucket_of(user_id, self.salt) < self.percent * BUCKETS / 100


def bucket_of(user_id: str, salt: str) -> int:
    """A stable bucket in [0, BUCKETS) for (salt, user), the same in every process."""
    digest = hashlib.blake2b(f"{salt}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BUCKETS


def end_canary(client, ns: str) -> bool:
    """Remove the canary and announce it (an operator's abort, or a replica's guard)."""
    ended = bool(client.delete(keys.canary_key(ns)))
    if ended:
        client.publish(keys.events_channel(ns), keys.canary_event(None))
    return ended
