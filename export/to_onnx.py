"""Export the dense part of DIN to ONNX and prove it computes what PyTorch computes.

The graph takes B users, each with its behaviours once, (B, T, Di), its user and context rows
once, (B, Du) and (B, Dc), and C candidates, (B, C, Di); B, C and T are dynamic. Nothing is
tiled to (C, T, Di) on the host: the broadcast happens inside the graph. It outputs the
scores (B, C) and the attention weights (B, C, T).
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from core import graph
from core.graph import one_user_feeds, user_inputs
from core.schema import FeatureSchema
from export.model import DIN, DenseDIN, ServingGraph, attention_form
from export.samples import Batch

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-5
OPSET = 17
DYNAMIC_AXES = {
    graph.CANDIDATES: {0: "B", 1: "C"},
    graph.HISTORY: {0: "B", 1: "T"},
    graph.MASK: {0: "B", 1: "T"},
    graph.USER: {0: "B"},
    graph.CONTEXT: {0: "B"},
    graph.OUTPUT: {0: "B", 1: "C"},
    graph.ATTENTION: {0: "B", 1: "C", 2: "T"},
}


class ParityError(RuntimeError):
    pass


def export_dense_onnx(dense: DenseDIN, *, form: str = "served") -> bytes:
    """Serialise the dense graph with the attention unit in `form` (export/model.py FORMS:
    the same maths; `served` is the fastest in onnxruntime)."""
    dense = dense.eval()
    with attention_form(dense, form):
        return export_serving(ServingGraph(dense).eval(), dense.config.schema)


def export_serving(
    serving: nn.Module, schema: FeatureSchema, dtype: torch.dtype = torch.float32
) -> bytes:
    """Any module with the serving signature (core/graph.py) -> ONNX bytes, dynamic axes."""
    names = list(serving.input_names)
    example = tuple(example_inputs(schema)[name].to(dtype) for name in names)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            serving,
            example,
            buffer,
            input_names=names,
            output_names=list(ServingGraph.OUTPUTS),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={
                k: v for k, v in DYNAMIC_AXES.items() if k in names + list(graph.OUTPUTS)
            },
        )
    return buffer.getvalue()


def example_inputs(schema: FeatureSchema, b: int = 2, c: int = 3, t: int = 5) -> dict:
    return {
        graph.CANDIDATES: torch.randn(b, c, schema.item_dim),
        graph.HISTORY: torch.randn(b, t, schema.item_dim),
        graph.MASK: torch.ones(b, t),
        graph.USER: torch.randn(b, schema.user_dim),
        graph.CONTEXT: torch.randn(b, schema.context_dim),
    }


def cpu_session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def lookup_rows(model: DIN, batch: Batch) -> dict[str, np.ndarray]:
    """The vectors the service would fetch for each sample of `batch`: its candidate's item
    row (N, Di), its user's (N, Du) and its context's (N, Dc) rows."""

    def rows(kind: str, indices: np.ndarray) -> np.ndarray | None:
        found = model.concat_fields(kind, torch.from_numpy(indices).long())
        return None if found is None else found.numpy()

    return {
        graph.CANDIDATES: model.goods(torch.from_numpy(batch.item).long()).numpy(),
        graph.USER: rows("user", batch.user_fields),
        graph.CONTEXT: rows("context", batch.context),
    }


def history_rows(model: DIN, batch: Batch, row: int) -> np.ndarray:
    """(T, Di) item rows of one sample's behaviours, oldest first."""
    items = batch.hist[row, : batch.hist_len[row]]
    with torch.no_grad():
        return model.goods(torch.from_numpy(items).long()).numpy()


@torch.no_grad()
def attention_weights(model: DIN, cand: np.ndarray, hist: np.ndarray, mask: np.ndarray):
    """PyTorch's weights for one user: (C, Di), (T, Di), (T,) -> (C, T)."""
    tensors = (torch.from_numpy(a)[None] for a in (cand, hist, mask))
    return model.dense.attention_weights(*tensors)[0].numpy()


def slate_feeds(model: DIN, slate: Batch) -> dict[str, np.ndarray]:
    """What one scoring request sends the graph: the slate's candidates, and its user's
    history, user and context rows once (all rows of a slate share them)."""
    looked_up = lookup_rows(model, slate)
    hist, mask = user_inputs(history_rows(model, slate, 0))
    inputs = {graph.CANDIDATES: looked_up[graph.CANDIDATES], graph.HISTORY: hist, graph.MASK: mask}
    for side in (graph.USER, graph.CONTEXT):
        if looked_up[side] is not None:
            inputs[side] = looked_up[side][0]
    return inputs


def check_parity(model: DIN, onnx_bytes: bytes, samples: Batch, n_users: int = 64) -> float:
    """Max abs diff between ONNX on looked-up vectors and PyTorch on ids, on real samples,
    over the scores and the attention weights.

    For each chosen sample its user's history, user and context are scored against a slate
    of candidates (the sample's own item plus the other chosen items), which exercises the
    broadcast over C.
    """
    from export.train import predict

    model.eval()
    session = cpu_session(onnx_bytes)
    names = [i.name for i in session.get_inputs()]
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(samples), size=min(n_users, len(samples)), replace=False)
    worst = 0.0
    for row in chosen:
        slate = samples.slate(row, chosen)
        inputs = slate_feeds(model, slate)
        got, got_weights = session.run(None, one_user_feeds(names, inputs))
        expected = predict(model, slate)
        weights = attention_weights(
            model, *(inputs[k] for k in (graph.CANDIDATES, graph.HISTORY, graph.MASK))
        )
        worst = max(
            worst,
            float(np.abs(got[0] - expected).max()),
            float(np.abs(got_weights[0] - weights).max()),
        )
    if worst > PARITY_TOLERANCE:
        raise ParityError(f"ONNX differs from PyTorch by {worst:.3g} > {PARITY_TOLERANCE}")
    log.info(
        "ONNX parity on %d users x %d candidates: max abs diff %.3g",
        len(chosen),
        len(chosen),
        worst,
    )
    return worst
