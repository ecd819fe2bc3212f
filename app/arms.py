"""What each served version (each arm of a canary) did in this replica: requests, errors,
latency and mean score. Feeds /v1/versions and the canary's guards; Prometheus gets the same
numbers with a version label (app/metrics.py)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from core.canary import Canary

RECENT = 1000  # latencies kept per version for the p99 a guard compares
GUARD_MIN_REQUESTS = 50  # a guard judges no version on fewer requests than this


@dataclass
class Arm:
    requests: int = 0
    errors: int = 0
    score_sum: float = 0.0
    scores: int = 0
    recent_seconds: deque = field(default_factory=lambda: deque(maxlen=RECENT))

    def summary(self) -> dict:
        mean = self.score_sum / self.scores if self.scores else None
        return {"requests": self.requests, "errors": self.errors, "mean_score": mean}

    def p99_ms(self) -> float:
        return float(np.percentile(np.fromiter(self.recent_seconds, float), 99) * 1000)


class ArmStats:
    def __init__(self) -> None:
        self._arms: dict[str, Arm] = {}
        self._lock = threading.Lock()

    def record(self, version: str, ok: bool, seconds: float, scores: list[float] | None) -> None:
        with self._lock:
            arm = self._arms.setdefault(version, Arm())
            arm.requests += 1
            arm.errors += not ok
            arm.recent_seconds.append(seconds)
            if scores:
                arm.score_sum += float(sum(scores))
                arm.scores += len(scores)

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {version: arm.summary() for version, arm in self._arms.items()}

    def breach(self, canary: Canary) -> str | None:
        """Why the canary's own numbers in this replica cross its guards, or None."""
        with self._lock:
            arm = self._arms.get(canary.version)
            if arm is None or arm.requests < GUARD_MIN_REQUESTS:
                return None
            error_rate, p99 = arm.errors / arm.requests, arm.p99_ms()
        if canary.max_error_rate is not None and error_rate > canary.max_error_rate:
            return f"error rate {error_rate:.3f} > {canary.max_error_rate}"
        if canary.max_p99_ms is not None and p99 > canary.max_p99_ms:
            return f"p99 {p99:.1f} ms > {canary.max_p99_ms} ms"
        return None
