"""Section 3c, the concurrency-1 ratios side by side: the service over HTTP, the HTTP floor
app (bench/floor_app.py), session.run in this process and the peer's predict(), timed in
rounds; each round times all four, starting one later in the order than the round before.

The sections before time each of these minutes apart; on a shared 2-core VM the speed of the
cores drifts over minutes (the same session.run has measured 0.9 and 1.9 ms in one session),
and a ratio of two figures taken apart carries that drift. Here every round times all four
within about two seconds, each round gives its own ratios, and the median over rounds is
reported with the lowest and highest round.

    python -m bench.paired
"""

from __future__ import annotations

import asyncio
import functools
import time

import numpy as np
import torch

from app.scorer import create_session
from bench.common import RESULTS_DIR, median
from bench.floor import ready_feeds
from bench.http_floor import floor_app
from bench.http_load import N_PAYLOADS, new_event_loop, one_run, raw_request
from bench.model import BenchModel, random_indices
from bench.peer_latency import PREDICT_BATCH, deepctr_din, predict_inputs
from bench.servers import running_service
from bench.workload import C, Catalogue, T, random_slates, score_body

ROUNDS = 7
HTTP_CALLS = 150  # per round and server
LOCAL_CALLS = 100  # session.run calls per round; the peer's predict() gets a third of these


def timed_p50(fn, n: int) -> float:
    """p50 in ms of n back-to-back calls (after two untimed ones)."""
    fn(), fn()
    times = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - started
    return float(np.median(times)) * 1e3


def peer_predict(bench: BenchModel, threads: int | None):
    """predict() of one request as a call, with the peer section's faster thread count; None
    when the peer is not installed or was skipped."""
    if threads is None:
        return None
    try:
        model = deepctr_din(bench)
    except ImportError:
        return None
    inputs = predict_inputs(bench, random_indices(bench.bundle, T, C, seed=3))

    def predict():
        torch.set_num_threads(threads)
        try:
            return model.predict(inputs, PREDICT_BATCH)
        finally:
            torch.set_num_threads(1)

    return predict


def run_paired(stack, bench: BenchModel, catalogue: Catalogue, peer_threads: int | None) -> dict:
    bodies = [score_body(slate) for slate in random_slates(catalogue, N_PAYLOADS, seed=4)]
    session = create_session(bench.graphs["served"], "cpu", threads=1)
    feeds = ready_feeds(bench, session, T, C)
    output = session.get_outputs()[0].name  # the scores only, as the service runs it
    predict = peer_predict(bench, peer_threads)
    url, ns = stack.server.url, stack.ns
    log_path = RESULTS_DIR / "uvicorn.log"
    rounds = []
    with (
        running_service(url, ns, log_path) as service,
        floor_app(bench) as floor_port,
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        servers = {"service": service.port, "floor_app": floor_port}
        requests = {name: [raw_request(port, b) for b in bodies] for name, port in servers.items()}

        def http_p50(name: str) -> float:
            latencies, _, errors = runner.run(one_run(servers[name], requests[name], 1, HTTP_CALLS))
            if errors:
                raise RuntimeError(f"{name} answered {errors} errors")
            return float(np.median(latencies)) * 1e3

        for name in servers:
            http_p50(name)  # warm-up
        calls = {name: functools.partial(http_p50, name) for name in servers}
        calls["session_run"] = lambda: timed_p50(lambda: session.run([output], feeds), LOCAL_CALLS)
        if predict is not None:
            calls["peer"] = lambda: timed_p50(predict, LOCAL_CALLS // 3)
        order = list(calls)
        for k in range(ROUNDS):  # each round starts one later in the order
            turn = order[k % len(order) :] + order[: k % len(order)]
            rounds.append({name: calls[name]() for name in turn})
    return {"rounds": rounds, "ratios": paired_ratios(rounds)}


PAIRS = {
    "a": ("service", "session_run"),
    "a_stack": ("floor_app", "session_run"),
    "a_service": ("service", "floor_app"),
    "peer": ("service", "peer"),
}


def paired_ratios(rounds: list[dict]) -> dict[str, dict]:
    """Per ratio: the median over rounds of each round's own ratio, and the lowest and
    highest round."""
    found = {}
    for name, (top, bottom) in PAIRS.items():
        values = [r[top] / r[bottom] for r in rounds if top in r and bottom in r]
        if values:
            found[name] = {"median": median(values), "range": (min(values), max(values))}
    return found


def paired_rows(result: dict) -> list[list[str]]:
    rows = []
    columns = ("service", "floor_app", "session_run", "peer")
    for k, timed in enumerate(result["rounds"], 1):
        rows.append([str(k), *(f"{timed[c]:.3f}" if c in timed else "-" for c in columns)])
    return rows


def paired_table(result: dict) -> tuple:
    ratios = ", ".join(
        f"{name} {r['median']:.2f} ({r['range'][0]:.2f}-{r['range'][1]:.2f})"
        for name, r in result["ratios"].items()
    )
    title = f"Side by side at c=1, p50 ms per round (T={T} C={C}); median ratios: {ratios}"
    header = ["round", "service HTTP", "floor app HTTP", "session.run", "peer predict()"]
    return title, header, paired_rows(result)


if __name__ == "__main__":
    from bench.eager import DEFAULT_THREADS
    from bench.model import load_bench_model
    from bench.report import print_table
    from bench.stack import published_stack
    from bench.workload import catalogue_of

    bench = load_bench_model()
    torch.set_num_threads(1)
    with published_stack(bench) as stack:
        result = run_paired(stack, bench, catalogue_of(bench.bundle), DEFAULT_THREADS)
    print_table(*paired_table(result))
