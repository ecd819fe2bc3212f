"""The five headline ratios, computed from one run's results (see bench/run.py).

(a) HTTP p50 at concurrency 1 / session.run p50, split graph, T=50 C=100
(b) HTTP candidates/s at concurrency 8 / PyTorch eager candidates/s (8 callers, 1 thread)
(c) write_rows rows/s / redis-benchmark SET rows/s, same server, same row size
(d) Redis bytes per float32 row / 144 raw bytes
(e) session.run p50 split / unsplit graph, T=50 C=100

    python -c "import json; from bench.ratios import ratios; \\
        print(ratios(json.load(open('bench/results/bench.json'))))"
"""

from __future__ import annotations


def _get(value, name: str):
    return value[name] if isinstance(value, dict) else getattr(value, name)


def ratios(results: dict, ratio_d: float) -> dict[str, float]:
    floor_split = _get(results["floor"]["latency"]["split"]["T50_C100"], "p50_ms")
    default = results["http"]["default"]["levels"]
    http_c1 = next(level for level in default if _get(level, "concurrency") == 1)
    http_c8 = next(level for level in default if _get(level, "concurrency") == 8)
    eager = results["eager"]
    return {
        "a": _get(_get(http_c1, "latency"), "p50_ms") / floor_split,
        "b": _get(http_c8, "candidates_per_s") / eager["candidates_per_s_c8"],
        "b_vs_eager_c1": _get(http_c8, "candidates_per_s") / eager["candidates_per_s_c1"],
        "c": results["publish"]["ratio_c"],
        "d": ratio_d,
        "e": results["floor"]["ratio_e"],
    }


MEANINGS = {
    "a": "HTTP p50 c=1 / session.run p50 (split, T=50 C=100)",
    "b": "HTTP cand/s c=8 / PyTorch eager cand/s (8 callers, 1 thread)",
    "b_vs_eager_c1": "HTTP cand/s c=8 / PyTorch eager cand/s (1 caller, 1 thread)",
    "c": "write_rows rows/s / redis-benchmark SET -P 64 rows/s",
    "d": "Redis bytes per fp32 row / 144 raw bytes",
    "e": "session.run p50 split / unsplit (T=50 C=100)",
}


def ratios_table(values: dict[str, float]) -> tuple:
    rows = [[f"({name})", f"{value:.2f}", MEANINGS[name]] for name, value in values.items()]
    return "Ratios", ["ratio", "value", "meaning"], rows
