"""Section 1, the compute floor: `session.run` alone, on ready tensors, split vs unsplit graph,
and the GEMM floor under it (bench.gemm: the graph's matrix products at this machine's
measured matmul rate). At (50, 100) the current export is also timed interleaved with the
export proposed for export/model.py (bench.graph_variants.PROPOSED: the same weights and
maths, parity checked), so the floor ratio it would reach is measured in the same run.

The sessions are built by the service's own create_session(onnx, "cpu", threads=1), so the
options (one intra-op thread, all graph optimisations) are exactly those in production. The
feeds hold real rows of the bundle: candidates, behaviours, a user and a context.

    python -m bench.floor
"""

from __future__ import annotations

from app.scorer import create_session
from bench.common import Latency, interleaved, ms, time_calls
from bench.gemm import gemm_floor_ms, graph_gemm_flops, matmul_rate
from bench.graph_variants import PROPOSED, VARIANTS, export_variant
from bench.model import (
    PARITY_TOLERANCE,
    BenchModel,
    graph_inputs,
    load_bench_model,
    parity_with_graph,
    random_indices,
)
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
    latency = {"split": time_graph(bench, bench.bundle.onnx)}
    latency["unsplit"] = time_graph(bench, bench.onnx_unsplit)
    flops = graph_gemm_flops(bench.model.dense, 50, 100)
    rate = matmul_rate()
    gemm_ms = gemm_floor_ms(flops, rate)
    split = latency["split"][HEADLINE].p50_ms
    return {
        "latency": latency,
        "split_over_unsplit": split / latency["unsplit"][HEADLINE].p50_ms,
        "gemm_flops": flops,
        "matmul": rate,
        "gemm_floor_ms": gemm_ms,
        "over_gemm_floor": split / gemm_ms,
        "proposed": compare_proposed(bench, gemm_ms),
    }


def compare_proposed(bench: BenchModel, gemm_ms: float) -> dict:
    """The current and the proposed export at (50, 100), timed in alternating rounds."""
    proposed = export_variant(bench.model.dense, VARIANTS[PROPOSED])
    parity = parity_with_graph(bench.model, bench.bundle, proposed)
    if parity > PARITY_TOLERANCE:
        raise RuntimeError(f"the proposed export differs from PyTorch by {parity:.3g}")
    sessions = {"current": bench.bundle.onnx, "proposed": proposed}
    sessions = {name: create_session(onnx, "cpu", threads=1) for name, onnx in sessions.items()}
    feeds = ready_feeds(bench, sessions["current"], 50, 100)
    timed = interleaved({name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()})
    return {
        "variant": PROPOSED,
        "parity": parity,
        "latency": timed,
        "proposed_over_current": timed["proposed"].p50_ms / timed["current"].p50_ms,
        "over_gemm_floor": timed["proposed"].p50_ms / gemm_ms,
    }


def floor_rows(floor: dict) -> list[list[str]]:
    rows = []
    for t, c in SHAPES:
        split, unsplit = (floor["latency"][name][f"T{t}_C{c}"] for name in ("split", "unsplit"))
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


def gemm_line(floor: dict) -> str:
    flops, rate = floor["gemm_flops"], floor["matmul"]
    return (
        f"GEMM floor at (50, 100): {flops['flops'] / 1e6:.1f} MFLOP at "
        f"{rate['flops_per_s'] / 1e9:.1f} GFLOP/s (numpy {rate['n']}² float32 peak, 1 thread; "
        f"median {rate['median_flops_per_s'] / 1e9:.1f}) = {ms(floor['gemm_floor_ms'])} ms; "
        f"split p50 / floor = {floor['over_gemm_floor']:.2f} (fastest call / floor = "
        f"{floor['latency']['split'][HEADLINE].best_ms / floor['gemm_floor_ms']:.2f})"
    )


def proposed_line(floor: dict) -> str:
    found = floor["proposed"]
    current, proposed = found["latency"]["current"], found["latency"]["proposed"]
    return (
        f"proposed export ({found['variant']}, parity {found['parity']:.1e}), interleaved with "
        f"the current at (50, 100): {ms(proposed.p50_ms)} vs {ms(current.p50_ms)} ms p50 "
        f"({found['proposed_over_current']:.2f}x); / floor = {found['over_gemm_floor']:.2f} "
        f"(fastest call / floor = {proposed.best_ms / floor['gemm_floor_ms']:.2f})"
    )


FLOOR_HEADER = ["(T, C)", "split p50", "p99", "unsplit p50", "p99", "split/unsplit", "cand/s split"]


def floor_table(floor: dict) -> tuple:
    title = "Compute floor: session.run on ready tensors, ms"
    title = f"{title}\n{gemm_line(floor)}\n{proposed_line(floor)}"
    return title, FLOOR_HEADER, floor_rows(floor)


if __name__ == "__main__":
    from bench.report import print_table

    print_table(*floor_table(run_floor(load_bench_model())))
