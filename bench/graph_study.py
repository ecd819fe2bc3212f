"""Where `session.run` spends its time at T=50, C=100, and what local variants of the dense
graph (bench.graph_variants) and of the session options change.

1. onnxruntime's own profiler (SessionOptions.enable_profiling) on the current export and on
   the fastest variant: each node's median kernel time over the profiled runs, summed by op.
2. Every variant, timed interleaved (round r times each candidate in turn, so drift on a shared
   machine hits them alike): median over rounds of each round's p50; and its kernel time, the
   sum of its nodes' median kernel times, which moves far less with other work on the machine
   (the fastest variant is chosen by it). Parity: the largest abs difference, over scores and
   attention weights, to the PyTorch DenseDIN on the same rows, across (T, C) = (50, 100) x 2,
   (20, 10), (200, 100), a half-masked history and B = 2.
3. The session knobs on the current and the fastest graph: graph optimisation level,
   intra-op threads at C = 100 and C = 1000, and float16 weights and inputs.

The floor column divides by the GEMM floor (bench.gemm) measured in the same run.

    python -m bench.graph_study      # writes bench/results/graph_study.json
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bench.common import Latency, cpu_model, interleaved, ms, write_json
from bench.gemm import gemm_floor_ms, graph_gemm_flops, matmul_rate
from bench.graph_variants import VARIANTS, export_variant
from bench.model import BenchModel, graph_inputs, load_bench_model, random_indices
from bench.report import print_table
from core import graph
from core.graph import one_user_feeds

CURRENT = "split export (the former one)"
ROUNDS, CALLS = 21, 12  # many short rounds: a burst of other work hits every candidate alike
PROFILED_RUNS = 200
LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
GEMM_OPS = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm"}
PARITY_TOLERANCE = 1e-5


def session_for(onnx_bytes: bytes, level: str = "all", threads: int = 1, profile: str = ""):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = LEVELS[level]
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def request_feeds(bench: BenchModel, t: int, c: int, seed: int = 0) -> dict[str, np.ndarray]:
    inputs = graph_inputs(bench.bundle, random_indices(bench.bundle, t, c, seed))
    return one_user_feeds(graph.input_names(bench.schema), inputs)


def parity_cases(bench: BenchModel) -> list[dict[str, np.ndarray]]:
    shapes = ((50, 100, 0), (50, 100, 1), (20, 10, 2), (200, 100, 3))
    cases = [request_feeds(bench, t, c, seed) for t, c, seed in shapes]
    masked = request_feeds(bench, 50, 100, 4)
    masked[graph.MASK] = masked[graph.MASK].copy()
    masked[graph.MASK][:, 25:] = 0.0
    pair = [request_feeds(bench, 50, 100, seed) for seed in (5, 6)]
    batch = {name: np.concatenate([f[name] for f in pair]) for name in pair[0]}
    return [*cases, masked, batch]


@torch.no_grad()
def reference(bench: BenchModel, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """PyTorch's scores (B, C) and weights (B, C, T) on the same rows."""
    named = {name: torch.from_numpy(array) for name, array in feeds.items()}
    args = [named[n] for n in (graph.CANDIDATES, graph.HISTORY, graph.MASK)]
    logits, weights = bench.model.dense.logits_and_weights(
        *args, named.get(graph.USER), named.get(graph.CONTEXT)
    )
    return torch.sigmoid(logits).numpy(), weights.numpy()


def parity(session, bench: BenchModel, cases: list[dict], dtype=np.float32) -> float:
    worst = 0.0
    for feeds in cases:
        got = session.run(list(graph.OUTPUTS), {k: v.astype(dtype) for k, v in feeds.items()})
        for mine, theirs in zip(got, reference(bench, feeds), strict=True):
            worst = max(worst, float(np.abs(mine.astype(np.float32) - theirs).max()))
    return worst


