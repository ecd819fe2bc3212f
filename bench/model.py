"""The trained DIN every section runs: the bundle's own checkpoint, rebuilt into PyTorch.

`artifacts/bundle` (from `make demo` or `ctr-export train`) when it holds a current bundle,
else the one a previous benchmark trained (`bench/results/bundle`), else one trained now (one
epoch on MovieLens-100K, the example schema). The graph is re-exported from the rebuilt model
in each form of the attention unit (export/model.py FORMS: `served`, what the exporter
publishes; `split`, the form it published before; `concat`, the reference) by the current
exporter, so each has the signature the current service expects, and each must score exactly
as PyTorch does on ids (max abs diff ≤ 1e-5).

    python -m bench.model          # loads (or trains) and prints the source and the parity
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from core import graph, keys
from core.graph import one_user_feeds
from core.schema import FeatureSchema
from export.bundle import META_FILE, Bundle, load_bundle, rebuild_model
from export.job import TrainJob, run_training
from export.model import DIN, FORMS
from export.to_onnx import export_dense_onnx

log = logging.getLogger(__name__)
SAVED_DIR = Path("artifacts/bundle")
TRAINED_DIR = Path("bench/results/bundle")
SAMPLES_DIR = Path("bench/results/bench-samples")
PARITY_TOLERANCE = 1e-5
UNUSABLE = (OSError, ValueError, KeyError, TypeError, RuntimeError)


@dataclass
class BenchModel:
    model: DIN  # eval mode, rebuilt from the bundle's checkpoint
    bundle: Bundle  # tables of the model; onnx = the served graph from the current exporter
    graphs: dict[str, bytes]  # the graph exported in each form
    source: str
    parity: dict[str, float]  # max abs diff to PyTorch on ids, per graph

    @property
    def schema(self) -> FeatureSchema:
        return self.bundle.schema


@dataclass(frozen=True)
class Indices:
    """One user's request as 1-based table indices: C candidates, T behaviours, and one value
    per user and context field."""

    candidates: np.ndarray  # (C,)
    history: np.ndarray  # (T,)
    user: np.ndarray  # (Fu,)
    context: np.ndarray  # (Fc,)


def load_bench_model() -> BenchModel:
    for folder in (SAVED_DIR, TRAINED_DIR):
        if (folder / META_FILE).exists():
            try:
                return from_bundle(load_bundle(folder), f"{folder}, its checkpoint rebuilt")
            except UNUSABLE as error:
                log.warning("cannot use %s (%s)", folder, error)
    return from_bundle(train_quick_bundle(), f"trained now into {TRAINED_DIR} (1 epoch)")


def train_quick_bundle() -> Bundle:
    """One epoch of DIN on MovieLens-100K, no baseline: about a minute on 2 idle cores."""
    job = TrainJob(
        out=TRAINED_DIR, samples_dir=SAMPLES_DIR, epochs=1, baseline=False, progress=False
    )
    return run_training(job)


def from_bundle(bundle: Bundle, source: str) -> BenchModel:
    model = rebuild_model(bundle)
    graphs = {form: export_dense_onnx(model.dense, form=form) for form in FORMS}
    parity = {name: parity_with_graph(model, bundle, onnx) for name, onnx in graphs.items()}
    parity["saved"] = parity_with_graph(model, bundle, bundle.onnx)
    for name in FORMS:
        if parity[name] > PARITY_TOLERANCE:
            raise RuntimeError(f"the {name} graph differs from PyTorch by {parity[name]:.3g}")
    served = dataclasses.replace(bundle, onnx=graphs["served"])
    return BenchModel(model, served, graphs, source, parity)


def random_indices(bundle: Bundle, t: int, c: int, seed: int) -> Indices:
    """Distinct random items as candidates and behaviours (repeats only beyond the catalogue),
    and a random value of each user and context field."""
    rng, schema = np.random.default_rng(seed), bundle.schema
    n_items = len(bundle.tables[keys.ITEM_TABLE].ids)
    items = rng.choice(np.arange(1, n_items + 1), size=t + c, replace=t + c > n_items)

    def values(kind: str) -> np.ndarray:
        sizes = [len(bundle.tables[keys.field_table(f.name)].ids) for f in schema.fields_of(kind)]
        return np.array([rng.integers(1, n + 1) for n in sizes], np.int64)

    return Indices(items[t:], items[:t], values("user"), values("context"))


def graph_inputs(bundle: Bundle, indices: Indices) -> dict[str, np.ndarray]:
    """One user's graph inputs, built from the bundle's table rows as the service builds them:
    (C, Di), (T, Di), (T,), and (Du,), (Dc,) when the schema has such fields."""
    items = bundle.tables[keys.ITEM_TABLE].rows
    inputs = {
        graph.CANDIDATES: items[indices.candidates - 1],
        graph.HISTORY: items[indices.history - 1],
        graph.MASK: np.ones(len(indices.history), np.float32),
    }
    if bundle.schema.user:
        inputs[graph.USER] = side_vector(bundle, "user", indices.user)
    if bundle.schema.context:
        inputs[graph.CONTEXT] = side_vector(bundle, "context", indices.context)
    return inputs


def side_vector(bundle: Bundle, kind: str, chosen: np.ndarray) -> np.ndarray:
    """(D,) the chosen value's row of each field of `kind`, side by side in schema order."""
    fields = bundle.schema.fields_of(kind)
    tables = [bundle.tables[keys.field_table(f.name)] for f in fields]
    rows = [table.rows[k - 1] for table, k in zip(tables, chosen, strict=True)]
    return np.concatenate(rows).astype(np.float32)


def paired_inputs(indices: Indices) -> tuple[torch.Tensor, ...]:
    """DIN.forward's id inputs, every candidate paired with the same user: item (C,),
    hist (C, T), hist_len (C,), user_fields (C, Fu), context (C, Fc)."""
    c, t = len(indices.candidates), len(indices.history)
    columns = (
        indices.candidates,
        np.tile(indices.history, (c, 1)),
        np.full(c, t),
        np.tile(indices.user, (c, 1)),
        np.tile(indices.context, (c, 1)),
    )
    return tuple(torch.from_numpy(np.ascontiguousarray(col)).long() for col in columns)


@torch.no_grad()
def eager_scores(model: DIN, indices: Indices) -> np.ndarray:
    return torch.sigmoid(model(*paired_inputs(indices))).numpy()


def parity_with_graph(model: DIN, bundle: Bundle, onnx_bytes: bytes, seed: int = 0) -> float:
    """Max abs diff between the model on ids and the graph on the bundle's rows, (50, 100)."""
    indices = random_indices(bundle, 50, 100, seed)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run([graph.OUTPUT], one_user_feeds(names, graph_inputs(bundle, indices)))[0]
    return float(np.abs(got[0] - eager_scores(model, indices)).max())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    loaded = load_bench_model()
    print(loaded.source)
    print({name: f"{diff:.2e}" for name, diff in loaded.parity.items()})
