"""Wall-clock timing of a call: warm-up, then repeats until a count or a time budget is spent.

from bench.gpu.timing import Budget, time_call
stats = time_call(lambda: session.run(None, feeds), Budget.full())
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Budget:
    warmup: int
    min_repeats: int
    max_repeats: int
    seconds: float  # per measured cell; the repeats stop once it is spent (after the minimum)

    @classmethod
    def full(cls) -> Budget:
        return cls(warmup=20, min_repeats=30, max_repeats=500, seconds=3.0)

    @classmethod
    def quick(cls) -> Budget:
        return cls(warmup=2, min_repeats=3, max_repeats=20, seconds=0.3)


@dataclass
class Stats:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(seconds: list[float] | np.ndarray) -> Stats:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return Stats(
        float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean()), len(ms)
    )


def time_call(call: Callable[[], object], budget: Budget) -> Stats:
    """Warm up (at most a third of the budget), then time each call."""
    deadline = time.perf_counter() + budget.seconds / 3
    for _ in range(budget.warmup):
        call()
        if time.perf_counter() > deadline:
            break
    times: list[float] = []
    deadline = time.perf_counter() + budget.seconds
    while len(times) < budget.max_repeats:
        if len(times) >= budget.min_repeats and time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return summarise(times)
