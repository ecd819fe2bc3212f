"""Untrained bundles of any size and any feature schema, with seeded random weights and rows,
for publish, serving and scale tests that need rows and a graph, not accuracy. (The synthetic
*training log*, with a planted signal, is export/logwriter.py.)

    python -c "from export.synthetic import synthetic_bundle; print(synthetic_bundle(100).tables)"
"""

from __future__ import annotations

import numpy as np
import torch

from core.schema import KINDS, FeatureSchema, two_field_schema
from export.bundle import Bundle, extract_tables, item_metadata, state_bytes
from export.model import DIN, DINConfig
from export.samples import Vocabulary
from export.to_onnx import export_dense_onnx


def synthetic_table(n_rows: int, dim: int = 36, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids and float32 rows for publish-throughput tests at scale."""
    rows = np.random.default_rng(seed).standard_normal((n_rows, dim)).astype(np.float32)
    return np.char.add("s", np.arange(n_rows).astype(str)), rows


def synthetic_vocabulary(
    schema: FeatureSchema, n_items: int, n_values: int, seed: int = 0
) -> Vocabulary:
    """Items "s0".."s{n-1}"; every other field's values "{field}0".."{field}{n_values-1}";
    each item gets a random value of each item-side field."""
    rng = np.random.default_rng(seed)
    fields = {
        spec.name: np.array(["", *(f"{spec.name}{k}" for k in range(n_values))])
        for kind in KINDS
        for spec in schema.fields_of(kind)
    }
    fields[schema.item_field.name] = np.concatenate([[""], synthetic_table(n_items, 1)[0]])
    side = rng.integers(1, n_values + 1, (n_items + 1, len(schema.item)))  # (I+1, Fi)
    side[:, 0] = np.arange(n_items + 1)
    side[0] = 0
    return Vocabulary(fields=fields, users=np.array([]), item_side=side.astype(np.int32), titles={})


def synthetic_bundle(
    n_items: int,
    n_cats: int = 20,
    seed: int = 0,
    *,
    schema: FeatureSchema | None = None,
) -> Bundle:
    """A publishable bundle with seeded random weights; n_cats values per non-item field."""
    schema = schema or two_field_schema()
    torch.manual_seed(seed)
    vocab = synthetic_vocabulary(schema, n_items, n_cats, seed)
    sizes = {name: len(values) for name, values in vocab.fields.items()}
    model = DIN(DINConfig(schema, sizes, embedding_std=1.0), torch.from_numpy(vocab.item_side))
    model.eval()
    return Bundle(
        onnx=export_dense_onnx(model.dense),
        schema=schema,
        model_config=model.config.to_dict(),
        tables=extract_tables(model, vocab),
        item_metadata=item_metadata(schema, vocab),
        checkpoint=state_bytes(model),
    )


def synthetic_histories(bundle: Bundle, n_users: int, seed: int = 0) -> dict[str, list[str]]:
    """Users "u0".."u{n-1}", each with a full history of random items of the bundle."""
    rng = np.random.default_rng(seed)
    ids = bundle.tables["item"].ids
    return {
        f"u{k}": rng.choice(ids, bundle.max_history).astype(str).tolist() for k in range(n_users)
    }
