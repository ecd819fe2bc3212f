"""Export the dense part of DIN to ONNX and prove it computes what PyTorch computes.

The graph takes B users, each with its behaviours once, (B, T, D), and C candidates,
(B, C, D); every axis is dynamic. Nothing is tiled to (C, T, D) on the host: the broadcast
happens inside the graph. It outputs the scores (B, C) and the attention weights (B, C, T).
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import onnxruntime as ort
import torch

from core.graph import one_user_feeds, user_inputs
from export.data import Samples
from export.model import DIN, DenseDIN, ServingGraph

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-5
OPSET = 17
DYNAMIC_AXES = {
    "candidates": {0: "B", 1: "C"},
    "history": {0: "B", 1: "T"},
    "history_mask": {0: "B", 1: "T"},
    "scores": {0: "B", 1: "C"},
    "attention": {0: "B", 1: "C", 2: "T"},
}


class ParityError(RuntimeError):
    pass


def export_dense_onnx(dense: DenseDIN, *, split: bool = True) -> bytes:
    """Serialise the dense graph; `split` factors the first attention layer (same maths)."""
    dense = dense.eval()
    if dense.attention is not None:
        dense.attention.split = split
    graph = ServingGraph(dense).eval()
    dim = dense.config.goods_dim
    example = (torch.randn(2, 3, dim), torch.randn(2, 5, dim), torch.ones(2, 5))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example,
            buffer,
            input_names=list(ServingGraph.INPUTS),
            output_names=list(ServingGraph.OUTPUTS),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes=DYNAMIC_AXES,
        )
    if dense.attention is not None:
        dense.attention.split = False
    return buffer.getvalue()


def cpu_session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def goods_rows(model: DIN, items: np.ndarray, cats: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.goods(torch.from_numpy(items).long(), torch.from_numpy(cats).long()).numpy()


@torch.no_grad()
def attention_weights(model: DIN, cand: np.ndarray, hist: np.ndarray, mask: np.ndarray):
    """PyTorch's weights for one user: (C, D), (T, D), (T,) -> (C, T)."""
    tensors = (torch.from_numpy(a)[None] for a in (cand, hist, mask))
    return model.dense.attention_weights(*tensors)[0].numpy()


def check_parity(model: DIN, onnx_bytes: bytes, samples: Samples, n_users: int = 64) -> float:
    """Max abs diff between ONNX on looked-up vectors and PyTorch on ids, on real samples,
    over the scores and the attention weights.

    For each chosen sample its user's history is scored against a slate of candidates (the
    sample's own item plus the other chosen items), which exercises the broadcast over C.
    """
    from export.train import predict

    model.eval()
    session = cpu_session(onnx_bytes)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(samples), size=min(n_users, len(samples)), replace=False)
    worst = 0.0
    for row in chosen:
        slate = samples.slate(row, chosen)
        expected = predict(model, slate)
        length = samples.hist_len[row]
        history = goods_rows(model, samples.hist_item[row, :length], samples.hist_cat[row, :length])
        hist, mask = user_inputs(history)
        cand = goods_rows(model, slate.item, slate.cat)
        got, got_weights = session.run(None, one_user_feeds(cand, hist, mask))
        weights = attention_weights(model, cand, hist, mask)
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