def profile_ops(graphs: dict[str, bytes], feeds: dict, runs: int = PROFILED_RUNS) -> dict:
    """Per graph: each node's median kernel time (µs) over `runs` profiled runs, and the sums
    by op. The graphs take turns run by run, so other work on the machine hits them alike."""
    folder = Path("bench/results")
    sessions = {
        name: session_for(onnx, profile=str(folder / f"ort-profile-{k}"))
        for k, (name, onnx) in enumerate(graphs.items())
    }
    for _ in range(runs):
        for session in sessions.values():
            session.run(None, feeds)
    return {name: read_profile(Path(s.end_profiling())) for name, s in sessions.items()}


def read_profile(path: Path) -> dict:
    events = json.loads(path.read_text())
    path.unlink()
    times, about = defaultdict(list), {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            times[node].append(event["dur"])
            about[node] = (event["args"]["op_name"], event["args"].get("output_type_shape"))
    nodes = {node: float(np.median(durations)) for node, durations in times.items()}
    by_op = Counter()
    for node, us in nodes.items():
        by_op[about[node][0]] += us
    top = sorted(nodes, key=nodes.get, reverse=True)[:12]
    return {
        "total_us": sum(nodes.values()),
        "gemm_us": sum(us for op, us in by_op.items() if op in GEMM_OPS),
        "by_op": dict(by_op.most_common()),
        "top_nodes": [[node, about[node][0], str(about[node][1]), nodes[node]] for node in top],
    }


def time_variants(bench: BenchModel, graphs: dict[str, bytes], cases: list[dict]) -> dict:
    """Per variant: session.run latency (interleaved), kernel time (profiled), parity."""
    sessions = {name: session_for(onnx) for name, onnx in graphs.items()}
    feeds = request_feeds(bench, 50, 100)
    calls = {name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()}
    latency = interleaved(calls, ROUNDS, CALLS)
    profiles = profile_ops(graphs, feeds)
    return {
        name: {
            "latency": latency[name],
            "kernel_us": profiles[name]["total_us"],
            "profile": profiles[name],
            "parity": parity(s, bench, cases),
        }
        for name, s in sessions.items()
    }


def fastest(variants: dict) -> str:
    """The exact variant with the least kernel time: the sum of per-node medians moves much
    less with other work on the machine than session.run's p50 does."""
    exact = {n: v for n, v in variants.items() if v["parity"] <= PARITY_TOLERANCE}
    return min(exact, key=lambda n: exact[n]["kernel_us"])


def time_knobs(bench: BenchModel, graphs: dict[str, bytes], cases: list[dict]) -> dict:
    """Optimisation levels and intra-op threads, per graph; float16 of each graph."""
    knobs: dict[str, dict] = {}
    for graph_name, onnx in graphs.items():
        for level in LEVELS:
            knobs[f"{graph_name} | level {level}"] = {"onnx": onnx, "level": level}
        for c in (100, 1000):
            for threads in (1, 2):
                knobs[f"{graph_name} | C={c}, {threads} threads"] = {
                    "onnx": onnx,
                    "threads": threads,
                    "c": c,
                }
    results = {}
    for c in (100, 1000):
        group = {k: v for k, v in knobs.items() if v.get("c", 100) == c}
        results |= time_group(bench, group, cases, c)
    return results


def time_group(bench: BenchModel, group: dict, cases: list[dict], c: int) -> dict:
    feeds = request_feeds(bench, 50, c)
    sessions = {
        name: session_for(spec["onnx"], spec.get("level", "all"), spec.get("threads", 1))
        for name, spec in group.items()
    }
    calls = {name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()}
    latency = interleaved(calls, ROUNDS, CALLS if c == 100 else 3)
    return {
        name: {"latency": latency[name], "parity": parity(s, bench, cases), "c": c}
        for name, s in sessions.items()
    }


def time_fp16(bench: BenchModel, name: str, cases: list[dict]) -> dict:
    """The variant with float16 weights and inputs (onnxruntime's CPU kernels, as they are)."""
    half = copy.deepcopy(bench.model.dense).half()
    session = session_for(export_variant(half, VARIANTS[name], dtype=torch.float16))
    feeds = {k: v.astype(np.float16) for k, v in request_feeds(bench, 50, 100).items()}
    latency = interleaved({"fp16": lambda: session.run(None, feeds)}, ROUNDS, CALLS)["fp16"]
    return {"latency": latency, "parity": parity(session, bench, cases, np.float16)}


def run_study(bench: BenchModel) -> dict:
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    cases = parity_cases(bench)
    graphs = {name: export_variant(bench.model.dense, v) for name, v in VARIANTS.items()}
    flops, rate = graph_gemm_flops(bench.model.dense, 50, 100), matmul_rate()
    variants = time_variants(bench, graphs, cases)
    best = fastest(variants)
    return {
        "gemm_floor_ms": gemm_floor_ms(flops, rate),
        "gemm_flops": flops,
        "matmul": rate,
        "variants": variants,
        "fastest": best,
        "knobs": time_knobs(bench, {CURRENT: graphs[CURRENT], best: graphs[best]}, cases),
        "fp16": {best: time_fp16(bench, best, cases)},
        "profile": {name: entry.pop("profile") for name, entry in variants.items()},
        "cpu": cpu_model(),
        "load_average": [load_before, os.getloadavg()[0]],
    }


def variant_rows(study: dict) -> list[list[str]]:
    floor, current = study["gemm_floor_ms"], study["variants"][CURRENT]
    rows = []
    for name, entry in study["variants"].items():
        latency: Latency = entry["latency"]
        rows.append(
            [
                name,
                ms(latency.p50_ms),
                f"{latency.p50_ms / current['latency'].p50_ms:.2f}",
                f"{latency.p50_ms / floor:.2f}",
                f"{entry['kernel_us']:.0f}",
                f"{entry['kernel_us'] / current['kernel_us']:.2f}",
                f"{entry['kernel_us'] / 1e3 / floor:.2f}",
                f"{entry['parity']:.1e}",
            ]
        )
    return rows


def knob_rows(study: dict) -> list[list[str]]:
    entries = study["knobs"] | {f"{n} | float16": e for n, e in study["fp16"].items()}
    floor = study["gemm_floor_ms"]
    return [
        [
            name,
            ms(e["latency"].p50_ms),
            ms(e["latency"].p99_ms),
            f"{e['latency'].p50_ms / floor:.2f}" if e.get("c", 100) == 100 else "-",
            f"{e['parity']:.1e}",
        ]
        for name, e in entries.items()
    ]


def profile_rows(profile: dict) -> list[list[str]]:
    total = profile["total_us"]
    rows = [[op, f"{us:.0f}", f"{us / total:.1%}"] for op, us in profile["by_op"].items()]
    share = profile["gemm_us"] / total
    return [
        *rows,
        ["all GEMM (MatMul, Gemm, FusedMatMul)", f"{profile['gemm_us']:.0f}", f"{share:.1%}"],
    ]


def node_rows(profile: dict) -> list[list[str]]:
    return [
        [node[:48], op, shape[:60], f"{us:.0f}"] for node, op, shape, us in profile["top_nodes"]
    ]


def print_study(study: dict) -> None:
    rate, load = study["matmul"], study["load_average"]
    print(f"{study['cpu']}; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after")
    print(
        f"GEMM floor at (50, 100): {study['gemm_flops']['flops'] / 1e6:.1f} MFLOP at "
        f"{rate['flops_per_s'] / 1e9:.1f} GFLOP/s = {ms(study['gemm_floor_ms'])} ms"
    )
    print(f"fastest exact variant by kernel time: {study['fastest']}")
    head = ["variant (T=50, C=100, 1 thread)", "p50 ms", "/ current", "/ floor"]
    head += ["kernels µs", "/ current", "/ floor", "parity"]
    print_table("Graph variants, session.run", head, variant_rows(study))
    head = ["graph | knob", "p50 ms", "p99 ms", "/ floor", "parity"]
    print_table("Session knobs", head, knob_rows(study))
    for name in (CURRENT, study["fastest"]):
        profile = study["profile"][name]
        title = f"onnxruntime profile, {name}: {profile['total_us']:.0f} µs of kernels per run"
        print_table(title, ["op", "µs", "share"], profile_rows(profile))
        print_table(f"Slowest nodes, {name}", ["node", "op", "output", "µs"], node_rows(profile))


def main() -> None:
    study = run_study(load_bench_model())
    print_study(study)
    print(f"wrote {write_json('graph_study.json', study)}")


if __name__ == "__main__":
    main()
