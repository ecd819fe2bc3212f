"""The benchmark suite: every section in one run, a table per section, then the ratios.

    make bench                     # or: python -m bench.run
    python -m bench.run --publish-rows 200000   # a shorter bulk-load section

Writes bench/results/bench.json. Sections, in order: the model (the bundle's checkpoint, or
one trained now), compute floor (session.run and the GEMM floor), PyTorch eager, the peer
(DeepCTR-Torch predict), in-process path, stage breakdown, Redis fetch, HTTP end to end, the
concurrency-1 ratios side by side, the HTTP floor (uvicorn + session.run alone), Redis memory
per row, bulk load, cluster fetch;
then every ratio next to its goal, PASS or MISS.
About 10 minutes on a 2-core machine (the HTTP section is half of it).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import torch

from bench import (
    cluster_fetch,
    eager,
    floor,
    http_floor,
    http_load,
    inprocess,
    paired,
    peer_latency,
    publish,
    redis_bench,
    stages,
)
from bench.common import cpu_model, write_json
from bench.model import load_bench_model
from bench.ratios import print_ratios, ratios
from bench.report import print_table
from bench.servers import redis_binaries
from bench.stack import published_stack
from bench.workload import catalogue_of


class Sections:
    """Runs each section, prints its table, and keeps its result, duration and load.

    The 1-minute load average after each section shows whether other work shared the cores.
    """

    def __init__(self) -> None:
        self.results: dict = {}
        self.seconds: dict[str, float] = {}
        self.load: dict[str, float] = {}

    def run(self, name: str, fn: Callable, *args, table: Callable | None = None):
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = self.results[name] = fn(*args)
        self.seconds[name] = round(time.perf_counter() - started, 1)
        self.load[name] = round(os.getloadavg()[0], 2)
        if table is not None:
            print_table(*table(result))
        return result


def environment() -> dict:
    redis = redis_binaries()[0]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"),
        "redis_py": _version("redis"),
        "redis_server": f"{redis.version} ({redis.allocator})",
        "load_average_at_start": os.getloadavg()[0],
    }


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def run_all(publish_rows: int) -> dict:
    s = Sections()
    s.results["environment"] = environment()
    bench = s.run("model", load_bench_model)  # may train, with torch's default threads
    s.results["model"] = {"source": bench.source, "parity_max_abs_diff": bench.parity}
    torch.set_num_threads(1)  # no idle intra-op threads next to the timed code
    catalogue, dim = catalogue_of(bench.bundle), bench.schema.item_dim
    s.run("floor", floor.run_floor, bench, table=floor.floor_table)
    s.run("eager", eager.run_eager, bench, table=eager.eager_table)
    s.run("peer", peer_latency.run_peer, bench, table=peer_latency.peer_table)
    with published_stack(bench) as stack:
        on = (*stack.args(), catalogue)
        s.run("inprocess", inprocess.run_inprocess, *on, table=inprocess.inprocess_table)
        s.run("stages", stages.run_stages, *on, table=stages.stages_table)
        s.run(
            "redis_fetch",
            redis_bench.run_fetch,
            *on,
            bench.bundle,
            table=redis_bench.fetch_table,
        )
        s.run("http", http_load.run_http, stack, catalogue, table=http_load.http_table)
        peer_threads = _peer_threads(s.results["peer"])
        s.run(
            "paired",
            paired.run_paired,
            stack,
            bench,
            catalogue,
            peer_threads,
            table=paired.paired_table,
        )
    s.run(
        "http_floor", http_floor.run_http_floor, bench, catalogue, table=http_floor.http_floor_table
    )
    s.run("redis_memory", redis_bench.run_memory, dim, table=redis_bench.memory_table)
    s.run("publish", publish.run_publish, publish_rows, dim, table=publish.publish_table)
    s.run(
        "cluster_fetch",
        cluster_fetch.run_cluster_fetch,
        bench.bundle,
        table=cluster_fetch.cluster_table,
    )
    s.results["ratios"] = ratios(s.results)
    print_ratios(s.results["ratios"], notes(s.results))
    return s.results | {"seconds": s.seconds, "load_average_after": s.load}


def _peer_threads(peer: dict) -> int | None:
    """The thread count of the peer's faster predict() ("2 threads" -> 2); None if skipped."""
    return None if "skipped" in peer else int(peer["reference"].split()[0])


def notes(results: dict) -> list[str]:
    found = [f"model: {results['model']['source']}"]
    if "skipped" in results["peer"]:
        found.append(f"peer ratio skipped: {results['peer']['skipped']}")
    environment = results["environment"]
    found.append(
        f"{environment['cpu']}, {environment['cores']} cores; load average "
        f"{environment['load_average_at_start']:.2f} at the start"
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish-rows", type=int, default=publish.ROWS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} at the start; expect noise", file=sys.stderr)
    started = time.perf_counter()
    results = run_all(args.publish_rows)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    path = write_json("bench.json", results)
    print(f"\nwrote {path}; total {results['total_seconds']:.0f} s")
    print(f"seconds per section: {results['seconds']}")
    print(f"load average after each section: {results['load_average_after']}")
    print(f"load average at the start: {results['environment']['load_average_at_start']:.2f}")


if __name__ == "__main__":
    main()
