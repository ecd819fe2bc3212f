"""Timing helpers shared by the benchmark sections: medians and p99s over repeats.

Every figure is the median, over `repeats` runs, of that run's own statistic (p50 or p99),
so one slow run cannot move it; the spread of the runs' p50s is kept to show stability.

    python -c "from bench.common import time_calls; print(time_calls(lambda: None))"
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESULTS_DIR = Path("bench/results")
REPEATS = 5


@dataclass
class Latency:
    p50_ms: float  # median over repeats of each repeat's p50
    p99_ms: float  # median over repeats of each repeat's p99
    spread_ms: tuple[float, float]  # lowest and highest p50 among the repeats
    calls: int  # timed calls per repeat
    repeats: int
    best_ms: float = float("nan")  # the fastest single call: what a quiet moment allows

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(runs: list[np.ndarray]) -> Latency:
    """Per-call seconds, one array per repeat -> milliseconds."""
    p50s = [float(np.percentile(run, 50)) * 1e3 for run in runs]
    p99s = [float(np.percentile(run, 99)) * 1e3 for run in runs]
    return Latency(
        p50_ms=float(np.median(p50s)),
        p99_ms=float(np.median(p99s)),
        spread_ms=(min(p50s), max(p50s)),
        calls=min(len(run) for run in runs),
        repeats=len(runs),
        best_ms=min(float(run.min()) for run in runs) * 1e3,
    )


def calls_for_budget(fn: Callable[[], object], budget_s: float, lo: int, hi: int) -> int:
    """How many calls of fn fit in budget_s (after a short warm-up), clamped to [lo, hi]."""
    for _ in range(3):
        fn()
    started = time.perf_counter()
    fn()
    per_call = max(time.perf_counter() - started, 1e-7)
    return int(min(max(budget_s / per_call, lo), hi))


def time_calls(
    fn: Callable[[], object],
    *,
    repeats: int = REPEATS,
    budget_s: float = 0.4,
    lo: int = 30,
    hi: int = 3000,
) -> Latency:
    """Latency of fn: `repeats` runs of n calls each, n chosen to fill budget_s per run."""
    n = calls_for_budget(fn, budget_s, lo, hi)
    runs = []
    for _ in range(repeats):
        run = np.empty(n)
        for i in range(n):
            started = time.perf_counter()
            fn()
            run[i] = time.perf_counter() - started
        runs.append(run)
    return summarise(runs)


def interleaved(calls: dict[str, Callable[[], object]], rounds: int = 7, n: int = 40):
    """Latency per candidate; each round times every candidate n times, in turn."""
    runs: dict[str, list[np.ndarray]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            seconds = np.empty(n)
            for i in range(n):
                started = time.perf_counter()
                fn()
                seconds[i] = time.perf_counter() - started
            runs[name].append(seconds)
    return {name: summarise(timed) for name, timed in runs.items()}


def median(values: list[float]) -> float:
    return float(np.median(values))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path


def _jsonable(value: object) -> object:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def rate(value: float) -> str:
    return f"{value / 1e3:.1f}k" if value >= 1e4 else f"{value:.0f}"
