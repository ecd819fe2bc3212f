"""Section 1, the compute floor: `session.run` alone, on ready tensors, for the served graph
(what the exporter publishes) and the split one (the form it published before), and the GEMM
floor under them (bench.gemm: the graph's matrix products at this machine's measured matmul
rate). At (50, 100) the two are also timed in alternating rounds.

The sessions are built by the service's own create_session(onnx, "cpu", threads=1), so the
options (one intra-op thread, all graph optimisations) are exactly those in production. The
feeds hold real rows of the bundle: candidates, behaviours, a user and a context.

    python -m bench.floor
"""

from __future__ import annotations

from app.scorer import create_session
from bench.common import Latency, interleaved, ms, time_calls
from bench.gemm import gemm_floor_ms, graph_gemm_flops, matmul_rate
from bench.model import BenchModel, graph_inputs, load_bench_model, random_indices
from core.graph import one_user_feeds

SHAPES = ((20, 10), (50, 100), (50, 1000), (200, 100))  # (T, C)
HEADLINE = "T50_C100"


def ready_feeds(bench: BenchModel, session, t: int, c: int, seed: int = 0) -> dict:
    """Real rows of random items, C candidates and T behaviours (none masked), a user and a
    context, with the leading batch axis."""
    indices = random_indices(bench.bundle, t, c, seed)
    names = [i.name for i in session.get_inputs()]
    return one_user_feeds(names, graph_inputs(bench.bundle, indices))


def time_graph(bench: BenchModel, onnx_bytes: bytes) -> dict[str, Latency]:
    session = create_session(onnx_bytes, "cpu", threads=1)
    timed = {}
    for t, c in SHAPES:
        feeds = ready_feeds(bench, session, t, c)
        timed[f"T{t}_C{c}"] = time_calls(lambda s=session, f=feeds: s.run(None, f))
    return timed


def run_floor(bench: BenchModel) -> dict:
    latency = {form: time_graph(bench, bench.graphs[form]) for form in ("served", "split")}
    flops = graph_gemm_flops(bench.model.dense, 50, 100)
    rate = matmul_rate()
    gemm_ms = gemm_floor_ms(flops, rate)
    served = latency["served"][HEADLINE].p50_ms
    return {
        "latency": latency,
        "served_over_split": served / latency["split"][HEADLINE].p50_ms,
        "gemm_flops": flops,
        "matmul": rate,
        "gemm_floor_ms": gemm_ms,
        "over_gemm_floor": served / gemm_ms,
        "interleaved": interleave_forms(bench),
    }


def interleave_forms(bench: BenchModel) -> dict:
    """The served and the split export at (50, 100), timed in alternating rounds, so that a
    change of load on the machine hits both alike."""
    sessions = {f: create_session(bench.graphs[f], "cpu", threads=1) for f in ("served", "split")}
    feeds = ready_feeds(bench, sessions["served"], 50, 100)
    timed = interleaved({name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()})
    return {
        "parity": {form: bench.parity[form] for form in sessions},
        "latency": timed,
        "served_over_split": timed["served"].p50_ms / timed["split"].p50_ms,
    }


def floor_rows(floor: dict) -> list[list[str]]:
    rows = []
    for t, c in SHAPES:
        served, split = (floor["latency"][name][f"T{t}_C{c}"] for name in ("served", "split"))
        rows.append(
            [
                f"({t}, {c})",
                ms(served.p50_ms),
                ms(served.p99_ms),
                ms(split.p50_ms),
                ms(split.p99_ms),
                f"{served.p50_ms / split.p50_ms:.2f}",
                f"{c / served.p50_ms * 1e3:,.0f}",
            ]
        )
    return rows


def gemm_line(floor: dict) -> str:
    flops, rate = floor["gemm_flops"], floor["matmul"]
    return (
        f"GEMM floor at (50, 100): {flops['flops'] / 1e6:.1f} MFLOP at "
        f"{rate['flops_per_s'] / 1e9:.1f} GFLOP/s (numpy {rate['n']}² float32 peak, 1 thread; "
        f"median {rate['median_flops_per_s'] / 1e9:.1f}) = {ms(floor['gemm_floor_ms'])} ms; "
        f"served p50 / floor = {floor['over_gemm_floor']:.2f} (fastest call / floor = "
        f"{floor['latency']['served'][HEADLINE].best_ms / floor['gemm_floor_ms']:.2f})"
    )


def interleaved_line(floor: dict) -> str:
    found = floor["interleaved"]
    served, split = found["latency"]["served"], found["latency"]["split"]
    return (
        f"served vs split export, interleaved at (50, 100): {ms(served.p50_ms)} vs "
        f"{ms(split.p50_ms)} ms p50 ({found['served_over_split']:.2f}x); parity to PyTorch "
        f"{found['parity']['served']:.1e} / {found['parity']['split']:.1e}"
    )


FLOOR_HEADER = ["(T, C)", "served p50", "p99", "split p50", "p99", "served/split", "cand/s served"]


def floor_table(floor: dict) -> tuple:
    title = "Compute floor: session.run on ready tensors, ms"
    title = f"{title}\n{gemm_line(floor)}\n{interleaved_line(floor)}"
    return title, FLOOR_HEADER, floor_rows(floor)


if __name__ == "__main__":
    from bench.report import print_table

    print_table(*floor_table(run_floor(load_bench_model())))
