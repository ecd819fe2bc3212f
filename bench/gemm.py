"""The GEMM floor: how long the dense graph's matrix products alone would take at this
machine's measured matmul rate.

The rate is numpy's float32 1024 x 1024 matmul on one BLAS thread: its peak, the fastest of
5 x 10 timed calls (the median rate is kept too). The graph's GEMM FLOPs are counted by
torch's FlopCounterMode on the module the split graph is exported from, at the given shape
(every matmul, with its bias-free 2·M·N·K; element-wise work is not counted).

    python -m bench.gemm
"""

from __future__ import annotations

import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.flop_counter import FlopCounterMode

from bench.common import REPEATS, summarise
from core import graph
from export.model import DenseDIN, attention_form
from export.to_onnx import example_inputs

PEAK_N = 1024


def matmul_rate(n: int = PEAK_N, repeats: int = REPEATS, calls: int = 10) -> dict:
    """float32 FLOP/s of an n x n matmul on one BLAS thread: the peak (fastest call) and the
    median of the repeats' p50s. A loaded machine slows long calls most, so the peak is the
    figure the floor uses."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(3):
            a @ b
        runs = [_timed_calls(lambda: a @ b, calls) for _ in range(repeats)]
    flops = 2 * n**3
    latency = summarise(runs)
    return {
        "n": n,
        "latency": latency,
        "flops_per_s": flops / min(float(run.min()) for run in runs),
        "median_flops_per_s": flops / (latency.p50_ms / 1e3),
    }


def _timed_calls(fn, n: int) -> np.ndarray:
    seconds = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        fn()
        seconds[i] = time.perf_counter() - started
    return seconds


@torch.no_grad()
def graph_gemm_flops(dense: DenseDIN, t: int, c: int) -> dict:
    """GEMM FLOPs of one request (B=1) through the split graph's formulation."""
    schema = dense.config.schema
    inputs = example_inputs(schema, b=1, c=c, t=t)
    args = [inputs[name] for name in (graph.CANDIDATES, graph.HISTORY, graph.MASK)]
    args += [inputs[graph.USER] if schema.user else None]
    args += [inputs[graph.CONTEXT] if schema.context else None]
    with attention_form(dense.eval(), "split"), FlopCounterMode(display=False) as counter:
        dense.logits_and_weights(*args)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return {"t": t, "c": c, "flops": counter.get_total_flops(), "by_op": by_op}


def gemm_floor_ms(flops: dict, rate: dict) -> float:
    return flops["flops"] / rate["flops_per_s"] * 1e3


if __name__ == "__main__":
    from bench.model import load_bench_model

    counted = graph_gemm_flops(load_bench_model().model.dense, 50, 100)
    measured = matmul_rate()
    print(f"graph GEMM FLOPs at T=50 C=100: {counted['flops'] / 1e6:.1f} M {counted['by_op']}")
    peak, typical = measured["flops_per_s"] / 1e9, measured["median_flops_per_s"] / 1e9
    print(f"matmul {PEAK_N}²: peak {peak:.1f} GFLOP/s, median {typical:.1f}")
    print(f"GEMM floor: {gemm_floor_ms(counted, measured):.3f} ms")
