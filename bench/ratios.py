"""The headline ratios, each next to its goal, computed from one run's results (bench/run.py).
Every ratio divides two numbers measured in the same run on the same machine.

    python -c "import json; from bench.ratios import print_ratios; \\
        print_ratios(json.load(open('bench/results/bench.json'))['ratios'])"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.report import print_table


@dataclass(frozen=True)
class Goal:
    meaning: str
    at_most: float | None = None  # the ratio passes when ≤ at_most ...
    at_least: float | None = None  # ... or ≥ at_least; neither: shown for context only

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "SKIP"
        if self.at_most is not None:
            return "PASS" if value <= self.at_most else "MISS"
        if self.at_least is not None:
            return "PASS" if value >= self.at_least else "MISS"
        return "-"

    def text(self) -> str:
        if self.at_most is not None:
            return f"≤ {self.at_most:g}"
        return f"≥ {self.at_least:g}" if self.at_least is not None else "-"


GOALS = {
    "a": Goal(
        "HTTP p50 c=1 / session.run p50, side by side (served graph, T=50 C=100)", at_most=1.3
    ),
    "b": Goal("HTTP cand/s c=8 / DeepCTR-Torch predict() cand/s, 8 callers x 1 thread", at_least=3),
    "b_own_eager": Goal("HTTP cand/s c=8 / this model in PyTorch eager, 8 callers x 1 thread"),
    "floor": Goal("session.run p50 / GEMM floor at measured matmul rate", at_most=3),
    "peer": Goal(
        "HTTP p50 c=1 / DeepCTR-Torch 0.3.0 DIN predict() p50, side by side", at_most=0.33
    ),
    "a_apart": Goal("a from the HTTP and floor sections, timed minutes apart"),
    "peer_apart": Goal("peer from the HTTP and peer sections, timed minutes apart"),
    "memory": Goal("Redis bytes per fp32 item row, --row-layout buckets / raw", at_most=1.2),
    "memory_keys": Goal("Redis bytes per fp32 item row, one key per row (default) / raw"),
    "fetch_buckets": Goal("request fetch p50, buckets (one EVAL) / keys (one MGET), cache off"),
    "publish": Goal("write_rows rows/s / redis-benchmark SET -P 64 rows/s", at_least=0.8),
    "publish_buckets": Goal("bucket rows/s (HSET) / redis-benchmark SET -P 64", at_least=0.8),
    "cluster": Goal("request fetch p50, 3-master cluster (--row-groups 6) / one node", at_most=2),
    "cluster_untagged": Goal("request fetch p50, 3-master cluster (one key per row) / one node"),
    "a_stack": Goal("HTTP floor app p50 c=1 / session.run p50, side by side: the stack's share"),
    "a_service": Goal("HTTP p50 c=1 / HTTP floor app p50 c=1, side by side: the service's own"),
    "b_stack": Goal("HTTP floor app cand/s c=8 / DeepCTR-Torch, 8 callers: b's ceiling"),
    "b_vs_eager_c1": Goal("HTTP cand/s c=8 / PyTorch eager cand/s, 1 caller x 1 thread"),
    "floor_fastest": Goal("fastest session.run call / GEMM floor (less load-sensitive)"),
    "served_over_split": Goal("session.run p50 served / split graph (interleaved, T=50 C=100)"),
}


def _get(value, name: str):
    return value[name] if isinstance(value, dict) else getattr(value, name)


def http_level(results: dict, concurrency: int):
    levels = results["http"]["default"]["levels"]
    return next(level for level in levels if _get(level, "concurrency") == concurrency)


def ratios(results: dict) -> dict[str, float | None]:
    """Every ratio whose sections ran; None where a section was skipped."""
    formulas: dict[str, Callable[[dict], float | None]] = {
        "a": lambda r: _paired(r, "a"),
        "b": lambda r: _over_peer_c8(r, _http_c8_rate(r)),
        "b_own_eager": lambda r: _http_c8_rate(r) / r["eager"]["candidates_per_s_c8"],
        "floor": lambda r: r["floor"]["over_gemm_floor"],
        "peer": lambda r: _paired(r, "peer"),
        "a_apart": lambda r: _http_p50(r) / _floor_p50(r),
        "peer_apart": lambda r: _peer(r),
        "memory": lambda r: memory_ratio(r["redis_memory"], "buckets"),
        "memory_keys": lambda r: memory_ratio(r["redis_memory"], "keys"),
        "fetch_buckets": lambda r: r["redis_fetch"]["buckets_over_keys"],
        "publish": lambda r: r["publish"]["ratio"],
        "publish_buckets": lambda r: r["publish"]["ratio_buckets"],
        "cluster": lambda r: r["cluster_fetch"]["ratio"],
        "cluster_untagged": lambda r: r["cluster_fetch"]["ratio_untagged"],
        "a_stack": lambda r: _paired(r, "a_stack"),
        "a_service": lambda r: _paired(r, "a_service"),
        "b_stack": lambda r: _over_peer_c8(r, _stack(r, "c8")["candidates_per_s"]),
        "b_vs_eager_c1": lambda r: _http_c8_rate(r) / r["eager"]["candidates_per_s_c1"],
        "floor_fastest": lambda r: _floor_best(r) / r["floor"]["gemm_floor_ms"],
        "served_over_split": lambda r: r["floor"]["interleaved"]["served_over_split"],
    }
    return {name: formula(results) for name, formula in formulas.items()}


def memory_ratio(memory: list[dict], layout: str) -> float:
    """Bytes per float32 row / its raw bytes in `layout`, on the newest server (the one the
    other sections use)."""
    entry = next(e for e in memory if e["layout"] == layout)
    return entry["float32"]["vs_raw_fp32"]


def _floor_p50(results: dict) -> float:
    return _get(results["floor"]["latency"]["served"]["T50_C100"], "p50_ms")


def _floor_best(results: dict) -> float:
    return _get(results["floor"]["latency"]["served"]["T50_C100"], "best_ms")


def _http_p50(results: dict) -> float:
    return _get(_get(http_level(results, 1), "latency"), "p50_ms")


def _http_c8_rate(results: dict) -> float:
    return _get(http_level(results, 8), "candidates_per_s")


def _stack(results: dict, level: str) -> dict:
    return results["http_floor"]["hop"][level]


def _over_peer_c8(results: dict, candidates_per_s: float) -> float | None:
    peer = results["peer"]
    return None if "skipped" in peer else candidates_per_s / peer["candidates_per_s_c8"]


def _paired(results: dict, name: str) -> float | None:
    found = results["paired"]["ratios"].get(name)
    return None if found is None else found["median"]


def _peer(results: dict) -> float | None:
    peer = results["peer"]
    return None if "skipped" in peer else _http_p50(results) / peer["reference_p50_ms"]


def ratio_rows(values: dict[str, float | None]) -> list[list[str]]:
    rows = []
    for name, value in values.items():
        goal = GOALS[name]
        shown = "-" if value is None else f"{value:.2f}"
        rows.append([f"{name}: {goal.meaning}", shown, goal.text(), goal.verdict(value)])
    return rows


def print_ratios(values: dict[str, float | None], notes: list[str] = ()) -> None:
    header = ["ratio", "value", "goal", "verdict"]
    print_table("Ratios and goals (one run, one machine)", header, ratio_rows(values))
    for note in notes:
        print(f"  note: {note}")
