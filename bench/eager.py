"""Section 6, the PyTorch eager baseline: the same trained DIN, scored on ids in-process.

What a user would write without this system, the way DeepCTR-Torch's predict() scores:
in-memory nn.Embedding tables, and a batch of 100 rows, each candidate paired with the same
50-behaviour history, user and context, through DIN.forward under torch.no_grad().
`torch.set_num_threads(1)` matches the service's one onnxruntime thread; the default thread
count is timed too. "broadcast" runs the exported graph's maths in eager mode (one history,
broadcast over the candidates, first layer split), to separate the runtime from the
formulation. Concurrency 8 runs 8 Python threads, each calling forward in a loop.

    python -m bench.eager
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from bench.common import REPEATS, Latency, median, ms, rate, time_calls
from bench.model import BenchModel, load_bench_model, paired_inputs, random_indices
from bench.workload import C, T
from export.model import attention_form

CONCURRENCY = 8
CONCURRENT_SECONDS = 1.0
DEFAULT_THREADS = torch.get_num_threads()  # read at import, before any caller changes it


def eager_call(bench: BenchModel, seed: int = 3):
    """forward() on ready id tensors: C candidates, each paired with the same user."""
    inputs = paired_inputs(random_indices(bench.bundle, T, C, seed))
    model = bench.model.eval()

    def call() -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(model(*inputs))

    return call


def broadcast_call(bench: BenchModel, seed: int = 3):
    """The served formulation in eager mode: lookups, then dense over (1, C) and (1, T)."""
    indices = random_indices(bench.bundle, T, C, seed)
    items = torch.from_numpy(np.concatenate([indices.history, indices.candidates]))
    user = torch.from_numpy(indices.user)[None]  # (1, Fu)
    context = torch.from_numpy(indices.context)[None]  # (1, Fc)
    model, mask = bench.model.eval(), torch.ones(1, T)

    def call() -> torch.Tensor:
        with torch.no_grad():
            goods = model.goods(items)  # (T + C, Di)
            sides = (model.concat_fields("user", user), model.concat_fields("context", context))
            return model.dense(goods[None, T:], goods[None, :T], mask, *sides)  # (1, C)

    return call


def concurrent_rate(call, threads: int = CONCURRENCY, seconds: float = CONCURRENT_SECONDS):
    """Calls/s with `threads` threads calling in a loop for `seconds`, median over repeats."""
    return median([_calls_per_second(call, threads, seconds) for _ in range(REPEATS)])


def _calls_per_second(call, threads: int, seconds: float) -> float:
    counts, stop = [0] * threads, threading.Event()
    workers = [threading.Thread(target=_loop, args=(call, stop, counts, i)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def _loop(call, stop: threading.Event, counts: list[int], slot: int) -> None:
    while not stop.is_set():
        call()
        counts[slot] += 1


def run_eager(bench: BenchModel) -> dict:
    results: dict[str, object] = {"default_threads": DEFAULT_THREADS}
    try:
        torch.set_num_threads(DEFAULT_THREADS)
        results["paired_default_threads"] = time_calls(eager_call(bench))
        torch.set_num_threads(1)
        results["paired_1_thread"] = time_calls(eager_call(bench))
        results["paired_1_thread_c8_calls_per_s"] = concurrent_rate(eager_call(bench))
        with attention_form(bench.model, "split"):
            results["broadcast_1_thread"] = time_calls(broadcast_call(bench))
    finally:
        torch.set_num_threads(1)
    results["candidates_per_s_c1"] = C / results["paired_1_thread"].p50_ms * 1e3
    results["candidates_per_s_c8"] = C * results["paired_1_thread_c8_calls_per_s"]
    return results


def eager_rows(result: dict) -> list[list[str]]:
    def row(label: str, latency: Latency) -> list[str]:
        return [label, ms(latency.p50_ms), ms(latency.p99_ms), rate(C / latency.p50_ms * 1e3)]

    threads = result["default_threads"]
    return [
        row(
            f"paired batch of {C}, {threads} threads (torch default)",
            result["paired_default_threads"],
        ),
        row(f"paired batch of {C}, 1 thread", result["paired_1_thread"]),
        [
            f"paired batch of {C}, 1 thread, {CONCURRENCY} callers",
            "-",
            "-",
            rate(result["candidates_per_s_c8"]),
        ],
        row("broadcast + split, 1 thread", result["broadcast_1_thread"]),
    ]


EAGER_HEADER = ["PyTorch eager, T=50 C=100", "p50 ms", "p99 ms", "cand/s"]


def eager_table(result: dict) -> tuple:
    return "PyTorch eager, the same trained model", EAGER_HEADER, eager_rows(result)


if __name__ == "__main__":
    from bench.report import print_table

    print_table(*eager_table(run_eager(load_bench_model())))
