"""Section 1, the compute floor: `session.run` alone, on ready tensors, split vs unsplit graph.

The sessions are built by the service's own create_session(onnx, "cpu", threads=1), so the
options (one intra-op thread, all graph optimisations) are exactly those in production.

    python -m bench.floor
"""

from __future__ import annotations

import numpy as np

from app.scorer import create_session
from bench.common import Latency, ms, time_calls
from bench.model import BenchModel, load_bench_model, one_user_feeds

SHAPES = ((20, 10), (50, 100), (50, 1000), (200, 100))  # (T, C)
GRAPHS = ("split", "unsplit")


def ready_feeds(bench: BenchModel, session, t: int, c: int, seed: int = 0) -> dict:
    """Real goods rows of random items: C candidates and T behaviours, none masked."""
    rng = np.random.default_rng(seed)
    n_items = len(bench.bundle.tables["item"].ids)
    cand = bench.item_rows(rng.choice(np.arange(1, n_items + 1), size=c, replace=c > n_items))
    hist = bench.item_rows(rng.choice(np.arange(1, n_items + 1), size=t, replace=t > n_items))
    return one_user_feeds(session, cand, hist, np.ones(t, np.float32))


def run_floor(bench: BenchModel) -> dict:
    graphs = {"split": bench.bundle.onnx, "unsplit": bench.onnx_unsplit}
    results: dict[str, dict[str, Latency]] = {}
    for name, onnx_bytes in graphs.items():
        session = create_session(onnx_bytes, "cpu", threads=1)
        results[name] = {}
        for t, c in SHAPES:
            feeds = ready_feeds(bench, session, t, c)
            results[name][f"T{t}_C{c}"] = time_calls(lambda s=session, f=feeds: s.run(None, f))
    split, unsplit = results["split"]["T50_C100"], results["unsplit"]["T50_C100"]
    return {"latency": results, "ratio_e": split.p50_ms / unsplit.p50_ms}


def floor_rows(floor: dict) -> list[list[str]]:
    rows = []
    for t, c in SHAPES:
        key = f"T{t}_C{c}"
        split, unsplit = floor["latency"]["split"][key], floor["latency"]["unsplit"][key]
        rows.append(
            [
                f"({t}, {c})",
                ms(split.p50_ms),
                ms(split.p99_ms),
                ms(unsplit.p50_ms),
                ms(unsplit.p99_ms),
                f"{split.p50_ms / unsplit.p50_ms:.2f}",
                f"{c / split.p50_ms * 1e3:,.0f}",
            ]
        )
    return rows


FLOOR_HEADER = ["(T, C)", "split p50", "p99", "unsplit p50", "p99", "split/unsplit", "cand/s split"]


def floor_table(floor: dict) -> tuple:
    return "Compute floor: session.run on ready tensors, ms", FLOOR_HEADER, floor_rows(floor)


if __name__ == "__main__":
    from bench.report import print_table

    print_table(*floor_table(run_floor(load_bench_model())))
