"""The peer: DeepCTR-Torch 0.3.0's DIN `predict()` on one request, T=50 behaviours, C=100
candidates, on this machine.

The model is built as bench.peers builds it (bench.peer_models: the schema's fields with
their embedding widths, the library's defaults: attention (64, 16) with Dice, DNN (256, 128)),
with the bundle's vocabulary sizes; its weights are untrained, which does not change the time.
The input is what predict() takes: one row per candidate, each with the user's 50 behaviours,
profile and context. Timed with torch's default threads and with one; the faster is the
reference. Its throughput with 8 callers of one thread each is ratio (b)'s reference.
Needs deepctr-torch (`pip install deepctr-torch==0.3.0 --no-deps`); without it the section
reports why it was skipped.

    python -m bench.peer_latency
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from bench.common import Latency, ms, rate, time_calls
from bench.eager import CONCURRENCY, DEFAULT_THREADS, concurrent_rate
from bench.model import BenchModel, Indices, random_indices
from bench.workload import C, T
from core import keys
from core.schema import FeatureSchema, FieldSpec

PREDICT_BATCH = 256  # predict()'s default: the 100 rows go in one batch


@dataclass(frozen=True)
class Vocabulary:
    """What bench.peer_models.deepctr_columns reads: the schema and each field's table size."""

    schema: FeatureSchema
    sizes: dict[str, int]

    def vocab_size(self, spec: FieldSpec) -> int:
        return self.sizes[spec.name]


def vocabulary(bench: BenchModel) -> Vocabulary:
    """The bundle's table sizes, and its schema with histories of exactly T behaviours: the
    peer pads every history to its declared length, so it is built for the T timed here."""
    schema, tables = replace(bench.schema, max_history=T), bench.bundle.tables
    sizes = {schema.item_field.name: len(tables[keys.ITEM_TABLE].ids) + 1}
    sizes |= {f.name: len(tables[keys.field_table(f.name)].ids) + 1 for f in schema.field_tables}
    return Vocabulary(schema, sizes)


def predict_inputs(bench: BenchModel, indices: Indices) -> dict[str, np.ndarray]:
    """predict()'s dict: every item field of the candidate (C,) and of the history (C, T), each
    user and context field (C,), and the history length (C,)."""
    from bench.peer_models import HIST_LEN, hist_name

    schema, side = bench.schema, bench.model.item_side.numpy()  # (I + 1, Fi)
    c = len(indices.candidates)
    columns = {HIST_LEN: np.full(c, len(indices.history), np.int64)}
    for j, spec in enumerate(schema.item):
        columns[spec.name] = side[indices.candidates, j]
        columns[hist_name(spec)] = np.tile(side[indices.history, j], (c, 1))
    for kind, chosen in (("user", indices.user), ("context", indices.context)):
        for spec, value in zip(schema.fields_of(kind), chosen, strict=True):
            columns[spec.name] = np.full(c, value, np.int64)
    return columns


def deepctr_din(bench: BenchModel):
    from bench.peer_models import deepctr_columns, import_deepctr

    din = import_deepctr()
    item_fields = [s.name for s in bench.schema.item]
    return din.DIN(deepctr_columns(vocabulary(bench)), item_fields, seed=0, device="cpu")


def run_peer(bench: BenchModel) -> dict:
    try:
        model = deepctr_din(bench)
    except ImportError as error:
        return {"skipped": f"DeepCTR-Torch is not installed ({error})"}
    inputs = predict_inputs(bench, random_indices(bench.bundle, T, C, seed=3))
    timed: dict[str, Latency] = {}

    def predict():
        return model.predict(inputs, PREDICT_BATCH)

    try:
        for threads in sorted({DEFAULT_THREADS, 1}, reverse=True):
            torch.set_num_threads(threads)
            timed[f"{threads} thread{'s' * (threads > 1)}"] = time_calls(predict)
    finally:
        torch.set_num_threads(1)
    best = min(timed, key=lambda k: timed[k].p50_ms)
    return {
        "predict": timed,
        "reference": best,
        "reference_p50_ms": timed[best].p50_ms,
        "candidates_per_s_c8": C * concurrent_rate(predict),  # 8 callers, 1 thread each
    }


def peer_rows(result: dict) -> list[list[str]]:
    if "skipped" in result:
        return [[f"skipped: {result['skipped']}", "-", "-", "-"]]
    rows = [
        [
            f"DeepCTR-Torch 0.3.0 DIN.predict(), {label}",
            ms(lat.p50_ms),
            ms(lat.p99_ms),
            rate(C / lat.p50_ms * 1e3),
        ]
        for label, lat in result["predict"].items()
    ]
    callers = f"DeepCTR-Torch 0.3.0 DIN.predict(), 1 thread, {CONCURRENCY} callers"
    return [*rows, [callers, "-", "-", rate(result["candidates_per_s_c8"])]]


def peer_table(result: dict) -> tuple:
    title = f"The peer: DeepCTR-Torch DIN predict() on one request, T={T} C={C}"
    return title, ["", "p50 ms", "p99 ms", "cand/s"], peer_rows(result)


if __name__ == "__main__":
    from bench.model import load_bench_model
    from bench.report import print_table

    print_table(*peer_table(run_peer(load_bench_model())))
