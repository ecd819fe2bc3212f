"""Section 3b, the HTTP floor: what uvicorn plus session.run cost with nothing else.

bench/floor_app.py answers every POST with session.run on ready tensors (T=50, C=100), run on
a worker thread as the service runs it (`hop`) or on the event loop (`inline`). It is timed
with the HTTP section's load generator and request bodies, at concurrency 1 and 8, so ratio
(a) splits into the stack's share (this app / session.run) and the service's own (service /
this app), and ratio (b) has a ceiling beside it (this app's throughput / eager's).

    python -m bench.http_floor
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from app.scorer import create_session
from bench.common import REPEATS, Latency, median, ms, rate, summarise
from bench.floor import ready_feeds
from bench.http_load import N_PAYLOADS, REQUESTS_PER_RUN, new_event_loop, one_run, raw_request
from bench.model import BenchModel
from bench.workload import C, Catalogue, random_slates, score_body
from devtools.local_redis import free_port, stop_process

MODES = ("hop", "inline")
LEVELS = (1, 8)
START_S = 60.0


def start_floor_app(folder: Path, mode: str) -> tuple[subprocess.Popen, int]:
    """The floor app under uvicorn, with the service's uvicorn options, once it answers."""
    port = free_port()
    env = {"FLOOR_GRAPH": str(folder / "graph.onnx"), "FLOOR_FEEDS": str(folder / "feeds.npz")}
    command = [sys.executable, "-m", "uvicorn", "bench.floor_app:app", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"],
        env={**os.environ, **env, "FLOOR_MODE": mode},
    )
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=2.0)
            return process, port
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_process(process, timeout_s=5)
    raise RuntimeError(f"the floor app ({mode}) did not start")


@contextmanager
def floor_app(bench: BenchModel, mode: str = "hop") -> Iterator[int]:
    """The floor app serving the bench model's served graph; yields its port."""
    session = create_session(bench.graphs["served"], "cpu", threads=1)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as workdir:
        folder = Path(workdir)
        (folder / "graph.onnx").write_bytes(bench.graphs["served"])
        np.savez(folder / "feeds.npz", **ready_feeds(bench, session, 50, C))
        process, port = start_floor_app(folder, mode)
        try:
            yield port
        finally:
            stop_process(process, timeout_s=10)


def time_levels(port: int, bodies: list[bytes]) -> dict[str, dict]:
    requests = [raw_request(port, body) for body in bodies]
    levels = {}
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        for concurrency in LEVELS:
            total = REQUESTS_PER_RUN[concurrency]
            runner.run(one_run(port, requests, concurrency, total // 2))  # warm-up
            runs, rates = [], []
            for _ in range(REPEATS):
                latencies, seconds, errors = runner.run(one_run(port, requests, concurrency, total))
                if errors:
                    raise RuntimeError(f"the floor app answered {errors} errors")
                runs.append(latencies)
                rates.append(len(latencies) / seconds)
            levels[f"c{concurrency}"] = {
                "latency": summarise(runs),
                "candidates_per_s": median(rates) * C,
            }
    return levels


def run_http_floor(bench: BenchModel, catalogue: Catalogue) -> dict:
    bodies = [score_body(slate) for slate in random_slates(catalogue, N_PAYLOADS, seed=4)]
    result = {}
    for mode in MODES:
        with floor_app(bench, mode) as port:
            result[mode] = time_levels(port, bodies)
    return result


def floor_rows(result: dict) -> list[list[str]]:
    rows = []
    for mode in MODES:
        for concurrency in LEVELS:
            level = result[mode][f"c{concurrency}"]
            latency: Latency = level["latency"]
            rows.append(
                [
                    f"uvicorn + session.run, {mode}, c={concurrency}",
                    ms(latency.p50_ms),
                    ms(latency.p99_ms),
                    rate(level["candidates_per_s"]),
                ]
            )
    return rows


def http_floor_table(result: dict) -> tuple:
    title = "HTTP floor: uvicorn + session.run on ready tensors, no parsing, Redis or metrics"
    return title, ["app, mode, concurrency", "p50 ms", "p99 ms", "cand/s"], floor_rows(result)


if __name__ == "__main__":
    from bench.model import load_bench_model
    from bench.report import print_table
    from bench.workload import catalogue_of

    bench = load_bench_model()
    print_table(*http_floor_table(run_http_floor(bench, catalogue_of(bench.bundle))))
